"""Micro-benchmark of the addon's per-request work, in-process: route match + header filter +
sign (what the `request` hook does besides mitmproxy), against bare botocore `SigV4Auth.add_auth`
on an equivalent request. Prints microseconds per request; `--json FILE` writes them too."""

import argparse
import json
import time

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from proxysigv4_core.config import parse_config
from proxysigv4_core.routing import RouteTable, resolve
from proxysigv4_core.signing import sign_upstream

CREDS = ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)
HEADERS = [
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
    ("User-Agent", "curl/8"),
    ("Connection", "keep-alive"),
    ("X-Amz-Meta-A", "1"),
]
BODY = b'{"hello": "world", "n": 1}' * 40  # ~1 KiB


def per_call_us(fn, n: int) -> float:
    for _ in range(min(200, n)):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--json")
    args = parser.parse_args()
    table = RouteTable(
        parse_config(
            {
                "proxysigv4": {
                    "/api": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
                    **{f"/r{i}": f"https://r{i}.execute-api.eu-west-1.amazonaws.com" for i in range(20)},
                }
            },
            "bench",
        ).routes
    )

    def addon_work():
        upstream = resolve(table, "/api/items/42?q=1&b=2")
        sign_upstream(upstream, "POST", HEADERS, BODY, CREDS)

    def bare_botocore():
        request = AWSRequest(
            method="POST",
            url="https://abc.execute-api.eu-west-1.amazonaws.com/prod/items/42?q=1&b=2",
            data=BODY,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "X-Amz-Meta-A": "1",
                "Content-Length": str(len(BODY)),
            },
        )
        SigV4Auth(CREDS, "execute-api", "eu-west-1").add_auth(request)

    results = {
        "route_match_us": round(per_call_us(lambda: resolve(table, "/api/items/42?q=1&b=2"), args.n), 1),
        "addon_work_us": round(per_call_us(addon_work, args.n), 1),
        "bare_botocore_add_auth_us": round(per_call_us(bare_botocore, args.n), 1),
    }
    for name, value in results.items():
        print(f"{name:<28}{value:>8} µs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
