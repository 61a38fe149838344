"""Throughput benchmark: what the signing addon costs on top of mitmproxy itself.

Four set-ups forward the same requests to one fast local upstream (its own process):
  direct  the upstream itself (shows it is not the bottleneck),
  bare    `mitmdump --mode reverse:` to the upstream,
  static  mitmdump + proxysigv4, a route with static credentials,
  role    mitmdump + proxysigv4, an assume-role route (credentials from a local STS stand-in).
For each request kind (GET with a small query, POST with 1 KiB JSON, PUT with 1 MiB) and round,
the set-ups are measured one after the other in a rotating order, loaded (N keep-alive clients:
requests/s, p50, p99, the proxy's CPU per request); a ratio to bare is taken round by round.

The latency a request pays: one client takes turns between direct, bare, a second bare (the
control), the floor, static, role and command, one request each per cycle, for a few seconds per request
kind; each set-up's median, and its difference to bare's, per cycle and of the medians.

Then the shared-core comparison: bare, a second bare (the control), the floor (bench/floor.py: the
least a signing addon that logs each request can do), static, role and "command" (static's route
served by the `proxysigv4 run` command, which runs mitmproxy in-process without mitmdump's flow
printer: its request line is then the only line per request), all loaded at the same time
on the proxies' core; each one's requests/s relative to bare, per window, median and quartiles over
the windows. And the floor's own cost the same way (small GETs): bare, bare2, a script that only
reroutes (bench/reroute.py), the floor without its log line ("sign"), and the floor.

All mitmdump processes also load bench/loopwatch.py, which records event-loop stalls. The addon's
hooks and their parts are timed in a separate proxy ("timed": static's set-up with loopwatch's
timers, which cost measurably and so stay out of the figures above), under the same load as the
one-at-a-time part. At the end the upstream's samples of signed requests are verified (awscrt;
proxysigv4's and the floor's) and its counts checked: every request through a signing set-up
arrived signed.
"""

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

import load  # noqa: E402

from peers import processes  # noqa: E402
from peers.fakests import FakeSTS  # noqa: E402
from peers.sigv4_verify import verify  # noqa: E402

KEY, SECRET = "AKIABENCHSTATIC00001", "bench/static/secret"
ROLE = "arn:aws:iam::123456789012:role/bench"
SETUPS = ("direct", "bare", "static", "role")
# service: static's set-up with the health listener on (metrics counted), probed as a kubelet and
# Prometheus would (PROBE_EVERY); its cost is measured against static in the same shared-core windows.
PROBE_EVERY = 1.0
# Run together on the proxies' core, each with its own clients: under the OS's fair share of one
# core, each forwards in inverse proportion to its CPU cost per request, and the machine's speed
# changes (a noisy VM: +-30% between runs) hit all of them at once and cancel out of the ratios.
SHARED = ("bare", "bare2", "floor", "static", "role", "command", "service")
# Ratios taken window by window between two set-ups of SHARED (set-up, the one it is compared to).
PAIRS = (("service", "static"),)
# What the floor's cost is made of, the same way (small GETs only): rerouting, signing, the log line.
BREAKDOWN = ("bare", "bare2", "reroute", "sign", "floor")
# The set-ups whose requests must arrive signed (their sampled signatures are verified).
SIGNING = ("sign", "floor", "static", "role", "timed", "command", "service")
# Take turns for the one-client latency (bare2: the control, as above).
LATENCY = ("direct", "bare", "bare2", "floor", "static", "role", "command")
# Per proxy: enough to keep each one busy; more only makes each proxy's share of the core come in
# larger batches (each serves all its waiting clients per turn), i.e. coarser counts per window.
SHARED_CLIENTS = 4
# How often a shared-core window in which a proxy completed no request is repeated (see shared_core).
REPEATS = 3
# A JSON document of exactly 1 KiB (padded with insignificant whitespace).
JSON_1K = json.dumps({"items": [{"id": i, "name": f"item-{i:04d}"} for i in range(30)]}).encode()[:1000]
JSON_1K = (JSON_1K[: JSON_1K.rfind(b"},") + 1] + b"]}").ljust(1024, b" ")
REQUESTS = (
    load.Request(
        "GET small query",
        "GET",
        "/bench/items/42?limit=10&color=blue%20green&sort=-created",
        (("Accept", "application/json"), ("User-Agent", "bench/1")),
        b"",
    ),
    load.Request(
        "POST 1 KiB JSON",
        "POST",
        "/bench/items",
        (("Accept", "application/json"), ("Content-Type", "application/json"), ("User-Agent", "bench/1")),
        JSON_1K,
    ),
    load.Request(
        "PUT 1 MiB",
        "PUT",
        "/bench/objects/blob.bin",
        (("Content-Type", "application/octet-stream"), ("User-Agent", "bench/1")),
        os.urandom(1024 * 1024),
    ),
)


