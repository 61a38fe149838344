"""mitmproxy addon for the benchmark: counts event-loop stalls, i.e. single callbacks that kept
mitmproxy's event loop busy for longer than STALL_MS (a blocking call in a hook shows up here).

Every callback the loop runs goes through `asyncio.Handle._run`; this wraps it with a clock.
Each stall is recorded with its wall-clock time, so a benchmark can ignore its warm-up. The
records are written as JSON to $LOOPWATCH_FILE every second and when mitmproxy stops.

With LOOPWATCH_PARTS=1 it also times the proxysigv4 addon's hooks and the parts of its work (CPU
per call, per request method): a profile taken inside the live proxy. Those timers read the clock
twice per call (a system call each) and cost the proxy measurably (in an A/B: +0.07 ms one-client
latency, 2% throughput), so the benchmark's headline figures come from proxies without them.

    mitmdump -s bench/loopwatch.py ...
"""

import asyncio
import contextvars
import gc
import json
import os
import sys
import time

STALL_MS = 10.0
# (wall-clock time, ms the callback took, ms of it on the CPU, ms of it in gc, callback)
_stalls: list[tuple[float, float, float, float, str]] = []
_callbacks = 0
_gc = {"ms": 0.0, "collections": 0, "worst_ms": 0.0, "started": 0.0}


def _gc_clock(phase: str, info: dict) -> None:
    """Time the garbage collector's pauses: a stall that is mostly gc is not a blocking call."""
    if phase == "start":
        _gc["started"] = time.perf_counter()
    else:
        spent = (time.perf_counter() - _gc["started"]) * 1000
        _gc["ms"] += spent
        _gc["collections"] += 1
        _gc["worst_ms"] = max(_gc["worst_ms"], spent)


def _install() -> None:
    original = asyncio.events.Handle._run
    if getattr(original, "_loopwatch", False):
        return
    clock, cpu_clock = time.perf_counter, time.thread_time
    limit = STALL_MS / 1000

    def _run(self):
        global _callbacks
        _callbacks += 1
        t0, cpu0, gc0 = clock(), cpu_clock(), _gc["ms"]
        try:
            return original(self)
        finally:
            spent = clock() - t0
            if spent > limit:
                cpu = round((cpu_clock() - cpu0) * 1000, 1)
                in_gc = round(_gc["ms"] - gc0, 1)
                _stalls.append((time.time(), round(spent * 1000, 1), cpu, in_gc, repr(self._callback)[:160]))

    _run._loopwatch = True  # type: ignore[attr-defined]
    asyncio.events.Handle._run = _run  # type: ignore[method-assign]
    gc.callbacks.append(_gc_clock)


def _write() -> None:
    path = os.environ.get("LOOPWATCH_FILE")
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(
                {
                    "stall_ms": STALL_MS,
                    "callbacks": _callbacks,
                    "stalls": _stalls,
                    "gc": _gc,
                    "hooks": _hook_time,
                    "parts": _part_time,
                },
                f,
            )
        os.replace(path + ".tmp", path)


_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")
_hook_time: dict[str, list[float]] = {}  # "METHOD hook" -> [calls, seconds]


def _timed(name: str, hook):
    """Wrap an addon's hook to add up the CPU time it takes (an async hook: until it completes; its
    hooks do not wait for anything once credentials are cached), per hook and request method."""
    clock = time.thread_time

    def add(flow, seconds: float) -> None:
        totals = _hook_time.setdefault(f"{flow.request.method} {name}", [0, 0.0])
        totals[0] += 1
        totals[1] += seconds

    if asyncio.iscoroutinefunction(hook):

        async def timed_async(flow):
            _method.set(flow.request.method)
            t0 = clock()
            try:
                return await hook(flow)
            finally:
                add(flow, clock() - t0)

        return timed_async

    def timed(flow):
        _method.set(flow.request.method)
        t0 = clock()
        try:
            return hook(flow)
        finally:
            add(flow, clock() - t0)

    return timed


# The core functions the addon's hooks call, timed like the hooks, by the module that calls each
# (where the name is looked up): a profile of the addon's work taken inside the live proxy (nested:
# forward includes sign_upstream, prepare includes resolve). _emit_request_line: the request line,
# logged after the response hook (on the loop's next turn).
_PARTS_FUNCTIONS = (
    ("proxysigv4_core.addon", "prepare"),
    ("proxysigv4_core.intake", "resolve"),
    ("proxysigv4_core.addon", "forward"),
    ("proxysigv4_core.forwarding", "sign_upstream"),
    ("proxysigv4_core.addon", "log_request"),
    ("proxysigv4_core.requestlog", "_emit_request_line"),
)
_part_time: dict[str, list[float]] = {}  # "METHOD part" -> [calls, seconds]
# The method of the request whose hook is running (per asyncio task: one per connection).
_method: contextvars.ContextVar[str] = contextvars.ContextVar("method", default="?")


def _timed_part(name: str, function):
    clock = time.thread_time

    def timed(*args, **kwargs):
        t0 = clock()
        try:
            return function(*args, **kwargs)
        finally:
            totals = _part_time.setdefault(f"{_method.get()} {name}", [0, 0.0])
            totals[0] += 1
            totals[1] += clock() - t0

    return timed


def _time_addon_hooks() -> bool:
    """Time the proxysigv4 addon's hooks (found among the loaded scripts), to report the
    addon's own share of each request next to mitmproxy's."""
    from mitmproxy import ctx

    def walk(addons):
        for addon in addons:
            yield addon
            yield from walk(getattr(addon, "addons", None) or [])

    for addon in walk(ctx.master.addons.chain):
        if type(addon).__name__ == "ProxySigV4":
            for name in _HOOKS:
                setattr(addon, name, _timed(name, getattr(addon, name)))
            # and the parts of a request's work, measured in the same live process
            for module_name, name in _PARTS_FUNCTIONS:
                module = sys.modules[module_name]
                setattr(module, name, _timed_part(name, getattr(module, name)))
            return True
    return False


class LoopWatch:
    def running(self) -> None:
        asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        # Scripts load asynchronously: look for the addon every 0.2 s for up to 5 s (bare mitmproxy
        # has none); the record is written once a second (file I/O on the watched loop: kept rare).
        for _ in range(25 if os.environ.get("LOOPWATCH_PARTS") == "1" else 0):
            if _time_addon_hooks():
                break
            await asyncio.sleep(0.2)
        while True:
            _write()
            await asyncio.sleep(1)

    def done(self) -> None:
        _write()


_install()
addons = [LoopWatch()]
