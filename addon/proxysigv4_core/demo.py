"""`proxysigv4 demo`: a local AWS emulator that checks signatures, the proxy in front of it, and a
handful of unsigned requests that come back signed and accepted; one the emulator refuses for
authorization (explained); one tampered request that is rejected. `--web` runs the proxy under
mitmweb, where a request changed after signing (by map_remote) is diagnosed too. Needs no network
and no AWS account."""

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .emulator import REGION, Moto, free_port, running_moto, stop, wait_for_port

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
STS_CALL = b"Action=GetCallerIdentity&Version=2011-06-15"
FORM = {"content-type": "application/x-www-form-urlencoded"}
DIAGNOSIS_HEADER = "x-proxysigv4-diagnosis"
Out = Callable[[str], None]  # where the demo writes its lines (print, or a test's list)
# Under mitmweb: mitmproxy's map_remote rewrites this object's path after the proxy signed it.
CHANGED = "changed-after-signing"
MAP_REMOTE = f"|~u {CHANGED}|{CHANGED}|changed-by-map-remote"
SCRIPT = "from proxysigv4_core import ProxySigV4\n\naddons = [ProxySigV4()]\n"


@dataclass
class Step:
    title: str
    method: str
    path: str
    body: bytes = b""
    headers: dict | None = None
    status: int = 200
    expect: str = ""
    web_only: bool = False  # needs map_remote after signing: mitmweb -s only


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
        "Authorization: the read-only role may list queues, not create one (AWS's refusal explained)",
        "POST",
        "/sqs-reader/",
        b"Action=CreateQueue&QueueName=reader-queue&Version=2012-11-05",
        FORM,
        status=403,
        expect="is not authorized to perform: sqs:CreateQueue",
    ),
    Step(
        "Signature: mitmproxy's map_remote rewrites this path after signing (the mismatch explained)",
        "GET",
        f"/s3/demo-bucket/{CHANGED}.txt",
        status=403,
        expect="SignatureDoesNotMatch",
        web_only=True,
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
    """The proxy in a child process (`proxysigv4 run`, or `mitmweb -s` with `web_port`), its log
    lines collected for display."""

    def __init__(self, moto: Moto, port: int, workdir: Path, web_port: int = 0) -> None:
        env = moto.proxy_env(DEMO_AWS_ENDPOINT=moto.url)
        self.port, self.web_port = port, web_port
        self.url = f"http://127.0.0.1:{port}"
        self.token = secrets.token_urlsafe(16)
        self.lines: list[str] = []
        cmd = _mitmweb_command(workdir, port, web_port, self.token) if web_port else _run_command(port)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, cwd=workdir
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_for_port(port, self.proc)
        if web_port:
            wait_for_port(web_port, self.proc)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/?token={self.token}"

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


def _run_command(port: int) -> list[str]:
    cli = [sys.executable, "-m", "proxysigv4_core.cli", "run", "-c", str(DEMO_CONFIG)]
    return [*cli, "-p", str(port), "-v"]


def _mitmweb_command(workdir: Path, port: int, web_port: int, token: str) -> list[str]:
    """mitmweb with the addon as a `-s` script (as a developer runs it), and map_remote."""
    script = workdir / "proxysigv4_demo_script.py"
    script.write_text(SCRIPT)
    options = {
        "proxysigv4_config": DEMO_CONFIG,
        "proxysigv4_verbose": "true",
        "web_port": web_port,
        "web_host": "127.0.0.1",
        "web_open_browser": "false",
        "web_password": token,
        "map_remote": MAP_REMOTE,
    }
    mitmweb = Path(sys.executable).parent / "mitmweb"
    cmd = [str(mitmweb), "-s", str(script), "--mode", "reverse:http://127.0.0.1:9"]
    cmd += ["--listen-host", "127.0.0.1", "-p", str(port)]
    for name, value in options.items():
        cmd += ["--set", f"{name}={value}"]
    return cmd


def send(url: str, method: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, str, str]:
    """Status, body and the proxy's diagnosis header (empty when there is none)."""
    request = urllib.request.Request(url, data=body or None, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as e:
        diagnosis = e.headers.get(DIAGNOSIS_HEADER, "")
        return e.code, e.read().decode("utf-8", "replace"), diagnosis


def tampered_call(moto: Moto) -> tuple[int, str, str]:
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


def run_demo(
    port: int = 0, once: bool = False, out: Out = print, web: bool = False, web_port: int = 0
) -> int:
    """Run the demo; with `once`, exit after the scripted requests (0 if all went as expected).
    With `web`, the proxy runs under mitmweb (on `web_port`, or a free one)."""
    # SIGTERM unwinds like Ctrl-C, so the emulator and the proxy are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp, running_moto(Path(tmp)) as moto:
        out(f"local AWS emulator (moto, signature checking on) at {moto.url}")
        proxy = Proxy(moto, port or free_port(), Path(tmp), (web_port or free_port()) if web else 0)
        try:
            under = f"mitmweb at {proxy.web_url}" if web else "proxysigv4 run"
            out(f"proxysigv4 at {proxy.url} ({under}) with {DEMO_CONFIG.name}: /s3, /sqs, /sqs-reader, /sts,")
            out("/as-role -> the emulator\n")
            failures, total = run_steps(proxy, moto, web, out)
            out(f"{total - failures} of {total} steps behaved as expected")
            if once:
                return 0 if failures == 0 else 1
            if web:
                guide_to_mitmweb(proxy, moto, out)
            else:
                show_commands(proxy, out)
            try:
                proxy.proc.wait()
            except KeyboardInterrupt:
                out("\nstopping")
            return 0
        finally:
            stop(proxy.proc)


def run_steps(proxy: Proxy, moto: Moto, web: bool, out: Out) -> tuple[int, int]:
    """Each step through the proxy, then the tampered call straight to the emulator: (failures, total)."""
    steps = [step for step in STEPS if web or not step.web_only]
    failures = 0
    for n, step in enumerate(steps, 1):
        status, text, diagnosis = send(proxy.url + step.path, step.method, step.body, step.headers)
        ok = status == step.status and step.expect in text
        failures += not ok
        out(f"{n}. {step.title}\n   sent    {step.method} {step.path} (unsigned)")
        out(f"   signed  {proxy.log_for(step.method, step.path)}")
        out(f"   got     {_show(status, text)}  {'ok' if ok else 'UNEXPECTED'}")
        if diagnosis:
            out(f"   why     {diagnosis}")
        out("")
    status, text, _ = tampered_call(moto)
    ok = status == 403 and "SignatureDoesNotMatch" in text
    failures += not ok
    out(f"{len(steps) + 1}. A request signed correctly, then one signature digit changed, sent")
    out(f"   straight to the emulator\n   got     {_show(status, text)}  {'ok' if ok else 'UNEXPECTED'}\n")
    return failures, len(steps) + 1


def show_commands(proxy: Proxy, out: Out) -> None:
    out("\nThe proxy keeps running; try (Ctrl-C to stop):")
    out(f"  curl -s -X POST {proxy.url}/sts/ -d '{STS_CALL.decode()}'")
    out(f"  curl -s -X POST {proxy.url}/as-role/ -d '{STS_CALL.decode()}'")
    out(f"  curl -s '{proxy.url}/s3/demo-bucket/hello%20world%2B1.txt'")
    out(f"  curl -s '{proxy.url}/s3/demo-bucket?list-type=2'")
    out(f"  aws --endpoint-url {proxy.url}/s3 --no-sign-request s3 ls s3://demo-bucket/")
    out(
        "  proxysigv4 demo --web    # the same under mitmweb: every signed call, and AWS's refusals explained"
    )


def guide_to_mitmweb(proxy: Proxy, moto: Moto, out: Out) -> None:
    """Where to look in mitmweb; the browser is opened only where there is a display."""
    out(f"\nmitmweb: {proxy.web_url}")
    out("In its flow list, the two flows marked with a warning sign are AWS's refusals, explained:")
    out(
        f"  POST {moto.url}/  403    authorization: who AWS saw, what it refused, the policy statement to add"
    )
    out(f"  GET  {moto.url}/demo-bucket/changed-by-map-remote.txt  403    signature: changed after signing")
    out('Click one, open its Request tab and choose "View: SigV4": the diagnosis on top, then the')
    out("canonical request and string to sign as signed. The explanation is also the flow's comment.")
    out(f"The proxy keeps running (Ctrl-C to stop); requests to {proxy.url} appear there too.")
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform in ("darwin", "win32"):
        webbrowser.open(proxy.web_url)
