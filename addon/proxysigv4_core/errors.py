"""Answers the proxy gives itself: JSON errors for rejected requests and upstream failures (sent
in place of mitmproxy's HTML error pages by internals.install_json_error_pages)."""

import json

from mitmproxy import http

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


def json_error(conn_id: str, status: int, message: str) -> http.Response:
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
