"""`proxysigv4 demo`: a local AWS emulator that checks signatures, the proxy in front of it, and a
handful of unsigned requests that come back signed and accepted; one tampered request that is
rejected. Needs no network and no AWS account."""

import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .emulator import REGION, Moto, free_port, running_moto, stop, wait_for_port

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
STS_CALL = b"Action=GetCallerIdentity&Version=2011-06-15"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class Step:
    title: str
    method: str
    path: str
    body: bytes = b""
    headers: dict | None = None
    status: int = 200
    expect: str = ""


STEPS = [
    Step(
        "Who am I? STS GetCallerIdentity, signed with the demo user's keys",
        "POST",
        "/sts/",
        STS_CALL,
        FORM,
        expect="user/proxy-user",
    ),
    Step(
        "The same through the assume-role route: temporary credentials from STS",
        "POST",
        "/as-role/",
        STS_CALL,
        FORM,
        expect="assumed-role/proxy-role/proxysigv4-demo",
    ),
    Step("S3: create a bucket", "PUT", "/s3/demo-bucket"),
    Step(
        "S3: upload an object whose key needs encoding",
        "PUT",
        "/s3/demo-bucket/hello%20world+1.txt",
        b"hello from proxysigv4\n",
        {"content-type": "text/plain"},
    ),
    Step("S3: read it back", "GET", "/s3/demo-bucket/hello%20world%2B1.txt", expect="hello from proxysigv4"),
    Step(
        "SQS: create a queue (query protocol)",
        "POST",
        "/sqs/",
        b"Action=CreateQueue&QueueName=demo-queue&Version=2012-11-05",
        FORM,
        expect="demo-queue",
    ),
    Step(
        "A path no route matches: answered by the proxy, never forwarded",
        "GET",
        "/nowhere",
        status=404,
        expect="no_route",
    ),
]


class Proxy:
    """`proxysigv4 run` in a child process, its log lines collected for display."""

    def __init__(self, moto: Moto, port: int) -> None:
        env = moto.proxy_env(DEMO_AWS_ENDPOINT=moto.url)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        cmd = [
            sys.executable,
            "-m",
            "proxysigv4_core.cli",
            "run",
            "-c",
            str(DEMO_CONFIG),
            "-p",
            str(port),
            "-v",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_for_port(port, self.proc)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def log_for(self, method: str, path: str, timeout: float = 3.0) -> str:
        needle = f"{method} {path} -> "
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if needle in line]
            if found:
                return found[-1].split("] ", 1)[-1]
            time.sleep(0.05)
        return "(no log line)"


def send(url: str, method: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body or None, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def tampered_call(moto: Moto) -> tuple[int, str]:
    """ListBuckets straight to the emulator, correctly signed, then one signature digit changed."""
    request = AWSRequest(method="GET", url=moto.url + "/")
    SigV4Auth(Credentials(moto.access_key, moto.secret_key), "s3", REGION).add_auth(request)
    headers = dict(request.headers.items())
    signature = headers["Authorization"][-1]
    headers["Authorization"] = headers["Authorization"][:-1] + ("0" if signature != "0" else "1")
    return send(moto.url + "/", "GET", headers=headers)


def _show(status: int, text: str) -> str:
    flat = " ".join(text.split())
    return f"{status}  {flat[:110]}{'…' if len(flat) > 110 else ''}"


def run_demo(port: int = 0, once: bool = False, out=print) -> int:
    """Run the demo; with `once`, exit after the scripted requests (0 if all went as expected)."""
    # SIGTERM unwinds like Ctrl-C, so the emulator and the proxy are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp, running_moto(Path(tmp)) as moto:
        out(f"local AWS emulator (moto, signature checking on) at {moto.url}")
        proxy = Proxy(moto, port or free_port())
        try:
            routes = "/s3, /sqs, /sts, /as-role -> the emulator"
            out(f"proxysigv4 at {proxy.url} with {DEMO_CONFIG.name}: {routes}\n")
            failures = 0
            for n, step in enumerate(STEPS, 1):
                status, text = send(proxy.url + step.path, step.method, step.body, step.headers)
                ok = status == step.status and step.expect in text
                failures += not ok
                out(f"{n}. {step.title}\n   sent    {step.method} {step.path} (unsigned)")
                out(f"   signed  {proxy.log_for(step.method, step.path)}")
                out(f"   got     {_show(status, text)}  {'ok' if ok else 'UNEXPECTED'}\n")
            status, text = tampered_call(moto)
            ok = status == 403 and "SignatureDoesNotMatch" in text
            failures += not ok
            out(f"{len(STEPS) + 1}. A request signed correctly, then one signature digit changed, sent")
            verdict = "ok" if ok else "UNEXPECTED"
            out(f"   straight to the emulator\n   got     {_show(status, text)}  {verdict}\n")
            total = len(STEPS) + 1
            out(f"{total - failures} of {total} steps behaved as expected")
            if once:
                return 0 if failures == 0 else 1
            out("\nThe proxy keeps running; try (Ctrl-C to stop):")
            out(f"  curl -s -X POST {proxy.url}/sts/ -d '{STS_CALL.decode()}'")
            out(f"  curl -s -X POST {proxy.url}/as-role/ -d '{STS_CALL.decode()}'")
            out(f"  curl -s '{proxy.url}/s3/demo-bucket/hello%20world%2B1.txt'")
            out(f"  curl -s '{proxy.url}/s3/demo-bucket?list-type=2'")
            out(f"  aws --endpoint-url {proxy.url}/s3 --no-sign-request s3 ls s3://demo-bucket/")
            try:
                proxy.proc.wait()
            except KeyboardInterrupt:
                out("\nstopping")
            return 0
        finally:
            stop(proxy.proc)
