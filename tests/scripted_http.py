"""Connection-level HTTP/1 peers for tests: an upstream whose connection behaviour is scripted by
the request path's first segment, and a raw client that keeps its connection alive the way
real clients do (it reuses a connection unless the answer said it ends)."""

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

# The upstream's behaviours, by the request path's first segment:
#   keep        keep-alive by the request's version and Connection (HTTP/1.0 keeps only on
#               `keep-alive`); /keep/204 and /keep/304 answer without a body
#   close-now   answers `Connection: close` and closes at once
#   close-late  answers `Connection: close` and closes 0.3 s later (as moto and busy servers do)
#   idle        keep-alive, but closes a connection idle for 1 s without saying so
#   reset       sends the head and 10 of 100 body bytes, then resets the connection
#   dies        the second request on a connection is read, then the connection is closed unanswered
CLOSE_LATE_DELAY = 0.3
IDLE_CLOSE_AFTER = 1.0


def _read_head(conn: socket.socket, buf: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


def _read_exactly(conn: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed mid-body")
        buf += chunk
    data = bytes(buf[:n])
    del buf[:n]
    return data


def _read_line(conn: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed mid-chunk")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def _read_chunked(conn: socket.socket, buf: bytearray) -> bytes:
    body = b""
    while True:
        size = int(_read_line(conn, buf).split(b";")[0], 16)
        if size == 0:
            while _read_line(conn, buf):  # trailers, then the empty line
                pass
            return body
        body += _read_exactly(conn, buf, size)
        _read_line(conn, buf)


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers


def _tokens(headers: list[tuple[str, str]], name: str = "connection") -> set[str]:
    return {t.strip().lower() for k, v in headers if k == name for t in v.split(",") if t.strip()}


def _read_body(conn, buf, headers) -> bytes:
    values = dict(headers)
    if "chunked" in values.get("transfer-encoding", "").lower():
        return _read_chunked(conn, buf)
    return _read_exactly(conn, buf, int(values.get("content-length", "0") or 0))


class _ThreadedServer:
    """A TCP server on 127.0.0.1 serving each connection in a thread (`_serve`), until closed."""

    def __init__(self) -> None:
        self.connections = 0
        self._sock = socket.socket()
        self._stopped = False

    def __enter__(self):
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError


class ScriptedUpstream(_ThreadedServer):
    """A threaded HTTP/1.1 upstream on 127.0.0.1 (see the behaviours above). `requests` counts
    the requests it read, `connections` the connections it accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        served = 0
        last_mode = ""
        with conn:
            try:
                while True:
                    if served and b"\r\n\r\n" not in buf:
                        conn.settimeout(IDLE_CLOSE_AFTER if last_mode == "idle" else None)
                    try:
                        head = _read_head(conn, buf)
                    except TimeoutError:
                        return  # idle: closed without notice
                    conn.settimeout(None)
                    if head is None:
                        return
                    request_line, headers = _parse_head(head)
                    method, target, version = request_line.split(" ")
                    body = _read_body(conn, buf, headers)
                    self.requests += 1
                    served += 1
                    mode = target.split("/")[1] if target.count("/") >= 1 else ""
                    last_mode = mode
                    if not self._answer(conn, mode, served, method, target, version, headers, body):
                        return
            except (ConnectionError, OSError):
                return

    def _answer(self, conn, mode, served, method, target, version, headers, body) -> bool:
        """Answer one request; False when the connection ends here."""
        if mode == "dies" and served == 2:
            return False
        payload = f"{method} {target} {len(body)}".encode()
        status, reason = 200, "OK"
        if target.endswith("/204"):
            status, reason, payload = 204, "No Content", b""
        elif target.endswith("/304"):
            status, reason, payload = 304, "Not Modified", b""
        tokens = _tokens(headers)
        keep = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
        extra = []
        if mode in ("close-now", "close-late"):
            keep = False
        if not keep:
            extra.append("Connection: close")
        elif version == "HTTP/1.0":
            extra.append("Connection: keep-alive")
        if mode == "reset":
            head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n"
            conn.sendall(head.encode() + b"0123456789")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain", *extra]
        if status not in (204, 304):
            lines.append(f"Content-Length: {len(payload)}")
        else:
            lines.append('ETag: "e1"')
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if method == "HEAD" else payload))
        if not keep:
            if mode == "close-late":
                time.sleep(CLOSE_LATE_DELAY)
            return False
        return True


@dataclass
class Outcome:
    """What a client saw of one request: status (or "timeout", "closed", "reset"), body,
    whether its connection stays usable by what the answer said, and how long it took."""

    status: int | str
    body: bytes = b""
    kept: bool = False
    seconds: float = 0.0
    headers: list[tuple[str, str]] = field(default_factory=list)


class RawClient:
    """A keep-alive HTTP/1 client on raw sockets: it reuses its connection unless the answer
    said the connection ends, as urllib3, curl and Node do; each request waits at most `timeout`."""

    def __init__(self, port: int, timeout: float = 2.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn: socket.socket | None = None
        self.buf = bytearray()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.buf = bytearray()

    def _connect(self) -> socket.socket:
        if self.conn is None:
            self.conn = socket.create_connection(("127.0.0.1", self.port), self.timeout)
            self.buf = bytearray()
        return self.conn

    def send(self, raw: bytes) -> None:
        self._connect().sendall(raw)

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        version: str = "HTTP/1.1",
        headers: tuple[tuple[str, str], ...] = (),
        expect_continue: bool = False,
        half_close: bool = False,
    ) -> Outcome:
        started = time.monotonic()
        try:
            head = f"{method} {path} {version}\r\nHost: 127.0.0.1:{self.port}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers)
            if body or method in ("POST", "PUT"):
                head += f"Content-Length: {len(body)}\r\n"
            if expect_continue:
                head += "Expect: 100-continue\r\n"
            self.send(head.encode() + b"\r\n")
            if expect_continue:
                interim = self.read_response(method)
                if interim.status != 100:
                    return self._done(interim, started)
            self.send(body)
            if half_close:
                assert self.conn is not None
                self.conn.shutdown(socket.SHUT_WR)
            return self._done(self.read_response(method, version), started)
        except TimeoutError:
            self.close()
            return Outcome("timeout", seconds=time.monotonic() - started)
        except ConnectionResetError:
            self.close()
            return Outcome("reset", seconds=time.monotonic() - started)
        except (ConnectionError, BrokenPipeError, OSError):
            self.close()
            return Outcome("closed", seconds=time.monotonic() - started)

    def _done(self, outcome: Outcome, started: float) -> Outcome:
        outcome.seconds = time.monotonic() - started
        if not outcome.kept:
            self.close()
        return outcome

    def read_response(self, method: str, version: str = "HTTP/1.1") -> Outcome:
        conn = self._connect()
        head = _read_head(conn, self.buf)
        if head is None:
            raise ConnectionError("closed before an answer")
        status_line, headers = _parse_head(head)
        resp_version, status = status_line.split(" ")[0], int(status_line.split(" ")[1])
        values = dict(headers)
        if method == "HEAD" or status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in values.get("transfer-encoding", "").lower():
            body = _read_chunked(conn, self.buf)
        elif "content-length" in values:
            body = _read_exactly(conn, self.buf, int(values["content-length"]))
        else:
            body = self._read_to_eof(conn)
            return Outcome(status, body, False, headers=headers)
        tokens = _tokens(headers)
        http10 = version == "HTTP/1.0" or resp_version == "HTTP/1.0"
        kept = status < 200 or ("close" not in tokens and (not http10 or "keep-alive" in tokens))
        return Outcome(status, body, kept, headers=headers)

    def _read_to_eof(self, conn: socket.socket) -> bytes:
        data = bytes(self.buf)
        while chunk := conn.recv(65536):
            data += chunk
        self.buf = bytearray()
        return data


class ClosingFront(_ThreadedServer):
    """In front of a real upstream (moto): each request on a connection is passed on as it came
    (its signed Host included), and the answer comes back with `Connection: close`, the
    connection closing `delay` seconds later, as moto and busy servers do."""

    def __init__(self, target_port: int, delay: float = CLOSE_LATE_DELAY) -> None:
        super().__init__()
        self.target_port, self.delay = target_port, delay
        self.requests = 0

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        with conn:
            try:
                head = _read_head(conn, buf)
                if head is None:
                    return
                request_line, headers = _parse_head(head)
                body = _read_body(conn, buf, headers)
                self.requests += 1
                answer = self._pass_on(head, request_line.split(" ")[0], body)
                conn.sendall(answer)
                time.sleep(self.delay)
            except (ConnectionError, OSError):
                return

    def _pass_on(self, head: bytes, method: str, body: bytes) -> bytes:
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        with socket.create_connection(("127.0.0.1", self.target_port), 30) as upstream:
            upstream.sendall(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body)
            buf = bytearray()
            response_head = _read_head(upstream, buf)
            if response_head is None:
                raise ConnectionError("upstream closed before answering")
            status_line, headers = _parse_head(response_head)
            status = int(status_line.split(" ")[1])
            values = dict(headers)
            if method == "HEAD" or status < 200 or status in (204, 304):
                payload = None
            elif "chunked" in values.get("transfer-encoding", "").lower():
                payload = _read_chunked(upstream, buf)
            elif "content-length" in values:
                payload = _read_exactly(upstream, buf, int(values["content-length"]))
            else:
                payload = bytes(buf) + b"".join(iter(lambda: upstream.recv(65536), b""))
        dropped = (b"connection:", b"transfer-encoding:", b"keep-alive:")
        kept = [line for line in response_head.split(b"\r\n") if not line.lower().startswith(dropped)]
        if payload is not None and "content-length" not in values:
            kept.append(b"Content-Length: %d" % len(payload))
        return b"\r\n".join(kept) + b"\r\nConnection: close\r\n\r\n" + (payload or b"")
