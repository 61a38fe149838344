"""Fixtures that start real processes on 127.0.0.1: moto server (signature checking on),
mitmdump with the addon, and small local HTTP upstreams. Each waits for readiness and
always cleans up."""

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from proxysigv4_core.emulator import ACCOUNT, REGION, Moto, free_port, running_moto, stop, wait_for_port

__all__ = ["ACCOUNT", "REGION", "Moto", "free_port", "running_moto", "stop", "wait_for_port"]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[Moto]:
    with running_moto(tmp_path_factory.mktemp("moto")) as m:
        yield m


def bare_mitmdump_command(upstream_url: str, port: int, *args: str) -> list[str]:
    """mitmdump as a plain reverse proxy to `upstream_url` on 127.0.0.1:`port`, without this addon."""
    return [
        str(BIN / "mitmdump"),
        "--mode",
        f"reverse:{upstream_url}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        *args,
    ]


def mitmdump_command(config: Path, port: int, *args: str, program: str = "mitmdump") -> list[str]:
    return [
        str(BIN / program),
        "-s",
        str(ROOT / "addon" / "proxysigv4.py"),
        "--mode",
        "reverse:http://127.0.0.1:9",
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        "--set",
        f"proxysigv4_config={config}",
        *args,
    ]


@dataclass
class Proxy:
    url: str
    proc: subprocess.Popen
    log_path: Path
    config: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def aws_env(moto: Moto, **extra: str) -> dict[str, str]:
    """Environment for the proxy: the test user's keys, STS pointed at moto, no real config."""
    return moto.proxy_env(**extra)


@pytest.fixture
def start_proxy(tmp_path) -> Iterator[Callable[..., Proxy]]:
    """Start `mitmdump -s addon/proxysigv4.py` with a route table; returns a Proxy."""
    procs: list[subprocess.Popen] = []

    def start(routes: dict, env: dict[str, str], args: tuple[str, ...] = (), expect_exit: bool = False):
        config = tmp_path / f"routes{len(procs)}.yaml"
        config.write_text(yaml.safe_dump({"proxysigv4": routes}))
        port = free_port()
        log_path = tmp_path / f"mitmdump{len(procs)}.log"
        cmd = mitmdump_command(config, port, *args)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        procs.append(proc)
        proxy = Proxy(f"http://127.0.0.1:{port}", proc, log_path, config)
        if expect_exit:
            proc.wait(30)
            return proxy
        wait_for_port(port, proc)
        return proxy

    yield start
    for p in procs:
        stop(p)


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


class Upstream:
    """A local HTTP server that records what it receives and answers via a handler function."""

    def __init__(self, answer: Callable[[Received], tuple[int, list[tuple[str, str]], bytes]]):
        self.received: list[Received] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
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

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
