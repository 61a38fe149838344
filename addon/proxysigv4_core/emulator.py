"""A local AWS for the demo and the tests: moto server on 127.0.0.1 with signature checking on,
a throwaway IAM user (all actions allowed), a role it may assume, and a read-only role (SQS list
only) whose other calls moto's IAM checks refuse."""

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
_ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
_LIST_QUEUES_ONLY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}]}
)
READER_ROLE = "reader-role"


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
    access_key: str = ""
    secret_key: str = ""
    role_arn: str = ""
    reader_role_arn: str = ""  # may only list SQS queues

    def set_auth(self, enabled: bool) -> None:
        """moto's switch for IAM checks: on, bad or missing signatures are rejected."""
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=b"0" if enabled else b"inf",
            headers={"content-type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def proxy_env(self, **extra: str) -> dict[str, str]:
        """Environment for a proxy using the emulator: the user's keys, STS pointed at moto, and
        no AWS configuration of the machine's own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_ENDPOINT_URL_STS=self.url,
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def client(self, service: str, **kw: str) -> Any:  # boto3 makes a client's operations at run time
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=kw.pop("access_key", self.access_key),
            aws_secret_access_key=kw.pop("secret_key", self.secret_key),
            **kw,
        )


def moto_available() -> bool:
    return importlib.util.find_spec("moto") is not None


@contextlib.contextmanager
def running_moto(log_dir: Path) -> Iterator[Moto]:
    """Start moto server with IAM authentication on, a user `proxy-user` and a role `proxy-role`."""
    if not moto_available():
        raise RuntimeError("moto is not installed: pip install 'moto[server]' (or make install)")
    port = free_port()
    log = open(log_dir / "moto.log", "wb")
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for_port(port, proc)
        moto = Moto(f"http://127.0.0.1:{port}")
        moto.set_auth(False)
        iam = moto.client("iam", access_key="setup", secret_key="setup")
        iam.create_user(UserName="proxy-user")
        iam.put_user_policy(UserName="proxy-user", PolicyName="allow-all", PolicyDocument=_ALLOW_ALL)
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
        iam.put_role_policy(RoleName="proxy-role", PolicyName="allow-all", PolicyDocument=_ALLOW_ALL)
        reader = iam.create_role(RoleName=READER_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(RoleName=READER_ROLE, PolicyName="list-queues", PolicyDocument=_LIST_QUEUES_ONLY)
        moto = Moto(
            moto.url, key["AccessKeyId"], key["SecretAccessKey"], role["Role"]["Arn"], reader["Role"]["Arn"]
        )
        moto.set_auth(True)
        yield moto
    finally:
        stop(proc)
        log.close()
