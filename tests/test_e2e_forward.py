"""Host routes through mitmproxy's forward (regular) mode, over HTTPS: an app that only honours
HTTPS_PROXY keeps its own URLs; requests to a host route's host are signed for that same host (the
client's own signature replaced), others pass through untouched. A local TLS upstream holds
certificates for AWS-looking names from a test CA that mitmproxy is told to trust; a test-only
script connects those names to it (there is no DNS here), the SNI and Host staying the names."""

import contextlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from helpers import KEY, SECRET, proxy_env
from peers.processes import BIN, ROOT, free_port, stop, wait_for_port
from peers.sigv4_verify import verify
from peers.tls import make_ca_and_server_cert, serve_tls
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e
API = "abc123.execute-api.eu-west-1.amazonaws.com"
SQS = "sqs.eu-west-1.amazonaws.com"
OTHER = "other.example.com"
RESOLVER = """
from mitmproxy import http

NAMES = {names!r}


class Resolver:
    def server_connect(self, data):
        if data.server.address and data.server.address[0] in NAMES:
            data.server.address = ("127.0.0.1", {port})


addons = [Resolver()]
"""


def answer(received):
    """Like AWS: 200 when the signature verifies (SQS's JSON answer to ListQueues), else 403."""
    verdict = verify(received.method, received.target, received.headers, received.body, {KEY: (SECRET, None)})
    body = {"QueueUrls": [], "verdict": verdict.reason}
    return (
        (200 if verdict.ok else 403),
        [("content-type", "application/x-amz-json-1.0")],
        json.dumps(body).encode(),
    )


@pytest.fixture
def forward(tmp_path):
    """mitmdump in regular mode with the addon and two host routes, its CA in tmp_path/conf."""
    pem = make_ca_and_server_cert(tmp_path, (API, SQS, OTHER))
    with Upstream(answer) as upstream:
        serve_tls(upstream.server, pem)
        resolver = tmp_path / "resolver.py"
        resolver.write_text(RESOLVER.format(names=[API, SQS, OTHER], port=upstream.port))
        config = tmp_path / "routes.yaml"
        routes = {"https://*.execute-api.eu-west-1.amazonaws.com": {}, f"https://{SQS}": {}}
        config.write_text(yaml.safe_dump({"proxysigv4": routes}))
        port = free_port()
        cmd = [str(BIN / "mitmdump"), "-s", str(ROOT / "addon" / "proxysigv4.py"), "-s", str(resolver)]
        cmd += ["--mode", "regular", "--listen-host", "127.0.0.1", "-p", str(port)]
        cmd += ["--set", f"proxysigv4_config={config}", "--set", f"confdir={tmp_path / 'conf'}"]
        cmd += ["--set", f"ssl_verify_upstream_trusted_ca={pem['ca']}"]
        log = open(tmp_path / "mitmdump.log", "wb")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=proxy_env(tmp_path), cwd=tmp_path
        )
        try:
            wait_for_port(port, proc)
            yield port, tmp_path / "conf" / "mitmproxy-ca-cert.pem", upstream
        finally:
            stop(proc)


def _client_env():
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("AWS_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"))
    }


def _curl(port, ca, url, *headers) -> tuple[int, str]:
    """curl through the proxy, trusting its CA: the final answer's status and body."""
    args = ["curl", "-s", "--cacert", str(ca), "-x", f"http://127.0.0.1:{port}", "-w", "\n%{http_code}", url]
    for header in headers:
        args += ["-H", header]
    done = subprocess.run(args, capture_output=True, text=True, env=_client_env(), timeout=30)
    body, _, status = done.stdout.rpartition("\n")
    return int(status or 0), body + done.stderr


