"""`make bench`: the whole benchmark in one run (under 3 minutes on 2 cores), on 127.0.0.1 only.

1. throughput: direct / bare mitmdump / mitmdump + proxysigv4 (static credentials) / + an
   assume-role route, GET / POST 1 KiB / PUT 1 MiB, interleaved rounds, then all of them (and a
   second bare mitmdump and a minimal rerouting script) loaded together on one core
   (bench/throughput.py);
2. the per-request addon work in-process against bare botocore (bench/hotpath.py);
3. streaming: 1 GiB each way through the proxy, peak RSS growth (bench/streaming.py).

Prints the tables and writes bench/results.json (with the machine, Python and mitmproxy versions
and the date). Exits non-zero when a correctness check fails (a request through the addon arrived
unsigned, a sampled signature does not verify, STS was called more than once per role, or a
transfer's checksum differs); the speed figures are reported, not asserted.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import hotpath  # noqa: E402
import streaming  # noqa: E402
import throughput  # noqa: E402


def machine() -> dict:
    from mitmproxy.version import VERSION as mitmproxy_version

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "date": datetime.date.today().isoformat(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "mitmproxy": mitmproxy_version,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.8, help="loaded measurement per set-up and round")
    parser.add_argument(
        "--latency-seconds", type=float, default=3.0, help="one client taking turns, per request kind"
    )
    parser.add_argument("--shared-windows", type=int, default=6, help="shared-core measurements")
    parser.add_argument("--shared-seconds", type=float, default=1.2, help="per shared-core measurement")
    parser.add_argument("--stream-mib", type=int, default=1024)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    started = time.monotonic()
    info = machine()
    print(
        f"proxysigv4 benchmark, {info['date']}: {info['cores']} cores ({info['cpu']}), "
        f"Python {info['python']}, mitmproxy {info['mitmproxy']}\n"
    )
    results = {"machine": info}
    results["throughput"] = throughput.run(
        args.rounds,
        args.clients,
        args.seconds,
        args.latency_seconds,
        args.shared_windows,
        args.shared_seconds,
    )
    throughput.print_table(results["throughput"])
    print()
    results["hotpath"] = hotpath.measure()
    hotpath.print_table(results["hotpath"])
    print()
    results["streaming"] = streaming.run(args.stream_mib)
    streaming.print_table(results["streaming"])
    results["seconds"] = round(time.monotonic() - started, 1)
    print(f"\nbenchmark took {results['seconds']} s; results in {args.json}")
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    checks = results["throughput"]["checks"]
    problems = []
    if checks["unsigned_requests_through_addon"]:
        problems.append(f"{checks['unsigned_requests_through_addon']} requests reached the upstream unsigned")
    if checks["sampled_signatures_failed"] or not checks["sampled_signatures_verified"]:
        problems.append(f"sampled signatures that did not verify: {checks['signature_failures']}")
    if checks["sts_calls"] != 1:
        problems.append(f"STS was called {checks['sts_calls']} times for one role")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
