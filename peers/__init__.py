"""Local peers the tests and the benchmark run against: processes (mitmdump, moto), upstreams
that record or verify what they receive, a fake STS, streaming upstreams, and an independent SigV4
verifier (awscrt)."""
