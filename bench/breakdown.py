"""Where a request's time goes, inside mitmproxy: bare mitmdump, the floor (bench/floor.py) and the
addon with static credentials, loaded together on the proxies' core as in the shared-core part of
bench/throughput.py, and sampled by py-spy all at the same time (so the machine's drift hits the
three alike). Each proxy's CPU time per request (the process's CPU clock) is split by where its
samples fell:

  hooks            the script's own hooks (for the addon: requestheaders, request, responseheaders,
                   response, error, server_connect; the floor's likewise);
  log line         the request line, logged after the hooks (proxysigv4's `_emit_request_line`);
  dispatch         mitmproxy calling addons for each event, outside those hooks: its addon
                   manager and its built-in addons (dumper, map_local, tls config, ...);
  mitmproxy rest   everything else on the event loop's thread: HTTP parsing and framing,
                   connections, the event loop.

Against bare mitmproxy, the last two show how much slower mitmproxy's own work gets next to a
script: the part of an addon's cost that is not in its code.

The addon's hook time is split further by feature (FEATURES: the first frame inside the hook,
outermost first, that names one of a feature's functions decides): routing (path checks, route
match, rewrite), browser rules (Host and Origin checks, CORS preflights), request checks (header
decoding and checks, inbound auth, body plan), header
allowlist, signing (botocore's add_auth: canonical request, hashes, HMAC), credentials (the cached
credentials' look-up), response headers (allowlist, streaming decision), finish (secrets hidden
again, request line made); what is left is the hooks' own code: `forward & record` (the request's
target and signed headers set, mitmweb's record, the secrets to hide) and `hook entry` (the rest).

    python bench/breakdown.py [--seconds 15]      (make bench-breakdown; py-spy is in the test extras)
"""

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import load  # noqa: E402
import throughput  # noqa: E402

SETUPS = ("bare", "floor", "static")
HOOKS = ("requestheaders", "request", "responseheaders", "response", "error", "server_connect")
SCRIPT_CLASSES = ("ProxySigV4", "Floor", "Reroute")
CATEGORIES = ("hooks", "log line", "dispatch", "mitmproxy rest")
# The addon's features, by the functions that do them (see the docstring).
FEATURES = (
    ("routing", frozenset({"upstream_for", "resolve", "resolve_replay"})),
    ("browser rules", frozenset({"_check_browser", "check_host", "check_origin", "_preflight"})),
    (
        "request checks",
        frozenset(
            {"header_fields", "check_request_headers", "authenticate", "plan_request", "received_for"}
            | {"websocket_handshake", "connection_tokens", "first_values", "_checked", "_routed", "_planned"}
            | {"Received.__init__", "Checked.__init__", "Routed.__init__", "Planned.__init__"}
        ),
    ),
    ("header allowlist", frozenset({"filter_request_headers"})),
    ("signing", frozenset({"sign_request", "sign_request_sigv4a", "presign_url"})),
    ("credentials", frozenset({"_credentials"})),
    ("response headers", frozenset({"ProxySigV4.responseheaders", "filter_response"})),
    ("finish", frozenset({"ProxySigV4.response", "ProxySigV4.error", "_finish"})),
)
FEATURE_NAMES = (*(name for name, _ in FEATURES), "forward & record", "hook entry")
PY_SPY = Path(sys.executable).parent / "py-spy"


def _hook_frame(functions: list[str], classes: tuple[str, ...]) -> int | None:
    """The index of the outermost frame that is a hook of one of `classes`, or None."""
    return next(
        (i for i, f in enumerate(functions) if f.split(".")[0] in classes and f.split(".")[-1] in HOOKS),
        None,
    )


def categorise(stack: list[str]) -> str | None:
    """The category of one sampled stack (frames outermost first, as "function (file:line)"), or
    None for a thread other than the event loop's."""
    functions = [frame.split(" (", 1)[0] for frame in stack]
    if "BaseEventLoop._run_once" not in functions:
        return None
    if _hook_frame(functions, SCRIPT_CLASSES) is not None:
        return "hooks"
    if "_emit_request_line" in functions:
        return "log line"
    if "AddonManager.invoke_addon" in functions:
        return "dispatch"
    return "mitmproxy rest"


def feature(stack: list[str]) -> str | None:
    """For a sample in one of proxysigv4's hooks, the feature it was working on (FEATURES); None
    for other samples."""
    functions = [frame.split(" (", 1)[0] for frame in stack]
    hook = _hook_frame(functions, ("ProxySigV4",))
    if hook is None:
        return None
    inside = functions[hook:]
    for function in inside:
        for name, members in FEATURES:
            if function in members or function.split(".")[-1] in members:
                return name
    return "forward & record" if "forward" in inside else "hook entry"  # forwarding.forward's own lines


