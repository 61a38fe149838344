"""Answers the proxy gives itself: JSON errors for rejected requests and upstream failures."""

import json
import logging

from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1, _http2
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

log = logging.getLogger(__name__)
ERROR_HEADER = "x-proxysigv4-error"
# Upstream exchanges that hit their route's timeout, by client connection id: the next
# error page on that connection is a 504 with this message (HTTP/1 has one request in flight).
timed_out_connections: dict[str, str] = {}
# The route of a forwarded request whose upstream exchange failed, by client connection id: the
# error page that follows names it. Set by the addon's `error` hook, which mitmproxy runs before
# it sends the page; what no page took is forgotten when the client disconnects (forget).
failed_routes: dict[str, str] = {}
# mitmproxy's words when the upstream closed its connection with no answer begun
# (_http1.Http1Client.read_headers).
_SERVER_CLOSED = "server closed connection"


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


def forget(conn_id: str) -> None:
    """Drop what was kept for a client connection's next error page (it is gone)."""
    timed_out_connections.pop(conn_id, None)
    failed_routes.pop(conn_id, None)


def _json_error(conn_id: str, status: int, message: str) -> http.Response:
    """The JSON answer for an upstream failure mitmproxy reports on a client connection."""
    timeout_message = timed_out_connections.pop(conn_id, None)
    route = failed_routes.pop(conn_id, None)
    if timeout_message is not None:
        return error_response(504, "upstream_timeout", timeout_message, route)
    if status >= 500 and message == _SERVER_CLOSED:
        # Not retried: the request was written, and may have been acted on (a POST is not idempotent).
        where = f" (route {route})" if route else ""
        text = f"upstream closed the connection without answering{where}; the request was not retried"
        return error_response(status, "upstream_closed", text, route)
    if status >= 500:
        return error_response(status, "upstream_unreachable", message, route)
    return error_response(status, "bad_request", message, route)


def _send_protocol_error(server: _http1.Http1Server, event: ResponseProtocolError):
    # Mirrors mitmproxy's own branch for ResponseProtocolError, with a JSON body instead of HTML.
    if not (server.conn.state & ConnectionState.CAN_WRITE):
        return
    status = event.code.http_status_code()
    if not server.response and status is not None:
        response = _json_error(server.conn.id, status, event.message)
        response.headers["connection"] = "close"
        yield commands.SendData(server.conn, http1.assemble_response(response))
    else:
        forget(server.conn.id)
    yield commands.CloseConnection(server.conn)


def _send_h2_protocol_error(server: _http2.Http2Server, event: ResponseProtocolError) -> bool:
    """HTTP/2: the same JSON answer on the stream, where mitmproxy would send its HTML page.
    Returns False when mitmproxy's own handling applies (stream closed, headers already sent)."""
    status = event.code.http_status_code()
    if (
        status is None
        or server.is_closed(event.stream_id)
        or not server.is_open_for_us(event.stream_id)
        or server.h2_conn.streams[event.stream_id].state_machine.headers_sent
    ):
        forget(server.conn.id)
        return False
    response = _json_error(server.conn.id, status, event.message)
    headers = [(b":status", b"%d" % response.status_code), *response.headers.fields]
    server.h2_conn.send_headers(event.stream_id, headers)
    server.h2_conn.send_data(event.stream_id, response.content or b"", end_stream=True)
    return True


def install_json_error_pages() -> None:
    """Make mitmproxy's error pages (upstream refused, reset, timed out) JSON, for HTTP/1 and
    HTTP/2 clients.

    mitmproxy writes an HTML page for these and offers no hook to change it; this wraps the one
    method per protocol that sends it. Idempotent.
    """
    original = _http1.Http1Server.send
    if not getattr(original, "_proxysigv4", False):

        def send(self, event):
            if isinstance(event, ResponseProtocolError):
                return _send_protocol_error(self, event)
            return original(self, event)

        send._proxysigv4 = True  # type: ignore[attr-defined]
        _http1.Http1Server.send = send  # type: ignore[method-assign]

    original_h2 = _http2.Http2Server._handle_event
    if not getattr(original_h2, "_proxysigv4", False):

        def handle_event(self, event):
            if isinstance(event, ResponseProtocolError) and _send_h2_protocol_error(self, event):
                yield commands.SendData(self.conn, self.h2_conn.data_to_send())
                return
            yield from original_h2(self, event)

        handle_event._proxysigv4 = True  # type: ignore[attr-defined]
        _http2.Http2Server._handle_event = handle_event  # type: ignore[method-assign]
