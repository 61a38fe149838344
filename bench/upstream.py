"""A fast local HTTP/1.1 upstream for the throughput benchmark (run as its own process).

Keep-alive, Content-Length bodies only, a small JSON answer. It must never be the bottleneck:
the benchmark measures its direct throughput too. It counts requests per path prefix, how many
carried a SigV4 Authorization header, and keeps a few samples (headers and body) per prefix and
method so the benchmark can verify the signatures it received: `GET /__stats` returns all that.

    python bench/upstream.py PORT
"""

import asyncio
import base64
import json
import sys
from collections import Counter

ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-amzn-requestid: bench\r\n"
    b'content-length: 11\r\n\r\n{"ok":true}'
)
SAMPLE_EVERY = 500  # besides the first request of each (prefix, method)

counts: Counter = Counter()
signed: Counter = Counter()
samples: list[dict] = []
connections = Counter()


def _stats_answer() -> bytes:
    body = json.dumps(
        {"counts": counts, "signed": signed, "connections": connections, "samples": samples}
    ).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class Server(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = bytearray()
        self.need: int | None = None
        self.head: bytes = b""
        self.counted = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = bytes(self.buf[:end])
                del self.buf[: end + 4]
                self.need = 0
                for line in self.head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        self.need = int(value)
            if len(self.buf) < self.need:
                return
            body = bytes(self.buf[: self.need])
            del self.buf[: self.need]
            self.need = None
            self._answer(body)

    def _answer(self, body: bytes) -> None:
        request_line, *lines = self.head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        if target == "/__stats":
            self.transport.write(_stats_answer())
            return
        key = f"{target.split('/')[1]} {method}"
        counts[key] += 1
        if not self.counted:  # connections per path prefix: keep-alive reuse shows here
            self.counted = True
            connections[target.split("/")[1]] += 1
        headers = [(n.strip(), v.strip()) for n, _, v in (h.partition(":") for h in lines)]
        if any(n.lower() == "authorization" and v.startswith("AWS4-HMAC-SHA256 ") for n, v in headers):
            signed[key] += 1
        if counts[key] == 1 or counts[key] % SAMPLE_EVERY == 0:
            samples.append(
                {
                    "method": method,
                    "target": target,
                    "headers": headers,
                    "body": base64.b64encode(body).decode(),
                }
            )
        self.transport.write(ANSWER)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
