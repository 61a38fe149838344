"""What a long-running replica needs besides signing: the health listener (health.py), the metrics
(metrics.py), the count of what is in flight, the periodic turn that renews credentials and
computes readiness, and the graceful drain (drain.py)."""

import asyncio
import logging
from collections.abc import Callable

from mitmproxy import ctx, http
from mitmproxy.connection import Address

from .credentials import CredentialSpec, CredentialStore
from .drain import Drain
from .flowrecord import record_of
from .health import HealthServer, HealthView, readiness, route_readiness
from .metrics import Metrics
from .state import State, ready_line

log = logging.getLogger("proxysigv4")
TICK = 0.5  # seconds between the health task's turns


class Service:
    def __init__(self, credentials: CredentialStore, state: Callable[[], State | None]) -> None:
        self._credentials, self._state = credentials, state
        self.flows: dict[str, http.HTTPFlow] = {}  # HTTP requests received and not yet answered
        self.websockets: set[str] = set()  # flow ids of open WebSockets
        self.metrics = Metrics(self._expiries, lambda: len(self.flows))
        self.view = HealthView(self.metrics.registry)
        self.server: HealthServer | None = None
        self.drain: Drain | None = None
        self._tick: asyncio.Task | None = None
        self._expiry_pairs: tuple[tuple[str, float], ...] = ()
        credentials.on_refresh = self._refreshed

    # ---- the health listener ----------------------------------------------------------------
    def listen(self, host: str, port: int) -> None:
        """(Re)start the health listener; port 0 turns it off. Raises OSError when it cannot bind."""
        if self.server is not None and self.server.wanted == (host, port):
            return  # options set again to the same values (proxysigv4 run configures twice)
        self.close()
        if port:
            self.server = HealthServer(host, port, self.view)
            log.info("proxysigv4: health and metrics on http://%s:%d (/livez /readyz /metrics)", host, port)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def stop(self) -> None:
        """The addon is unloaded (a script reload, the end): listener and periodic turn stop."""
        self.close()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    # ---- the periodic turn ---------------------------------------------------------------------
    def start(self, drain_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        if self._tick is None:
            self._tick = loop.create_task(self._run())
        if drain_timeout > 0 and self.drain is None:
            self.drain = Drain(
                drain_timeout,
                lambda: len(self.flows),
                lambda: len(self.websockets),
                self._draining,
                ctx.master.shutdown,
            )
            self.drain.install(loop)

    async def _run(self) -> None:
        while True:
            try:
                self.turn()
            except Exception:
                log.exception("proxysigv4: the health task failed a turn")
            await asyncio.sleep(TICK)

    def turn(self) -> None:
        """Renew credentials that are due, compute readiness, mark the loop alive; forget requests
        whose client has gone without their flow ending (so a drain never waits for them)."""
        gone = [i for i, f in self.flows.items() if f.client_conn.timestamp_end is not None]
        for flow_id in gone:
            del self.flows[flow_id]
        state = self._state()
        routes, expiries = [], []
        for route in state.config.routes if state else ():
            provider = self._credentials.provider(route)
            provider.maintain()
            held = provider.state()
            routes.append(route_readiness(route.prefix, held))
            if held.usable and held.expires_at is not None:
                expiries.append((route.prefix, held.expires_at))
        self._expiry_pairs = tuple(expiries)
        proxyserver = ctx.master.addons.get("proxyserver") if hasattr(ctx, "master") else None
        listening = [f"{a[0]}:{a[1]}" for a in proxyserver.listen_addrs()] if proxyserver else []
        self.view.beat(readiness(state.config.source if state else None, listening, routes))

    async def announce(self) -> None:
        """Once mitmproxy listens: where, and a curl line to paste for the first route."""
        proxyserver = ctx.master.addons.get("proxyserver")
        addrs: list[Address] = []
        for _ in range(100):
            addrs = proxyserver.listen_addrs() if proxyserver else []
            if addrs or proxyserver is None:
                break
            await asyncio.sleep(0.05)
        state = self._state()
        if addrs and state is not None:
            log.info(ready_line(state, addrs[0][0], addrs[0][1]))

    def _draining(self) -> None:
        self.view.draining = True

    # ---- counting ------------------------------------------------------------------------------
    def received(self, flow: http.HTTPFlow) -> None:
        self.flows[flow.id] = flow

    def closing(self, flow: http.HTTPFlow) -> None:
        """While draining, an HTTP/1 answer closes its connection (the client reconnects elsewhere)."""
        if (
            self.view.draining
            and flow.response is not None
            and flow.request.http_version.startswith("HTTP/1")
        ):
            flow.response.headers["connection"] = "close"

    def answered(self, flow: http.HTTPFlow, route: str | None) -> None:
        """A request's answer (or error), `route` the prefix it was signed for: counted when the
        addon signed it or answered it itself (pass-through traffic is mitmproxy's)."""
        if self.flows.pop(flow.id, None) is None or self.server is None:
            return  # without the health listener nobody reads the metrics: not counted
        record = record_of(flow)
        rejected = record.get("rejected")
        if route is None and not rejected and "preflight" not in record:
            return
        response = flow.response
        method = flow.request.method
        if response is None:
            self.metrics.answered(route, method, "error")
            return
        if rejected:
            self.metrics.refused(rejected)
        self.metrics.answered(route or record.get("route"), method, response.status_code)
        sent = flow.request.timestamp_end
        if route and not rejected and sent and response.timestamp_start:
            self.metrics.upstream_latency(route, response.timestamp_start - sent)

    def _refreshed(self, spec: CredentialSpec, result: str) -> None:
        state = self._state() if self.server is not None else None
        routes = [r.prefix for r in state.config.routes if CredentialSpec.of(r) == spec] if state else []
        self.metrics.credential_refresh(routes, result)

    def _expiries(self) -> tuple[tuple[str, float], ...]:
        """(route, expiry) for the metrics: read by the scraping thread, made by the last turn."""
        return self._expiry_pairs
