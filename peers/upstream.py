"""A local HTTP upstream that records what it receives and answers through a function; and such a
function that verifies each request's SigV4 signature first, as AWS would."""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from .sigv4_verify import Secrets, Verdict, Verifier, verify


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body


class Upstream:
    """A local HTTP server that records what it receives and answers via a handler function."""

    def __init__(self, answer: Callable[[Received], Answer]) -> None:
        self.received: list[Received] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                got = Received(self.command, self.path, list(self.headers.items()), body)
                outer.received.append(got)
                status, headers, payload = answer(got)
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if not any(k.lower() == "content-length" for k, _ in headers):
                    self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_then_answer(
    secrets: Secrets | Callable[[], Secrets],
    headers: tuple[tuple[str, str], ...] = (("content-type", "text/plain"),),
    body: Callable[[Received, Verdict], bytes] | None = None,
    verifier: Verifier = verify,
) -> Callable[[Received], Answer]:
    """An upstream handler that checks each request's signature like AWS (`verifier`, with
    `secrets`: a dict of key -> (secret, token), or a function giving one) and answers 200 with
    `headers` and `body(received, verdict)` (the verdict's reason by default), or 403."""

    def answer(received: Received) -> Answer:
        known = secrets() if callable(secrets) else secrets
        verdict = verifier(received.method, received.target, received.headers, received.body, known)
        payload = body(received, verdict) if body else verdict.reason.encode()
        return (200 if verdict.ok else 403), list(headers), payload

    return answer
