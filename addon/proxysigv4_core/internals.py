"""Every use of mitmproxy's private API, in one place: these are what may break on a mitmproxy
upgrade (checked against 12.3.1). Each says what it relies on."""

import logging
from collections.abc import Generator

from h2.connection import ConnectionState as H2State
from mitmproxy import ctx
from mitmproxy import log as mitmproxy_log
from mitmproxy.connection import Connection, ConnectionState, Server
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layer import CommandGenerator
from mitmproxy.proxy.layers.http import HttpLayer, _http1, _http2
from mitmproxy.proxy.layers.http._events import HttpEvent, ResponseProtocolError
from mitmproxy.proxy.layers.tls import TLSLayer
from mitmproxy.proxy.layers.websocket import WebsocketLayer
from OpenSSL import SSL
from wsproto.connection import ConnectionState as WsState
from wsproto.events import CloseConnection as WsClose

from . import errors
from .requestlog import is_request_line

_INSTALLED: set[object] = set()  # the wrappers in place (installing is idempotent)


# ---- JSON error pages ---------------------------------------------------------------------------
# Relies on: _http1.Http1Server.send and _http2.Http2Server._handle_event receiving the
# ResponseProtocolError that makes mitmproxy write its HTML error page, and on the shape of
# mitmproxy's own branch for it (mirrored below).
def _send_protocol_error(
    server: _http1.Http1Server, event: ResponseProtocolError
) -> Generator[commands.Command, None, None]:
    # Mirrors mitmproxy's own branch for ResponseProtocolError, with a JSON body instead of HTML.
    if not (server.conn.state & ConnectionState.CAN_WRITE):
        return
    status = event.code.http_status_code()
    if not server.response and status is not None:
        response = errors.json_error(server.conn.id, status, event.message)
        response.headers["connection"] = "close"
        yield commands.SendData(server.conn, http1.assemble_response(response))
    else:
        errors.forget(server.conn.id)
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
        errors.forget(server.conn.id)
        return False
    response = errors.json_error(server.conn.id, status, event.message)
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
    if original not in _INSTALLED:

        def send(self: _http1.Http1Server, event: HttpEvent) -> CommandGenerator[None]:
            if isinstance(event, ResponseProtocolError):
                return _send_protocol_error(self, event)
            return original(self, event)

        _INSTALLED.add(send)
        # deliberate: mitmproxy has no hook for its error page (mypy forbids assigning to a method)
        _http1.Http1Server.send = send  # type: ignore[method-assign]

    original_h2 = _http2.Http2Server._handle_event
    if original_h2 not in _INSTALLED:

        def handle_event(self: _http2.Http2Server, event: events.Event) -> CommandGenerator[None]:
            if isinstance(event, ResponseProtocolError) and _send_h2_protocol_error(self, event):
                yield commands.SendData(self.conn, self.h2_conn.data_to_send())
                return
            yield from original_h2(self, event)

        _INSTALLED.add(handle_event)
        # deliberate, as above
        _http2.Http2Server._handle_event = handle_event  # type: ignore[method-assign]


# ---- closing an upstream connection (route timeouts) ---------------------------------------------
def close_upstream(client_conn_id: str, server_conn: Server) -> bool:
    """Close the upstream connection of a client connection's exchange; False when it is gone.
    Relies on: the proxyserver addon's `connections` (client connection id -> its handler) and the
    handler's `transports` and `close_connection`."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client_conn_id) if proxyserver else None
    if handler is None or server_conn not in handler.transports:
        return False
    handler.close_connection(server_conn)
    return True


# ---- the request line off mitmproxy's legacy log event -------------------------------------------
def _not_request_line(record: logging.LogRecord) -> bool:
    return not is_request_line(record)


def skip_legacy_log_events() -> None:
    """mitmproxy hands every log record to its deprecated `add_log` event as well, which wakes the
    event loop and calls every addon (about 0.1 ms a record): the per-request lines skip that path;
    the terminal, mitmweb's event log and other handlers still get them.
    Relies on: mitmproxy.log.LegacyLogEvents being the root logger's handler for that event."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, mitmproxy_log.LegacyLogEvents) and _not_request_line not in handler.filters:
            handler.addFilter(_not_request_line)


# ---- a graceful drain (drain.py) -----------------------------------------------------------------
# Relies on: the proxyserver addon's `servers` (its ServerInstance.stop closes the listening sockets
# and leaves established connections alone) and `connections` (client connection id -> handler);
# a handler's `layer` tree (NextLayer.layer, child_layer, HttpLayer.connections/streams), its
# `transports` (connection -> ConnectionIO with a writer); Http2Server.h2_conn and
# WebsocketLayer.client_ws/server_ws (wsproto connections); TLSLayer.conn and .tls.
async def stop_listening() -> int:
    """Close every listening socket of mitmproxy's proxy servers; returns how many were open."""
    proxyserver = ctx.master.addons.get("proxyserver")
    stopped = 0
    for instance in list(proxyserver.servers) if proxyserver else ():
        if instance.is_running:
            await instance.stop()
            stopped += 1
    return stopped


def _layers(root: object) -> list[object]:
    """Every layer below `root`: its next layers, an HttpLayer's connections and streams."""
    found: list[object] = []
    todo = [root]
    while todo:
        layer = todo.pop()
        if layer is None or any(layer is f for f in found):
            continue
        found.append(layer)
        todo += [getattr(layer, "layer", None), getattr(layer, "child_layer", None)]
        todo += list(getattr(layer, "connections", {}).values()) if isinstance(layer, HttpLayer) else []
        todo += list(getattr(layer, "streams", {}).values()) if isinstance(layer, HttpLayer) else []
    return found


def say_goodbye(reason: str) -> int:
    """Before the process exits: a WebSocket close (1001 going away) to both ends of every open
    WebSocket, and an HTTP/2 GOAWAY (no error) to every HTTP/2 client. Returns the connections told."""
    proxyserver = ctx.master.addons.get("proxyserver")
    told = 0
    for handler in list(proxyserver.connections.values()) if proxyserver else ():
        writes: list[tuple[Connection, bytes]] = []
        layers = _layers(handler.layer)
        for layer in layers:
            if isinstance(layer, WebsocketLayer):
                for ws in (layer.client_ws, layer.server_ws):
                    if ws.state == WsState.OPEN:
                        writes.append((ws.conn, ws.send(WsClose(code=1001, reason=reason))))
            elif (
                isinstance(layer, _http2.Http2Server) and layer.h2_conn.state_machine.state != H2State.CLOSED
            ):
                layer.h2_conn.close_connection()
                writes.append((layer.conn, layer.h2_conn.data_to_send()))
        for conn, data in writes:
            io = handler.transports.get(conn)
            if io is not None and io.writer is not None and data:
                io.writer.write(_on_the_wire(layers, conn, data))
        told += bool(writes)
    return told


def _on_the_wire(layers: list[object], conn: Connection, data: bytes) -> bytes:
    """`data` as it goes out on `conn`: through its TLS layer (TLSLayer.tls, a pyOpenSSL connection
    on memory BIOs) when it has one."""
    for layer in layers:
        if isinstance(layer, TLSLayer) and layer.conn is conn and layer.tls is not None:
            layer.tls.sendall(data)
            out = b""
            while True:
                try:
                    out += layer.tls.bio_read(65535)
                except SSL.WantReadError:
                    return out
    return data