# With two or more cores, the proxies (one busy core at a time) get the last core to themselves and
# the load generator and upstream the others: less noise from sharing a core with the client.
_CPUS = sorted(os.sched_getaffinity(0))
PROXY_CPUS = {_CPUS[-1]} if len(_CPUS) >= 2 else set(_CPUS)
LOAD_CPUS = set(_CPUS[:-1]) if len(_CPUS) >= 2 else set(_CPUS)


def pin(pid: int, cpus: set[int]) -> None:
    os.sched_setaffinity(pid, cpus)


def pin_threads(pid: int, cpus: set[int]) -> None:
    """Pin every thread a process has (sched_setaffinity on a pid covers its main thread only;
    threads made later inherit from the thread that makes them)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            pass


class Setups:
    """The upstream, the STS stand-in and the mitmdump processes, all on 127.0.0.1: every set-up
    named below, or those in `only`; each mitmdump with bench/loopwatch.py unless `watch` is off."""

    def __init__(
        self, workdir: Path, stack: ExitStack, only: tuple[str, ...] | None = None, watch: bool = True
    ) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        stack.callback(self.stop)  # also if one of them fails to start, after the others were started
        self.upstream_port = processes.free_port()
        self._spawn(
            "upstream", [sys.executable, str(ROOT / "bench" / "upstream.py"), str(self.upstream_port)]
        )
        processes.wait_for_port(self.upstream_port, self.procs["upstream"])
        self.ports["direct"] = self.upstream_port
        self.sts = stack.enter_context(FakeSTS())
        up = f"http://127.0.0.1:{self.upstream_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env |= {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_STS": self.sts.url,
            "PYTHONUNBUFFERED": "1",
        }
        watcher = ["-s", str(ROOT / "bench" / "loopwatch.py")] if watch else []
        # bare2: a second bare mitmdump, the shared-core comparison's control (A/A);
        # reroute: the cheapest rerouting script (bench/reroute.py), the floor for any addon;
        # floor: the least a signing addon that logs each request does (bench/floor.py), sign: the
        # same without the log line.
        env_reroute = env | {"REROUTE_UPSTREAM": f"127.0.0.1:{self.upstream_port}"}
        floor = ["-s", str(ROOT / "bench" / "floor.py")]
        for name, extra, more_env in (
            ("bare", [], {}),
            ("bare2", [], {}),
            ("reroute", ["-s", str(ROOT / "bench" / "reroute.py")], {}),
            ("sign", floor, {"FLOOR_LOG": "0"}),
            ("floor", floor, {}),
        ):
            if only is None or name in only:
                port = self._free_port()
                command = processes.bare_mitmdump_command(up, port, *extra, *watcher)
                self._mitmdump(name, command, env_reroute | more_env, port)
        route = {"service": "execute-api", "region": "us-east-1"}
        # timed: static's set-up with the addon's hooks and parts timed (see bench/loopwatch.py);
        # command: static's route served by the `proxysigv4 run` command instead of `mitmdump -s`
        for name, extra, more_env in (
            ("static", {}, {}),
            ("role", {"roleArn": ROLE}, {}),
            ("timed", {}, {"LOOPWATCH_PARTS": "1"}),
            ("command", {}, {}),
            ("service", {}, {}),
        ):
            if only is not None and name not in only:
                continue
            config = workdir / f"{name}.yaml"
            config.write_text(
                yaml.safe_dump({"proxysigv4": {"/bench": {"target": f"{up}/{name}", **route, **extra}}})
            )
            port = self._free_port()
            if name == "command":
                scripts = ["--set", f"scripts={ROOT / 'bench' / 'loopwatch.py'}"] if watch else []
                program = str(processes.BIN / "proxysigv4")
                command = [program, "run", "-c", str(config), "-p", str(port), *scripts]
            elif name == "service":
                self.health_port = self._free_port()
                health = ["--set", f"proxysigv4_health_port={self.health_port}"]
                command = processes.mitmdump_command(config, port, *watcher, *health)
            else:
                command = processes.mitmdump_command(config, port, *watcher)
            self._mitmdump(name, command, env | more_env, port)
        # The proxies start on every core at once (importing mitmproxy takes a CPU-second each),
        # then share the proxies' core, every thread of theirs.
        for name, port in self.ports.items():
            if name != "direct":
                processes.wait_for_port(port, self.procs[name])
                pin_threads(self.procs[name].pid, PROXY_CPUS)
        if "service" in self.ports:
            self._probing = threading.Event()
            threading.Thread(target=self._probe, daemon=True).start()
            stack.callback(self._probing.set)

    def _probe(self) -> None:
        """/readyz and /metrics of the service set-up every PROBE_EVERY seconds."""
        import requests

        while not self._probing.wait(PROBE_EVERY):
            for path in ("/readyz", "/metrics"):
                try:
                    requests.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=5)
                except requests.RequestException:
                    pass

    def _free_port(self) -> int:
        """A free port none of the proxies started so far was given (they bind theirs later)."""
        while (port := processes.free_port()) in self.ports.values():
            pass
        return port

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if name == "upstream":
            pin(self.procs[name].pid, LOAD_CPUS)

    def _mitmdump(self, name: str, cmd: list[str], env: dict, port: int) -> None:
        """Start a proxy; __init__ waits for it and pins it once all have been started."""
        self._spawn(name, cmd, env | {"LOOPWATCH_FILE": str(self.workdir / f"{name}.stalls.json")})
        self.ports[name] = port

    def cpu_seconds(self, name: str) -> float:
        """CPU time (user + system) the set-up's proxy process has used so far."""
        return process_cpu_seconds(self.procs["upstream" if name == "direct" else name].pid)

    def upstream_stats(self) -> dict:
        import requests

        return requests.get(f"http://127.0.0.1:{self.upstream_port}/__stats", timeout=30).json()

    def stalls(self, name: str) -> dict:
        return json.loads((self.workdir / f"{name}.stalls.json").read_text())

    def stop(self) -> None:
        for proc in self.procs.values():
            processes.stop(proc)


