"""A WebSocket upstream in its own thread that verifies the upgrade's SigV4 signature (header or
query string) with awscrt before it accepts, then echoes messages."""

import asyncio
import threading
from http import HTTPStatus
from typing import Self

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from proxysigv4_core.emulator import free_port

from .sigv4_verify import crt_query_signature, verify

HANDSHAKE = frozenset(
    {
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


class VerifyingEchoServer:
    """A WebSocket server in its own thread: accepts an upgrade only if its SigV4 signature (header
    or query string) verifies with awscrt, then answers each message with "echo: <message>"."""

    def __init__(self, secrets: dict[str, tuple[str, str | None]]) -> None:
        self.secrets = secrets  # key -> (secret, token) it accepts
        self.port = free_port()
        self.verdicts: list[str] = []
        self.paths: list[str] = []
        self._ready = threading.Event()
        self._running: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._running is not None:
            loop, stop = self._running
            loop.call_soon_threadsafe(stop.set_result, None)
        self._thread.join(10)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        self._running = loop, stop
        chat = [Subprotocol("chat")]
        async with serve(self._echo, "127.0.0.1", self.port, process_request=self._check, subprotocols=chat):
            self._ready.set()
            await stop

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = [(k, v) for k, v in request.headers.raw_items()]
        self.paths.append(request.path)
        secrets = self.secrets
        if "X-Amz-Signature=" in request.path:
            host = next(v for k, v in headers if k.lower() == "host")
            theirs, ours = crt_query_signature("GET", f"http://{host}{request.path}", secrets)
            ok, reason = theirs == ours, "query signature " + ("ok" if theirs == ours else "mismatch")
        else:
            verdict = verify("GET", request.path, headers, b"", secrets, also_unsigned=HANDSHAKE)
            ok, reason = verdict.ok, verdict.reason
        self.verdicts.append(reason)
        if not ok:
            return connection.respond(HTTPStatus.FORBIDDEN, f"signature rejected: {reason}\n")
        return None

    async def _echo(self, websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(f"echo: {message}" if isinstance(message, str) else b"echo: " + message)
