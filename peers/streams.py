"""Test helpers for streaming: a local upstream that writes responses over time or in bulk,
deterministic large payloads, and process memory readings."""

import hashlib
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

BLOCK = 1024 * 1024
GIB = 1024 * BLOCK


def block(i: int) -> bytes:
    """Deterministic 1 MiB block number i (cheap to generate, different for every i)."""
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return (seed * (BLOCK // len(seed)))[:BLOCK]


def payload_digest(size: int, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    for i in range(size // BLOCK):
        h.update(block(i))
    return h.hexdigest()


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class StreamingUpstream:
    """Serves /events (chunked, one event, waits for `release`, another), /big/<bytes>
    (Content-Length, deterministic blocks) and records request headers."""

    def __init__(self, content_type: str = "text/event-stream") -> None:
        self.release = threading.Event()
        self.second_written = threading.Event()
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path.endswith("/events"):
                    self.send_response(200)
                    self.send_header("content-type", content_type)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    self._chunk(b"data: first\n\n")
                    outer.release.wait(15)
                    self._chunk(b"data: second\n\n")
                    outer.second_written.set()
                    self._chunk(b"")
                elif "/big/" in self.path:
                    size = int(self.path.rsplit("/", 1)[1])
                    self.send_response(200)
                    self.send_header("content-type", "application/octet-stream")
                    self.send_header("content-length", str(size))
                    self.end_headers()
                    for i in range(size // BLOCK):
                        self.wfile.write(block(i))
                else:
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def put_blocks(
    base_url: str, path: str, size: int, headers: dict[str, str] | None = None, timeout: float = 600
) -> tuple[int, bytes, str]:
    """PUT `size` bytes of deterministic blocks with a Content-Length; returns (status, body, md5)."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.putrequest("PUT", path)
    conn.putheader("content-length", str(size))
    conn.putheader("content-type", "application/octet-stream")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    md5 = hashlib.md5()
    for i in range(size // BLOCK):
        b = block(i)
        md5.update(b)
        conn.send(b)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body, md5.hexdigest()
