"""A small HTTP/1.1 load generator. `run`: N keep-alive connections (asyncio), each sending the
same request back to back for a fixed time, recording every latency; enough for the ~1000 req/s
that mitmproxy forwards, and it reports its own ceiling when pointed straight at the upstream.
`alternate`: one client taking turns between several proxies, for their latencies side by side."""

import asyncio
import socket
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    name: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def wire(self, host: str) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.body or self.method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]  # seconds

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0] * 1000
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(p) - 1] * 1000


def _body_length(head: bytes) -> int:
    """The Content-Length of a response head (0 without one: the upstream always sends it)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return length


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = _body_length(head)
    if length:
        await reader.readexactly(length)
    return int(head[9:12])


async def _worker(port: int, wire: bytes, warm_until: float, stop_at: float, result: Result) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    clock = time.perf_counter
    try:
        while True:
            t0 = clock()
            if t0 >= stop_at:
                return
            writer.write(wire)
            await writer.drain()
            status = await _read_response(reader)
            t1 = clock()
            if t0 >= warm_until:
                if status == 200:
                    result.requests += 1
                    result.latencies.append(t1 - t0)
                else:
                    result.errors += 1
    finally:
        writer.close()


async def run_async(port: int, request: Request, clients: int, seconds: float, warmup: float) -> Result:
    wire = request.wire(f"127.0.0.1:{port}")
    start = time.perf_counter()
    warm_until, stop_at = start + warmup, start + warmup + seconds
    result = Result(0, 0, 0.0, [])
    outcomes = await asyncio.gather(
        *(_worker(port, wire, warm_until, stop_at, result) for _ in range(clients)), return_exceptions=True
    )
    result.errors += sum(1 for o in outcomes if isinstance(o, BaseException))
    result.seconds = max(time.perf_counter(), stop_at) - warm_until
    return result


def run(port: int, request: Request, clients: int, seconds: float, warmup: float = 0.3) -> Result:
    """Send `request` from `clients` keep-alive connections for `seconds` after `warmup`."""
    return asyncio.run(run_async(port, request, clients, seconds, warmup))


def alternate(
    ports: dict[str, int], request: Request, seconds: float, warmup: int = 20
) -> dict[str, list[float]]:
    """One client with a keep-alive connection to each of `ports`, sending `request` to one after
    the other (the order rotates every cycle) for `seconds` (at least 3 cycles): each set-up's
    latencies (seconds), cycle by cycle. Measured milliseconds apart, the set-ups see the same
    machine: its speed changes (this VM drifts by +-30%) hit them alike and cancel out of the
    per-cycle differences. Raises if an answer is not 200."""
    names = list(ports)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    conns = {name: socket.create_connection(("127.0.0.1", port), timeout=30) for name, port in ports.items()}
    try:
        for conn in conns.values():
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wires = {name: request.wire(f"127.0.0.1:{port}") for name, port in ports.items()}

        def cycle(n: int) -> list[tuple[str, float]]:
            timed = []
            for name in names[n % len(names) :] + names[: n % len(names)]:
                t0 = time.perf_counter()
                conns[name].sendall(wires[name])
                status = _read_response_sync(conns[name])
                timed.append((name, time.perf_counter() - t0))
                if status != 200:
                    raise RuntimeError(f"{name}: HTTP {status} for {request.name}")
            return timed

        for n in range(warmup):
            cycle(n)
        stop_at, n = time.perf_counter() + seconds, 0
        while n < 3 or time.perf_counter() < stop_at:
            for name, latency in cycle(n):
                latencies[name].append(latency)
            n += 1
        return latencies
    finally:
        for conn in conns.values():
            conn.close()


def _read_response_sync(conn: socket.socket) -> int:
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        data += chunk
    head = data[:end]
    length = _body_length(head)
    received = len(data) - end - 4
    while received < length:
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed before the response body")
        received += len(chunk)
    return int(head[9:12])
