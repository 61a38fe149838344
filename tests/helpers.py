"""Helpers the end-to-end tests share: mitmweb with the addon, driven over its API, and the
Chromium settings for browser tests."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from peers.processes import free_port, mitmdump_command, stop, wait_for_port
from peers.sigv4_verify import verify
from peers.upstream import verify_then_answer as peers_verify_then_answer
from proxysigv4_core.config import parse_config

PASSWORD = "web-test-password"
# The static credentials the proxies under test sign with, and the verifying upstreams check.
KEY, SECRET = "AKIAPROXYTEST0001", "proxy/test+secret"
ENV_CREDS = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
CHROMIUM = "/usr/bin/chromium"
# Flags for a closed network: no background calls home, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Web:
    proxy: str
    api: str
    proc: subprocess.Popen
    log: Path
    session: requests.Session

    def get(self, path: str):
        r = self.session.get(self.api + path, timeout=10)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, json=None):
        xsrf = self.session.cookies.get("_mitmproxy_xsrf")
        r = self.session.post(self.api + path, json=json, headers={"X-XSRFToken": xsrf}, timeout=10)
        r.raise_for_status()
        return r.json() if r.content else None

    def flow(self, path_part: str) -> dict:
        return next(f for f in reversed(self.get("/flows")) if path_part in f["request"]["path"])


@contextlib.contextmanager
def running_mitmweb(config: Path, tmp_path: Path, env: dict[str, str], *extra: str) -> Iterator[Web]:
    """mitmweb with the addon and `config`, its API authenticated (password, XSRF cookie)."""
    port, web_port = free_port(), free_port()
    args = (
        "--set",
        f"web_port={web_port}",
        "--set",
        "web_host=127.0.0.1",
        "--set",
        "web_open_browser=false",
        "--set",
        f"web_password={PASSWORD}",
        *extra,
    )
    log = tmp_path / "mitmweb.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            mitmdump_command(config, port, *args, program="mitmweb"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        wait_for_port(port, proc)
        wait_for_port(web_port, proc)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {PASSWORD}"
        session.get(f"http://127.0.0.1:{web_port}/", timeout=10).raise_for_status()
        # Tornado's XSRF check is a double submit: any cookie value repeated in X-XSRFToken.
        session.cookies.set("_mitmproxy_xsrf", "proxysigv4-test-xsrf", domain="127.0.0.1")
        yield Web(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{web_port}", proc, log, session)
    finally:
        stop(proc)


@contextlib.contextmanager
def chromium(*args: str):
    """Debian's Chromium, headless, driven by Playwright: the closed-network flags plus `args`;
    closed on exit. Skips the test where Chromium or Playwright is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *args])
        try:
            yield browser
        finally:
            browser.close()


def sigv4_view_in_chromium(url: str, pick, wait_text: str, shot: Path) -> str:
    """Open mitmweb at `url` in Chromium, click the flow `pick(page)` finds, choose the SigV4 view,
    wait for `wait_text`, screenshot to `shot`; the page's text. Skips without Chromium/Playwright."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        pick(page).click()
        page.get_by_text("View:").click()
        page.locator(".dropdown-menu a", has_text="sigv4").click()
        page.get_by_text("--- canonical request ---").wait_for(timeout=10000)
        page.get_by_text(wait_text).wait_for(timeout=10000)
        content = page.inner_text("body")
        page.screenshot(path=str(shot))
    return content


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def proxy_env(tmp_path):
    """A proxy's environment: KEY/SECRET as static credentials, no AWS configuration of the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        ENV_CREDS,
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    return env


