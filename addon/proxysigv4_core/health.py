"""The health listener: `/livez`, `/readyz` and `/metrics` on a port of their own, served from a
thread, so that a probe gets an answer (503) even while the event loop is blocked.

It never forwards or signs and asks for no token: it tells only whether the proxy lives, whether it
can sign for every route, and the Prometheus metrics (by `prometheus_client`).
"""

import json
import logging
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from .credentials import CredentialState
from .redaction import mask_key_id

log = logging.getLogger("proxysigv4")
# The event loop marks each turn of the health task; older than this, the process is not alive.
STALLED_AFTER = 5.0


@dataclass(frozen=True)
class RouteReadiness:
    prefix: str
    ready: bool
    detail: dict  # JSON-ready: credentials (masked key id, source, expiry) or the error


@dataclass(frozen=True)
class Readiness:
    """Whether the proxy can serve now, computed on the event loop and read by the listener."""

    ready: bool
    body: dict = field(default_factory=dict)


def route_readiness(prefix: str, credentials: CredentialState) -> RouteReadiness:
    """A route is ready when it holds valid credentials (even while a renewal fails)."""
    detail: dict = {}
    if credentials.usable:
        detail["credentials"] = f"{mask_key_id(credentials.access_key_id)} via {credentials.method}"
        if credentials.expires_at is not None:
            detail["expires"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(credentials.expires_at))
    if credentials.last_error:
        key = "renewal_failing" if credentials.usable else "error"
        detail[key] = credentials.last_error
    elif not credentials.usable:
        detail["error"] = "credentials not resolved yet"
    return RouteReadiness(prefix, credentials.usable, detail)


def readiness(source: str | None, listening: list[str], routes: list[RouteReadiness]) -> Readiness:
    """Ready: a config is loaded, the proxy listens, and every route can sign now."""
    not_ready = {r.prefix: r.detail for r in routes if not r.ready}
    ready = source is not None and bool(listening) and not not_ready
    body: dict[str, object] = {
        "status": "ready" if ready else "not ready",
        "config": source,
        "listening": listening,
    }
    if source is None:
        body["error"] = "no route file loaded"
    elif not listening:
        body["error"] = "the proxy is not listening"
    body["routes"] = {r.prefix: {"ready": r.ready, **r.detail} for r in routes}
    if not_ready:
        body["not_ready"] = sorted(not_ready)
    return Readiness(ready, body)


class HealthView:
    """What the listener's thread reads: the event loop's last turn, the readiness computed on the
    loop, and whether a drain has started. Plain attribute writes: atomic for the reader."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.heartbeat = time.monotonic()
        self.readiness = Readiness(False, {"status": "starting"})
        self.draining = False

    def beat(self, readiness: Readiness) -> None:
        self.readiness = readiness
        self.heartbeat = time.monotonic()

    def stalled_for(self) -> float:
        return time.monotonic() - self.heartbeat


def _json(start_response: StartResponse, status: str, body: dict[str, object]) -> list[bytes]:
    data = json.dumps(body, indent=1, ensure_ascii=False).encode() + b"\n"
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


def wsgi_app(view: HealthView) -> WSGIApplication:
    metrics = make_wsgi_app(view.registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path not in ("/livez", "/readyz", "/metrics"):
            return _json(
                start_response,
                "404 Not Found",
                {"error": "not_found", "paths": ["/livez", "/readyz", "/metrics"]},
            )
        if method not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"error": "method_not_allowed"})
        stalled = view.stalled_for()
        if path == "/metrics":
            return metrics(environ, start_response)
        if stalled > STALLED_AFTER:
            status = {"status": "event loop stalled", "stalled_seconds": round(stalled, 1)}
            return _json(start_response, "503 Service Unavailable", status)
        if path == "/livez":
            return _json(start_response, "200 OK", {"status": "alive"})
        if view.draining:
            return _json(start_response, "503 Service Unavailable", {"status": "draining"})
        readiness = view.readiness
        return _json(
            start_response, "200 OK" if readiness.ready else "503 Service Unavailable", readiness.body
        )

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: no line each
        pass


class HealthServer:
    """The listener, in a daemon thread; `close` stops it."""

    def __init__(self, host: str, port: int, view: HealthView) -> None:
        server_class = ThreadingWSGIServer
        if ":" in host:

            class V6(ThreadingWSGIServer):
                address_family = socket.AF_INET6

            server_class = V6
        self.wanted = (host, port)
        self._server = make_server(host, port, wsgi_app(view), server_class, _QuietHandler)
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="proxysigv4-health", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
