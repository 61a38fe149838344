"""A graceful drain, as nginx's `quit` or Envoy's drain: on SIGTERM (or the first SIGINT) readiness
turns 503, the listening sockets close (new connections are refused at TCP level), requests in
flight finish within the deadline (answers to HTTP/1 clients say `Connection: close`), then open
WebSockets get a 1001 close and HTTP/2 clients a GOAWAY, and the process exits 0. A second signal
exits at once."""

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from . import internals

log = logging.getLogger("proxysigv4")
DEFAULT_TIMEOUT = 25  # under Kubernetes' default grace period of 30 s
POLL = 0.05


class Drain:
    """`requests()` and `websockets()` count what is in flight; `shutdown()` ends the process;
    `on_start()` runs when the drain begins (readiness 503)."""

    def __init__(
        self,
        timeout: float,
        requests: Callable[[], int],
        websockets: Callable[[], int],
        on_start: Callable[[], None],
        shutdown: Callable[[], None],
    ) -> None:
        self.timeout = timeout
        self._requests, self._websockets = requests, websockets
        self._on_start, self._shutdown = on_start, shutdown
        self.task: asyncio.Task | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take SIGTERM and SIGINT from mitmproxy's own handlers (which exit at once)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.signal, sig)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.task is not None:
            log.warning("proxysigv4: %s during the drain: exiting now", signal.Signals(sig).name)
            self._shutdown()
            return
        self.task = asyncio.get_running_loop().create_task(self.run(signal.Signals(sig).name))

    async def run(self, why: str = "drain") -> None:
        started = time.monotonic()
        self._on_start()
        in_flight = self._requests()
        log.info(
            "proxysigv4: %s: draining, %d requests and %d WebSockets in flight, up to %gs",
            why,
            in_flight,
            self._websockets(),
            self.timeout,
        )
        try:
            await internals.stop_listening()
            deadline = started + self.timeout
            while time.monotonic() < deadline and (self._requests() or self._websockets()):
                await asyncio.sleep(POLL)
            left, sockets = self._requests(), self._websockets()
            told = internals.say_goodbye("proxy shutting down")
            if told:
                await asyncio.sleep(POLL)  # let the close frames and GOAWAYs leave
            log.info(
                "proxysigv4: drained in %.1fs: %d requests were in flight, %d cut at the deadline, "
                "%d WebSockets closed (1001)",
                time.monotonic() - started,
                in_flight,
                left,
                sockets,
            )
        except Exception:
            log.exception("proxysigv4: the drain failed; exiting")
        self._shutdown()