def process_cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, all threads, ended ones included) another process has used so
    far, to the nanosecond: Linux's clock for a process (the clock id clock_getcpuclockid gives,
    which Python does not expose: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)). /proc's counters
    tick every 10 ms, a few per cent of what a proxy spends in one measurement."""
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:  # a system without per-process CPU clocks: /proc's ticks
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_round(numerators: list[float], denominators: list[float]) -> dict:
    """Round by round ratios (set-ups measured within seconds of each other in each round): median
    and range. A ratio of medians would compare rounds the machine ran at different speeds."""
    return _summary([n / d for n, d in zip(numerators, denominators, strict=True) if d], 3)


def _summary(values: list[float], digits: int) -> dict:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def run(
    rounds: int = 3,
    clients: int = 20,
    seconds: float = 2.0,
    latency_seconds: float = 3.0,
    shared_windows: int = 6,
    shared_seconds: float = 1.2,
) -> dict:
    cpus = os.sched_getaffinity(0)
    pin(0, LOAD_CPUS)  # this process generates the load (until the run ends: see below)
    try:
        return _run(rounds, clients, seconds, latency_seconds, shared_windows, shared_seconds)
    finally:
        pin(0, cpus)  # e.g. the test suite goes on using every core


def shared_core(
    ports: dict[str, int],
    request: load.Request,
    windows: int,
    seconds: float,
    clients: int,
    names: tuple[str, ...] = SHARED,
) -> tuple[dict, list[dict]]:
    """The proxies `names` (starting with bare and bare2) loaded at the same time, `windows` times:
    each one's requests/s relative to bare mitmproxy (the mean of bare and bare2; bare2 itself
    relative to bare: the A/A control). All must share one core (see SHARED).

    A window in which a proxy completed no request (a pause of its own, e.g. a full garbage
    collection, is stretched by the five others sharing its core: 300 ms on the CPU can take 1.5 s)
    is measured again, twice as long, up to REPEATS times, then the run fails. Also returns those
    repeats: which window, how long it was, which proxies were idle."""
    assert names[:2] == ("bare", "bare2"), names

    async def together(window: float) -> list[load.Result]:
        return await asyncio.gather(
            *(load.run_async(ports[name], request, clients, window, 0.3) for name in names)
        )

    asyncio.run(together(0.5))  # warm-up
    ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    pairs = [(a, b) for a, b in PAIRS if a in names and b in names]
    ratios.update({f"{a}/{b}": [] for a, b in pairs})
    repeated: list[dict] = []
    for n in range(windows):
        for repeat in range(REPEATS + 1):
            window = seconds * 2**repeat
            rps = dict(zip(names, (r.rps for r in asyncio.run(together(window))), strict=True))
            idle = [name for name, value in rps.items() if not value]
            if not idle:
                break
            if repeat == REPEATS:
                raise RuntimeError(f"shared core: {', '.join(idle)} completed no request in {window:g}s")
            repeated.append({"window": n, "seconds": window, "idle": idle})
        bare = (rps["bare"] + rps["bare2"]) / 2
        ratios["bare2"].append(rps["bare2"] / rps["bare"])
        for name in names[2:]:
            ratios[name].append(rps[name] / bare)
        for a, b in pairs:
            ratios[f"{a}/{b}"].append(rps[a] / rps[b])
    return {name: _quartiles(values) for name, values in ratios.items()}, repeated


def latency(
    ports: dict[str, int], request: load.Request, seconds: float, names: tuple[str, ...] = LATENCY
) -> dict:
    """One client taking turns between the set-ups `names` (see load.alternate), `seconds` long:
    each one's p50 and p99 and, against bare, the difference of the p50s (what the set-up adds to
    the median latency) and the per-cycle differences (median and quartiles: their spread)."""
    timed = load.alternate({name: ports[name] for name in names}, request, seconds)
    bare = timed["bare"]
    setups = {}
    for name in names:
        values = [t * 1000 for t in timed[name]]
        row = {
            "p50_ms": round(statistics.median(values), 3),
            "p99_ms": round(statistics.quantiles(values, n=100, method="inclusive")[98], 3),
        }
        if name != "bare":
            row["p50_overhead_ms"] = round(row["p50_ms"] - statistics.median(bare) * 1000, 3)
            row["per_cycle_ms"] = _quartiles([(t - b) * 1000 for t, b in zip(timed[name], bare, strict=True)])
        setups[name] = row
    return {"cycles": len(bare), "seconds": seconds, "setups": setups}


def _for_body(seconds: float, request: load.Request) -> float:
    """A measurement's length for `request`: twice as long for a large body (1 MiB), of which
    fewer requests fit in the same time."""
    return seconds * (2 if len(request.body) > 1 << 16 else 1)


def _quartiles(values: list[float]) -> dict:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": round(median, 3), "q1": round(q1, 3), "q3": round(q3, 3), "n": len(values)}


def _run(
    rounds: int,
    clients: int,
    seconds: float,
    latency_seconds: float,
    shared_windows: int,
    shared_seconds: float,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        setups = Setups(Path(tmp), stack)
        try:
            for request in REQUESTS:  # warm-up: imports, first credentials, connection set-up
                for name in SETUPS:
                    load.run(setups.ports[name], request, 4, 0.3, warmup=0.2)
            for name in set(SHARED + BREAKDOWN + ("timed",)) - set(SETUPS):  # their turn comes later
                load.run(setups.ports[name], REQUESTS[0], 4, 0.3, warmup=0.2)
            warm_from = time.time()
            raw: dict[str, dict[str, dict[str, list[float]]]] = {
                r.name: {
                    s: {
                        "rps": [],
                        "cpu_ms": [],
                        "p50_ms": [],
                        "p99_ms": [],
                        "errors": [],
                    }
                    for s in SETUPS
                }
                for r in REQUESTS
            }
            phases: list[tuple[float, str]] = []  # (start, request kind): what a stall hit
            for n in range(rounds):
                for request in REQUESTS:
                    order = SETUPS[n % len(SETUPS) :] + SETUPS[: n % len(SETUPS)]
                    for name in order:
                        phases.append((time.time(), request.name))
                        port = setups.ports[name]
                        cpu0 = setups.cpu_seconds(name)
                        loaded = load.run(port, request, clients, seconds)
                        cpu = setups.cpu_seconds(name) - cpu0
                        row = raw[request.name][name]
                        row["rps"].append(loaded.rps)
                        row["cpu_ms"].append(cpu * 1000 / max(loaded.requests, 1))
                        row["p50_ms"].append(loaded.percentile_ms(50))
                        row["p99_ms"].append(loaded.percentile_ms(99))
                        row["errors"].append(loaded.errors)
            for request in REQUESTS:  # the addon's profile, under the same load
                load.run(setups.ports["timed"], request, clients, seconds)
            latencies = {}
            for request in REQUESTS:
                phases.append((time.time(), request.name))
                turn = _for_body(latency_seconds, request)  # keeps the number of cycles up
                latencies[request.name] = latency(setups.ports, request, turn)
            shared_from = time.time()  # stalls are counted before: sharing a core preempts them all
            shared, repeated = {}, {}
            for r in REQUESTS:
                window = _for_body(shared_seconds, r)  # keeps the counts comparable
                shared[r.name], repeated[r.name] = shared_core(
                    setups.ports, r, shared_windows, window, SHARED_CLIENTS
                )
            breakdown, repeated["floor's cost"] = shared_core(
                setups.ports, REQUESTS[0], shared_windows, shared_seconds, SHARED_CLIENTS, BREAKDOWN
            )
            stats = setups.upstream_stats()
        finally:
            setups.stop()
        results = {"requests": {}, "checks": {}}
        for request in REQUESTS:
            table = {}
            for name in SETUPS:
                row = raw[request.name][name]
                table[name] = {
                    "rps": _summary(row["rps"], 0),
                    # CPU of the process serving the set-up (the upstream for direct), per request
                    "cpu_ms_per_request": _summary(row["cpu_ms"], 3),
                    "p50_ms": _summary(row["p50_ms"], 2),
                    "p99_ms": _summary(row["p99_ms"], 2),
                    "errors": sum(row["errors"]),
                }
            for name in ("static", "role"):
                own, bare = raw[request.name][name], raw[request.name]["bare"]
                table[f"{name}/bare"] = {
                    # median and range of the rounds' ratios (each round's turns follow each other)
                    "rps_ratio": _per_round(own["rps"], bare["rps"]),
                    "cpu_ratio": _per_round(bare["cpu_ms"], own["cpu_ms"]),
                    # one client taking turns (see `latency`)
                    "p50_latency_overhead_ms": latencies[request.name]["setups"][name]["p50_overhead_ms"],
                    "shared_core_rps_ratio": shared[request.name][name],
                }
            table["shared_core"] = shared[request.name]
            table["latency"] = latencies[request.name]
            results["requests"][request.name] = table
        results["floor_breakdown"] = {REQUESTS[0].name: breakdown}
        results["checks"] = _checks(setups, stats, warm_from, shared_from, phases)
        results["checks"]["shared_core_repeated_windows"] = {k: v for k, v in repeated.items() if v}
        results["setup"] = {
            "rounds": rounds,
            "clients": clients,
            "seconds": seconds,
            "latency_seconds": latency_seconds,
            "shared_windows": shared_windows,
            "shared_seconds": shared_seconds,
            "shared_clients": SHARED_CLIENTS,
        }
        return results


def _checks(
    setups: Setups, stats: dict, warm_from: float, shared_from: float, phases: list[tuple[float, str]]
) -> dict:
    """Every request through the addon arrived signed; sampled signatures verify; STS and stalls."""
    secrets = {KEY: (SECRET, None)} | {k: (s, t) for k, (s, t, _) in setups.sts.issued.items()}
    verified = failed = 0
    verified_kinds: set[str] = set()  # "set-up METHOD" with at least one verified sample
    failures = []
    for sample in stats["samples"]:
        if sample["target"].split("/")[1] not in SIGNING:
            continue
        body = base64.b64decode(sample["body"])
        verdict = verify(
            sample["method"], sample["target"], [tuple(h) for h in sample["headers"]], body, secrets
        )
        if verdict.ok:
            verified += 1
            verified_kinds.add(f"{sample['target'].split('/')[1]} {sample['method']}")
        else:
            failed += 1
            failures.append(f"{sample['method']} {sample['target']}: {verdict.reason}")
    unsigned = {
        k: stats["counts"][k] - stats["signed"].get(k, 0) for k in stats["counts"] if k.split()[0] in SIGNING
    }
    stalls = {}
    for name in ("bare", "static", "role"):
        record = setups.stalls(name)
        after = [s for s in record["stalls"] if warm_from <= s[0] < shared_from]
        busy = [s for s in after if s[2] > record["stall_ms"]]  # > 10 ms on the CPU in one callback
        stalls[name] = {
            "gc_worst_ms": round(record["gc"]["worst_ms"], 1),
            "callbacks": record["callbacks"],
            "stalls_during_warmup": sum(1 for s in record["stalls"] if s[0] < warm_from),
            "stalls_after_warmup": len(after),
            "worst_after_warmup_ms": max((s[1] for s in after), default=0.0),
            # of those, the callbacks that kept the CPU busy > 10 ms (the others waited: the process
            # was preempted by the OS, with the load generator and upstream on the same 2 cores)
            "busy_stalls_after_warmup": len(busy),
            "busy_stalls_in_gc": sum(1 for s in busy if s[3] >= s[2] / 2),
            "examples": [s[1:] for s in after[:3]],
            # the request kind being measured when each stall (after warm-up) happened
            "stalls_by_request": {
                kind: sum(1 for s in after if _phase(phases, s[0]) == kind)
                for kind in (r.name for r in REQUESTS)
            },
        }
    return {
        "reroute_requests_received": sum(n for k, n in stats["counts"].items() if k.split()[0] == "reroute"),
        "signed_requests_received": {
            k: stats["signed"].get(k, 0) for k in stats["counts"] if k.split()[0] in SIGNING
        },
        "unsigned_requests_through_addon": sum(unsigned.values()),
        "sampled_signatures_verified": verified,
        "verified_by_setup_and_method": sorted(verified_kinds),
        "sampled_signatures_failed": failed,
        "signature_failures": failures[:5],
        "sts_calls": setups.sts.calls,
        "event_loop_stall_ms": 10.0,
        "event_loop": stalls,
        "addon_profile": _addon_profile(setups.stalls("timed")),
    }


def _addon_profile(record: dict) -> dict:
    """The addon's hooks, CPU per request, and the parts of its work, CPU per call (nested: forward
    includes sign_upstream, prepare resolve; _emit_request_line, the request line logged once the
    response is on its way, runs after the hooks), per request method, in µs."""
    hooks = record.get("hooks", {})
    per_method = {}
    for method in sorted({key.split()[0] for key in hooks}):
        mine = [v for k, v in hooks.items() if k.split()[0] == method]
        calls = max(c for c, _ in mine)
        per_method[method] = round(sum(t for _, t in mine) / calls * 1e6, 1)
    parts: dict[str, dict[str, float]] = {}
    for key, (calls, seconds) in record.get("parts", {}).items():
        method, part = key.split()
        if method in per_method and calls:
            parts.setdefault(method, {})[part] = round(seconds / calls * 1e6, 1)
    return {"hooks_us_per_request": per_method, "parts_us": parts}


def _phase(phases: list[tuple[float, str]], when: float) -> str | None:
    return next((kind for start, kind in reversed(phases) if start <= when), None)


def _print_shared(names: tuple[str, ...], tables: dict[str, dict]) -> None:
    header = f"{'request':<17}" + "".join(f"{name:>22}" for name in names[1:])
    print(header)
    print("-" * len(header))
    for kind, table in tables.items():
        ratios = (table[name] for name in names[1:])
        cells = "".join(f"{f'{r["median"]:.3f} ({r["q1"]:.3f}-{r["q3"]:.3f})':>22}" for r in ratios)
        print(f"{kind:<17}{cells}")


def repeated_lines(repeated: dict[str, list[dict]]) -> list[str]:
    """A line per shared-core table with windows measured again (see shared_core), naming them."""
    return [
        f"shared core ({kind}): windows measured again, twice as long, after a proxy completed no "
        "request: "
        + "; ".join(
            f"window {r['window'] + 1} of {r['seconds']:g}s ({', '.join(r['idle'])})" for r in repeats
        )
        for kind, repeats in repeated.items()
    ]


def _quartiled(summary: dict) -> str:
    return f"{summary['median']:.3f} ({summary['q1']:.3f}-{summary['q3']:.3f})"


def _ranged(summary: dict) -> str:
    return f"{summary['median']:.3f} ({summary['min']:.3f}-{summary['max']:.3f})"


def print_table(results: dict) -> None:
    setup = results["setup"]
    print(
        f"throughput: {setup['clients']} keep-alive clients x {setup['seconds']:g}s; "
        f"median of {setup['rounds']} rounds (min-max); a ratio to bare: the median (min-max) of "
        "the rounds' own ratios"
    )
    header = f"{'request':<17}{'set-up':<8}{'req/s':>19}{'CPU ms/req':>11}{'p50 ms':>8}{'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for kind, table in results["requests"].items():
        for name in SETUPS:
            row = table[name]
            rps = f"{row['rps']['median']:.0f} ({row['rps']['min']:.0f}-{row['rps']['max']:.0f})"
            print(
                f"{kind:<17}{name:<8}{rps:>19}{row['cpu_ms_per_request']['median']:>11.3f}"
                f"{row['p50_ms']['median']:>8.2f}{row['p99_ms']['median']:>8.2f}"
                + (f"  errors={row['errors']}" if row["errors"] else "")
            )
        for name in ("static", "role"):
            ratio = table[f"{name}/bare"]
            print(
                f"{'':<17}{name + '/bare':<12} req/s ratio {_ranged(ratio['rps_ratio'])}, "
                f"CPU-per-request ratio {_ranged(ratio['cpu_ratio'])}, "
                f"p50 latency overhead {ratio['p50_latency_overhead_ms']:+.3f} ms (one client, below)"
            )
    print(
        f"\nlatency: one client taking turns, one request to each set-up per cycle (the order rotates), "
        f"{setup['latency_seconds']:g}s per request kind (PUT: twice as long);\np50 and p99, the p50's "
        "difference to bare's, and the per-cycle differences to bare: median (quartiles)"
    )
    header = (
        f"{'request':<17}{'set-up':<8}{'cycles':>7}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}"
        f"{'per cycle ms':>28}"
    )
    print(header)
    print("-" * len(header))
    for kind, table in results["requests"].items():
        measured = table["latency"]
        for name, row in measured["setups"].items():
            line = f"{kind:<17}{name:<8}{measured['cycles']:>7}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
            if name != "bare":
                q = row["per_cycle_ms"]
                spread = f"{q['median']:+.3f} ({q['q1']:+.3f}..{q['q3']:+.3f})"
                line += f"{row['p50_overhead_ms']:>+9.3f}{spread:>28}"
            print(line)
    print(
        f"\nshared core: the proxies below at the same time on one core, {setup['shared_clients']} clients "
        f"each, {setup['shared_windows']} windows of {setup['shared_seconds']:g}s (PUT: twice as long);\n"
        "requests/s relative to bare mitmproxy, median (quartiles). bare2 = a second bare mitmdump (the "
        "measurement's own precision);\nfloor = the least a signing addon that logs each request does, "
        "bench/floor.py (what any such addon costs inside mitmproxy);\ncommand = static's route served by "
        "the `proxysigv4 run` command: no mitmdump flow printer (which bare runs), its request line the "
        "only one"
    )
    _print_shared(SHARED, {kind: table["shared_core"] for kind, table in results["requests"].items()})
    for a, b in PAIRS:
        cells = [
            f"{kind} {_quartiled(table['shared_core'][f'{a}/{b}'])}"
            for kind, table in results["requests"].items()
        ]
        print(
            f"{a}/{b}, window by window (health listener on, probed every {PROBE_EVERY:g}s): "
            + "; ".join(cells)
        )
    print(
        "\nthe floor's cost, the same way: reroute = a script that only reroutes (bench/reroute.py), "
        "sign = the floor without its log line"
    )
    _print_shared(BREAKDOWN, results["floor_breakdown"])
    checks = results["checks"]
    print(
        f"checks: unsigned through the signing set-ups {checks['unsigned_requests_through_addon']}, "
        f"sampled signatures verified {checks['sampled_signatures_verified']} "
        f"failed {checks['sampled_signatures_failed']}, "
        f"STS calls {checks['sts_calls']}"
    )
    for line in repeated_lines(checks["shared_core_repeated_windows"]):
        print(line)
    for name, loop in checks["event_loop"].items():
        line = (
            f"event loop ({name}): stalls > {checks['event_loop_stall_ms']:g} ms after warm-up "
            "(before the shared-core part) "
            f"{loop['stalls_after_warmup']} (worst {loop['worst_after_warmup_ms']} ms; "
            f"> 10 ms on the CPU: {loop['busy_stalls_after_warmup']}, "
            f"of which in gc: {loop['busy_stalls_in_gc']}; "
            + ", ".join(f"{kind} {count}" for kind, count in loop["stalls_by_request"].items())
            + "), "
            f"during warm-up {loop['stalls_during_warmup']}; worst gc pause {loop['gc_worst_ms']} ms"
        )
        print(line)
    profile = checks["addon_profile"]
    hooks = ", ".join(f"{m} {us}" for m, us in profile["hooks_us_per_request"].items())
    print(
        "addon hooks CPU per request, timed in a separate static set-up (µs; the request line is logged "
        f"after them, _emit_request_line below): {hooks}"
    )
    for method, parts in profile["parts_us"].items():
        print(
            f"    {method}, inside the hooks (µs per call): "
            + ", ".join(f"{k} {v}" for k, v in parts.items())
        )


if __name__ == "__main__":
    out = run()
    print_table(out)
    Path(ROOT / "bench" / "throughput.json").write_text(json.dumps(out, indent=2) + "\n")