def raw_exchange(proxy, request: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes; return what comes back until the proxy closes or stays silent."""
    raw = b""
    with socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])), timeout) as s:
        s.sendall(request)
        try:
            while chunk := s.recv(65536):
                raw += chunk
        except TimeoutError:
            pass
    return raw


def route(target: str, service: str = "execute-api", region: str = "eu-west-1", **extra) -> dict:
    """A route's settings as the config file has them."""
    return {"target": target, "service": service, "region": region, **extra}


def verify_then_answer(headers=(("content-type", "text/plain"),), body=None, secrets=None, verifier=verify):
    """peers.upstream.verify_then_answer, with KEY/SECRET as the known credentials by default."""
    return peers_verify_then_answer(secrets or {KEY: (SECRET, None)}, headers, body, verifier)


# What the proxy tests' verifying upstream answers with: AWS-like headers, and some the response
# allowlist must drop (a cookie, an internal header, one the Connection header lists).
VERIFYING_HEADERS = (
    ("content-type", "application/json"),
    ("etag", '"abc"'),
    ("x-amzn-requestid", "req-1"),
    ("x-amz-request-id", "req-2"),
    ("set-cookie", "session=1"),
    ("x-internal-debug", "secret-ish"),
    ("x-custom-allowed", "yes"),
    ("connection", "x-hop"),
    ("x-hop", "must-go"),
)
verifying = verify_then_answer(
    VERIFYING_HEADERS,
    lambda received, verdict: json.dumps({"verdict": verdict.reason, "target": received.target}).encode(),
)


def get(url, **kw):
    kw.setdefault("timeout", 10)
    return requests.get(url, **kw)


def start_role_proxy(start_proxy, tmp_path, sts, upstream, **role):
    """A proxy with an assume-role route and a static route to `upstream`, STS at `sts`."""
    routes = {
        "/role": route(upstream.url, roleArn="arn:aws:iam::123456789012:role/r", **role),
        "/static": route(upstream.url),
    }
    return start_proxy(routes, proxy_env(tmp_path) | {"AWS_ENDPOINT_URL_STS": sts.url})


# Pieces hypothesis builds request targets from: traversal forms in every encoding, and route names.
TARGET_PIECES = [
    "%EF%BC%8E",
    "%e2%88%95",
    "api",
    "v2",
    "s3",
    "root",
    "q",
    "..",
    ".",
    "%2e",
    "%2E%2e",
    "%252e",
    "",
    "a",
    "%2F",
    "%5c",
    "\\",
    "@evil",
    "evil.com",
    "%40",
    ":",
    "%3A",
    "?",
    "#",
    "%00",
    "%0a",
    "~",
    "%7E",
    "x%20y",
    "%ef%bc%8f",
    "%c0%ae",
    "http:",
    "//",
]


def streaming_routes(**extra):
    """Routes whose streaming and buffer settings the plan and streaming tests try (by prefix)."""
    cfg = parse_config(
        {
            "proxysigv4": {
                "/s3": {"target": "https://s3.us-east-1.amazonaws.com", "bufferLimit": "1m", **extra},
                "/api": {
                    "target": "https://a.execute-api.us-east-1.amazonaws.com",
                    "bufferLimit": 1024,
                    **extra,
                },
                "/lattice": {
                    "target": "https://svc.example.com",
                    "service": "vpc-lattice-svcs",
                    "region": "us-east-1",
                    "unsignedPayload": True,
                    "bufferLimit": 1024,
                },
            }
        },
        "t",
    )
    return {r.prefix: r for r in cfg.routes}


AWS = str(Path(sys.executable).parent / "aws")  # the AWS CLI of the venv


def aws_cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The AWS CLI's environment for unsigned calls through the proxy: its own config (path-style
    S3 addressing), no credentials or AWS settings of the machine."""
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )
    return env


def s3_request_as_received(received, path: str | None = None):
    """S3's signer and the request it would sign again from what an upstream received (the signed
    headers as received, at their signing time; `path` in place of the received one): what a
    verifying S3-like upstream computes its CanonicalRequest from."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials

    headers = {k.lower(): v for k, v in received.headers}
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    url = f"http://{headers['host']}{path if path is not None else received.target}"
    request = AWSRequest(method=received.method, url=url, data=received.body)
    for name in signed:
        request.headers[name] = headers[name]
    request.context["timestamp"] = headers["x-amz-date"]
    return S3SigV4Auth(ReadOnlyCredentials(KEY, SECRET, None), "s3", "eu-west-1"), request
