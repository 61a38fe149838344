"""AWS's refusals explained where a developer looks: `proxysigv4 demo --web` (mitmweb, moto with
IAM checks on) read over mitmweb's API and in Chromium; an API Gateway Invoke denial for another
principal than the route's role; and refused flows shown with the URL the client asked for."""

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import requests
import yaml

from helpers import get, proxy_env, route, running_mitmweb, sigv4_view_in_chromium, wait_for
from peers.fakests import FakeSTS
from peers.processes import BIN, bare_mitmdump_command, free_port, stop, wait_for_port
from peers.sigv4_verify import verify
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e
ROLE = "arn:aws:iam::123456789012:role/r"
INVOKE_DENIAL = (
    "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: execute-api:Invoke on resource: "
    "arn:aws:execute-api:eu-west-1:********9012:abcd1234/prod/GET/orders"
)


class Demo:
    """`proxysigv4 demo --web` in a child process, its output read as it comes."""

    def __init__(self) -> None:
        self.port, self.web_port = free_port(), free_port()
        cmd = [
            str(BIN / "proxysigv4"),
            "demo",
            "--web",
            "-p",
            str(self.port),
            "--web-port",
            str(self.web_port),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def demo():
    d = Demo()
    try:
        wait_for(lambda: "The proxy keeps running" in d.output or d.proc.poll() is not None, timeout=180)
        assert d.proc.poll() is None, d.output
        token = re.search(r"mitmweb: http://127\.0\.0\.1:\d+/\?token=(\S+)", d.output)[1]
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        yield d, session, token
    finally:
        stop(d.proc)


def flows(demo_session, web_port):
    r = demo_session.get(f"http://127.0.0.1:{web_port}/flows", timeout=10)
    r.raise_for_status()
    return r.json()


def test_demo_web_shows_signed_steps_and_both_diagnoses_in_mitmweb(demo):
    d, session, _ = demo
    assert re.search(r"(\d+) of \1 steps behaved as expected", d.output), d.output
    assert "UNEXPECTED" not in d.output
    assert 'choose "View: SigV4"' in d.output and "marked with a warning sign" in d.output
    listed = flows(session, d.web_port)
    signed = [f for f in listed if f["response"] and f["response"]["status_code"] == 200]
    assert len(signed) >= 6  # STS, assume-role STS, bucket, upload, read back, queue
    warned = [f for f in listed if f["marked"] == "⚠"]
    assert len(warned) == 2, [f["comment"] for f in warned]
    authz = next(f for f in warned if "authorization denied" in f["comment"])
    comment = authz["comment"]
    # moto's words: "User: arn:aws:sts::123456789012:assumed-role/reader-role/proxysigv4-demo is not
    # authorized to perform: sqs:CreateQueue" (no resource, no policy type)
    assert "AWS saw assumed role reader-role (arn:aws:sts::123456789012:assumed-role/reader-role/" in comment
    assert (
        "refused sqs:CreateQueue" in comment and "no identity-based policy allows sqs:CreateQueue" in comment
    )
    stmt = json.loads(re.search(r"identity-based policy: (\{.*?\})", comment)[1])
    assert stmt == {"Effect": "Allow", "Action": "sqs:CreateQueue", "Resource": "*"}  # AWS named no resource
    assert "the roleArn was not used" not in comment  # AWS saw the route's own role
    view = session.get(f"http://127.0.0.1:{d.web_port}/flows/{authz['id']}/request/content/sigv4.json").json()
    text = " ".join(view["text"].split())  # the detail is wrapped to mitmweb's pane
    assert "DIAGNOSIS (AccessDenied)" in text and "who AWS saw assumed role reader-role" in text
    assert "route /sqs-reader signs with role arn:aws:iam::123456789012:role/reader-role" in text
    assert "what sqs:CreateQueue" in text and "(resource not named by AWS)" in text
    assert "--- canonical request ---\nPOST\n/\n" in view["text"]
    changed = next(f for f in warned if f is not authz)
    assert "signature mismatch: the request was changed after signing" in changed["comment"]
    assert "/demo-bucket/changed-by-map-remote.txt" in changed["comment"]
    refused = next(f for f in listed if f["request"]["path"] == "/nowhere")
    assert (refused["request"]["scheme"], refused["request"]["host"], refused["request"]["port"]) == (
        "http",
        "127.0.0.1",
        d.port,
    )


def test_demo_web_authorization_diagnosis_in_chromium(demo, tmp_path):
    d, _, token = demo
    shot = Path(os.environ.get("PROXYSIGV4_DENIAL_SCREENSHOT") or tmp_path / "mitmweb-denial.png")
    content = sigv4_view_in_chromium(
        f"http://127.0.0.1:{d.web_port}/?token={token}",
        lambda page: page.locator("tr", has_text="403").filter(has_text="POST").first,
        "DIAGNOSIS (AccessDenied)",
        shot,
    )
    assert "no identity-based policy allows sqs:CreateQueue" in content
    assert '"Action": "sqs:CreateQueue"' in content
    assert shot.stat().st_size > 10_000


def test_demo_web_stops_on_ctrl_c():
    d = Demo()
    try:
        wait_for(lambda: "The proxy keeps running" in d.output or d.proc.poll() is not None, timeout=180)
        d.proc.send_signal(signal.SIGINT)
        assert d.proc.wait(20) == 0
        assert "stopping" in d.output
    finally:
        stop(d.proc)


def invoke_denied(received):
    """API Gateway with IAM authorization: checks the signature like AWS, then refuses the Invoke for
    another principal than the one that signed (as when the role was not the identity used)."""
    verdict = verify(received.method, received.target, received.headers, received.body, known_secrets())
    if not verdict.ok:
        return 403, [("content-type", "text/plain")], verdict.reason.encode()
    body = json.dumps({"Message": INVOKE_DENIAL}).encode()
    return 403, [("content-type", "application/json"), ("x-amzn-errortype", "AccessDeniedException")], body


STS = FakeSTS()


def known_secrets():
    return {k: (s, t) for k, (s, t, _) in STS.issued.items()}


def test_invoke_denial_for_another_principal_names_the_mismatch(tmp_path):
    with STS, Upstream(invoke_denied) as upstream:
        config = tmp_path / "routes.yaml"
        routes = {"/orders": route(upstream.url, roleArn=ROLE)}
        config.write_text(yaml.safe_dump({"proxysigv4": routes}))
        env = proxy_env(tmp_path) | {"AWS_ENDPOINT_URL_STS": STS.url}
        with running_mitmweb(config, tmp_path, env) as web:
            r = get(f"{web.proxy}/orders/prod/orders")
            assert r.status_code == 403 and r.json() == {"Message": INVOKE_DENIAL}  # AWS's answer, unchanged
            header = r.headers["x-proxysigv4-diagnosis"]
            mismatch = f"the route assumes role {ROLE} (the route's roleArn), but AWS saw user ci: the roleArn was not used"
            assert mismatch in header
            assert (
                "execute-api:Invoke" in header
                and "arn:aws:execute-api:eu-west-1:********9012:abcd1234" in header
            )
            flow = wait_for(lambda: next((f for f in web.get("/flows") if f["marked"] == "⚠"), None))
            assert mismatch in flow["comment"]
            text = " ".join(web.get(f"/flows/{flow['id']}/request/content/sigv4.json")["text"].split())
            assert "who AWS saw user ci (arn:aws:iam::123456789012:user/ci)" in text
            assert "resolved: assume-role, key ASIA…0001" in text
            assert "ASIAFAKESTS00001" not in text + flow["comment"] + header  # no full key id
            assert all(secret not in text for secret, _, _ in STS.issued.values())
            key = next(iter(STS.issued))
            assert f"Credential={key}/" in dict(upstream.received[-1].headers)["Authorization"]


def test_refused_flow_in_mitmdumps_list_shows_the_url_the_client_asked_for(start_proxy, tmp_path):
    proxy = start_proxy(
        {"/api": route("https://abc.execute-api.eu-west-1.amazonaws.com")}, proxy_env(tmp_path)
    )
    assert get(f"{proxy.url}/nowhere?x=1").status_code == 404
    port = proxy.url.rsplit(":", 1)[1]
    line = wait_for(lambda: re.search(r".*GET http://\S*/nowhere\?x=1", proxy.log()))
    assert f"GET http://127.0.0.1:{port}/nowhere?x=1" in line[0], line[0]
    assert "127.0.0.1:9/" not in proxy.log()


def test_bare_mitmdump_lists_the_reverse_target(tmp_path):
    """What mitmproxy itself shows for a reverse listener's request (the comparison for the test above)."""
    port = free_port()
    # lazy: eager would drop the client at once (nothing listens on :9)
    cmd = bare_mitmdump_command("http://127.0.0.1:9", port, "--set", "connection_strategy=lazy")
    log = tmp_path / "bare.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        assert requests.get(f"http://127.0.0.1:{port}/nowhere", timeout=10).status_code == 502
        wait_for(lambda: "/nowhere" in log.read_text())
        assert "GET http://127.0.0.1:9/nowhere" in log.read_text()
    finally:
        stop(proc)
