"""Fixtures that start real processes on 127.0.0.1: moto server (signature checking on),
mitmdump with the addon, and small local HTTP upstreams. Each waits for readiness and
always cleans up."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REGION = "us-east-1"
ACCOUNT = "123456789012"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Moto:
    url: str
    access_key: str
    secret_key: str
    role_arn: str
    denied_role_arn: str

    def set_auth(self, enabled: bool) -> None:
        requests.post(
            f"{self.url}/moto-api/reset-auth",
            data=b"0" if enabled else b"inf",
            headers={"content-type": "text/plain"},
            timeout=10,
        ).raise_for_status()

    def client(self, service: str, **kw):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=kw.pop("access_key", self.access_key),
            aws_secret_access_key=kw.pop("secret_key", self.secret_key),
            **kw,
        )


@contextlib.contextmanager
def running_moto(log_dir: Path) -> Iterator[Moto]:
    """moto server with IAM authentication on: bad or missing signatures are rejected."""
    port = free_port()
    log = open(log_dir / "moto.log", "wb")
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for_port(port, proc)
        url = f"http://127.0.0.1:{port}"
        m = Moto(url, "", "", "", "")
        m.set_auth(False)
        iam = m.client("iam", access_key="setup", secret_key="setup")
        iam.create_user(UserName="proxy-user")
        iam.put_user_policy(
            UserName="proxy-user",
            PolicyName="allow-all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="proxy-user")["AccessKey"]
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/proxy-user"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = iam.create_role(RoleName="proxy-role", AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(
            RoleName="proxy-role",
            PolicyName="allow-all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        m = Moto(
            url,
            key["AccessKeyId"],
            key["SecretAccessKey"],
            role["Role"]["Arn"],
            f"arn:aws:iam::{ACCOUNT}:role/does-not-exist",
        )
        m.set_auth(True)
        yield m
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[Moto]:
    with running_moto(tmp_path_factory.mktemp("moto")) as m:
        yield m


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=moto.access_key,
        AWS_SECRET_ACCESS_KEY=moto.secret_key,
        AWS_ENDPOINT_URL_STS=moto.url,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


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
