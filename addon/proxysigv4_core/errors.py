"""Answers the proxy gives itself: JSON errors for rejected requests and upstream failures."""

import json
import logging

from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

log = logging.getLogger(__name__)
ERROR_HEADER = "x-proxysigv4-error"
# Upstream exchanges that hit their route's timeout, by client connection id: the next
# error page on that connection is a 504 with this message (HTTP/1 has one request in flight).
timed_out_connections: dict[str, str] = {}


def error_body(status: int, error: str, message: str, route: str | None = None) -> bytes:
    body = {"error": error, "status": status, "message": message}
    if route is not None:
        body["route"] = route
    return json.dumps(body).encode() + b"\n"


def error_response(status: int, error: str, message: str, route: str | None = None) -> http.Response:
    return http.Response.make(
        status,
        error_body(status, error, message, route),
        {"content-type": "application/json", ERROR_HEADER: error},
    )


def _json_error_page(status: int, error: str, message: str) -> bytes:
    response = error_response(status, error, message)
    response.headers["connection"] = "close"
    return http1.assemble_response(response)


def _send_protocol_error(server: _http1.Http1Server, event: ResponseProtocolError):
    # Mirrors mitmproxy's own branch for ResponseProtocolError, with a JSON body instead of HTML.
    if not (server.conn.state & ConnectionState.CAN_WRITE):
        return
    status = event.code.http_status_code()
    timeout_message = timed_out_connections.pop(server.conn.id, None)
    if not server.response and status is not None:
        if timeout_message is not None:
            page = _json_error_page(504, "upstream_timeout", timeout_message)
        elif status >= 500:
            page = _json_error_page(status, "upstream_unreachable", event.message)
        else:
            page = _json_error_page(status, "bad_request", event.message)
        yield commands.SendData(server.conn, page)
    yield commands.CloseConnection(server.conn)


def install_json_error_pages() -> None:
    """Make mitmproxy's HTTP/1 error pages (upstream refused, reset, timed out) JSON.

    mitmproxy writes an HTML page for these and offers no hook to change it; this wraps the one
    method that sends it. Idempotent.
    """
    original = _http1.Http1Server.send
    if getattr(original, "_proxysigv4", False):
        return

    def send(self, event):
        if isinstance(event, ResponseProtocolError):
            return _send_protocol_error(self, event)
        return original(self, event)

    send._proxysigv4 = True  # type: ignore[attr-defined]
    _http1.Http1Server.send = send  # type: ignore[method-assign]