def test_curl_through_the_forward_proxy_is_signed_for_the_hosts_own_service_and_region(forward):
    port, ca, upstream = forward
    status, body = _curl(port, ca, f"https://{API}/prod/pets?b=1&a=2")
    assert status == 200 and '"verdict": "ok"' in body, body
    got = upstream.received[-1]
    headers = {k.lower(): v for k, v in got.headers}
    assert got.target == "/prod/pets?b=1&a=2" and headers["host"] == API
    assert f"Credential={KEY}/" in headers["authorization"]
    assert "/eu-west-1/execute-api/aws4_request" in headers["authorization"]
    # a request the client had signed with other keys is signed again
    other = "AWS4-HMAC-SHA256 Credential=AKIAOTHERKEY/20260101/eu-west-1/execute-api/aws4_request, SignedHeaders=host, Signature=00"
    status, body = _curl(
        port, ca, f"https://{API}/prod/again", f"Authorization: {other}", "X-Amz-Date: 20260101T000000Z"
    )
    assert status == 200 and '"verdict": "ok"' in body, body
    assert "AKIAOTHERKEY" not in {k.lower(): v for k, v in upstream.received[-1].headers}["authorization"]
    # a host no host route names passes through as the client sent it, unsigned
    status, body = _curl(port, ca, f"https://{OTHER}/x", "Authorization: Bearer its-own")
    assert status == 403 and "malformed Authorization: 'Bearer its-own'" in body, body
    headers = {k.lower(): v for k, v in upstream.received[-1].headers}
    assert headers["authorization"] == "Bearer its-own" and "x-amz-date" not in headers
    assert len(upstream.received) == 3


BOTO3_CALL = """
import boto3, json
from botocore import UNSIGNED
from botocore.config import Config
sqs = boto3.client("sqs", region_name="eu-west-1", config=Config(signature_version=UNSIGNED))
print(json.dumps(sqs.list_queues()["ResponseMetadata"]["HTTPStatusCode"]))
"""


def test_boto3_with_https_proxy_and_the_ca_bundle_is_signed_for_sqs(forward):
    port, ca, upstream = forward
    env = _client_env() | {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "AWS_CA_BUNDLE": str(ca)}
    env |= {
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", BOTO3_CALL], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "200", done.stdout + done.stderr
    got = upstream.received[-1]
    headers = {k.lower(): v for k, v in got.headers}
    assert headers["host"] == SQS and "/eu-west-1/sqs/aws4_request" in headers["authorization"]
    assert headers["x-amz-target"] == "AmazonSQS.ListQueues"


HOSTILE = """<!doctype html><title>hostile</title><body><iframe name="sink"></iframe><script>
const api = "https://API/prod";
window.attempts = async () => {
  const out = {};
  const form = document.createElement("form");
  form.method = "POST"; form.action = api + "/form"; form.target = "sink";
  const input = document.createElement("input"); input.name = "Action"; input.value = "x"; form.appendChild(input);
  document.body.appendChild(form); form.submit();
  await new Promise(r => { document.querySelector("iframe").onload = r; setTimeout(r, 3000); });
  try { const r = await fetch(api + "/no-cors", {method: "POST", mode: "no-cors", body: "x",
        headers: {"content-type": "text/plain"}}); out.nocors = r.type; } catch (e) { out.nocors = "error"; }
  out.img = await new Promise(r => { const i = new Image(); i.onload = () => r("loaded");
        i.onerror = () => r("error"); i.src = api + "/img"; });
  return out;
};
</script>"""


def test_a_hostile_page_in_a_browser_using_the_forward_proxy_cannot_make_a_host_route_sign(forward, tmp_path):
    from helpers import chromium

    port, _, upstream = forward
    with Upstream(
        lambda r: (200, [("content-type", "text/html")], HOSTILE.replace("API", API).encode())
    ) as pages:
        with chromium(f"--proxy-server=http://127.0.0.1:{port}") as browser:
            context = browser.new_context(ignore_https_errors=True)  # mitmproxy's CA, not installed
            page = context.new_page()
            page.goto(f"http://localhost:{pages.port}/hostile.html")  # loopback: not proxied
            result = page.evaluate("window.attempts()")
            assert upstream.received == [], [r.target for r in upstream.received]
            typed = context.new_page()  # the control: a URL the developer types is signed
            with typed.expect_download():  # the JSON answer is offered as a download
                with contextlib.suppress(Exception):
                    typed.goto(f"https://{API}/prod/typed")
    assert [r.target for r in upstream.received] == ["/prod/typed"], result
    got = upstream.received[0]
    assert verify(got.method, got.target, got.headers, got.body, {KEY: (SECRET, None)}).ok