def shares(raw: str) -> dict[str, float]:
    """py-spy's raw output (one "frame;frame;... count" per line): each category's share, and
    each of proxysigv4's features' (`features`) share of all samples."""
    counts: collections.Counter = collections.Counter()
    features: collections.Counter = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        category = categorise(frames)
        if category is not None:
            counts[category] += int(count)
            if category == "hooks" and (name := feature(frames)) is not None:
                features[name] += int(count)
    total = sum(counts.values())
    if not total:
        raise RuntimeError("py-spy recorded no sample on the event loop's thread")
    return {c: counts[c] / total for c in CATEGORIES} | {
        "features": {f: features[f] / total for f in FEATURE_NAMES if features[f]}
    }


def run(seconds: float = 15.0, rate: int = 200, request: load.Request = throughput.REQUESTS[0]) -> dict:
    cpus = os.sched_getaffinity(0)
    throughput.pin(0, throughput.LOAD_CPUS)
    try:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            setups = throughput.Setups(Path(tmp), stack, only=SETUPS, watch=False)
            try:
                for name in SETUPS:
                    load.run(setups.ports[name], request, 2, 0.5)
                spies = {
                    name: subprocess.Popen(
                        [str(PY_SPY), "record", "--nonblocking", "--rate", str(rate), "--format", "raw"]
                        + ["-d", str(int(seconds)), "-o", f"{tmp}/{name}.txt"]
                        + ["-p", str(setups.procs[name].pid)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    for name in SETUPS
                }
                for spy in spies.values():  # its own process on the load generator's cores
                    throughput.pin(spy.pid, throughput.LOAD_CPUS)
                cpu0 = {name: setups.cpu_seconds(name) for name in SETUPS}

                async def together() -> list[load.Result]:
                    return await asyncio.gather(
                        *(load.run_async(setups.ports[n], request, 4, seconds, 0.0) for n in SETUPS)
                    )

                results = dict(zip(SETUPS, asyncio.run(together()), strict=True))
                cpu = {name: setups.cpu_seconds(name) - cpu0[name] for name in SETUPS}
                for name, spy in spies.items():
                    _, errors = spy.communicate(timeout=seconds + 30)
                    if spy.returncode:
                        raise RuntimeError(f"py-spy on {name}: {errors.decode(errors='replace')[-300:]}")
                raw = {name: Path(f"{tmp}/{name}.txt").read_text() for name in SETUPS}
            finally:
                setups.stop()
    finally:
        throughput.pin(0, cpus)
    out: dict = {"request": request.name, "seconds": seconds, "rate": rate, "setups": {}}
    for name in SETUPS:
        per_request_us = cpu[name] / max(results[name].requests, 1) * 1e6
        split = shares(raw[name])
        out["setups"][name] = {
            "rps": round(results[name].rps, 1),
            "cpu_us_per_request": round(per_request_us, 1),
            **{c: round(per_request_us * split[c], 1) for c in CATEGORIES},
        }
        if split["features"]:
            out["setups"][name]["hooks_by_feature"] = {
                f: round(per_request_us * share, 1) for f, share in split["features"].items()
            }
    return out


def print_table(results: dict) -> None:
    print(
        f"where a request's time goes ({results['request']}): the three proxies at the same time on one "
        f"core, 4 clients each, {results['seconds']:g}s, py-spy at {results['rate']} Hz on each;\n"
        "CPU µs per request, split by where the samples fell (and the difference to bare)"
    )
    header = f"{'set-up':<8}{'req/s':>8}{'CPU/req':>10}" + "".join(f"{c:>22}" for c in CATEGORIES)
    print(header)
    print("-" * len(header))
    bare = results["setups"]["bare"]
    for name, row in results["setups"].items():
        cells = "".join(
            f"{f'{row[c]:.0f} ({row[c] - bare[c]:+.0f})' if name != 'bare' else f'{row[c]:.0f}':>22}"
            for c in CATEGORIES
        )
        print(f"{name:<8}{row['rps']:>8.1f}{row['cpu_us_per_request']:>10.0f}{cells}")
    for name, row in results["setups"].items():
        if "hooks_by_feature" in row:
            print(f"{name}'s hooks by feature (CPU µs per request):")
            for f, us in sorted(row["hooks_by_feature"].items(), key=lambda item: -item[1]):
                print(f"  {f:<20}{us:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    kinds = {r.method: r for r in throughput.REQUESTS}
    parser.add_argument(
        "--method", choices=sorted(kinds), default="GET", help="which of the benchmark's requests"
    )
    parser.add_argument("--json", default=str(ROOT / "bench" / "breakdown.json"))
    args = parser.parse_args()
    results = run(args.seconds, args.rate, kinds[args.method])
    print_table(results)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
