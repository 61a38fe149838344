"""mitmproxy's other modes: path routes are a reverse proxy's. Through a regular (forward) listener a
request names its own host and passes through exactly as bare mitmproxy passes it, whatever its
path; a process with both kinds of listener treats each by its kind."""

import os
import subprocess

import pytest
import yaml

from helpers import proxy_env, route, verifying
from peers.processes import BIN, ROOT, free_port, mitmdump_command, stop, wait_for_port
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e


def site_answer(received):
    return 200, [("content-type", "text/plain"), ("x-site", "yes")], b"site " + received.target.encode()


@pytest.fixture
def site():
    with Upstream(site_answer) as up:
        yield up


@pytest.fixture
def target():
    with Upstream(verifying) as up:
        yield up


def _start(tmp_path, cmd):
    log = open(tmp_path / "mitmdump.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=proxy_env(tmp_path), cwd=tmp_path)
    return proc


def _config(tmp_path, target) -> str:
    config = tmp_path / "routes.yaml"
    config.write_text(yaml.safe_dump({"proxysigv4": {"/api": route(target.url + "/prod")}}))
    return str(config)


def _curl_via(proxy_port: int, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    return subprocess.run(
        ["curl", "-s", "-i", "-x", f"http://127.0.0.1:{proxy_port}", url]
        + ["-H", "Authorization: Bearer the-sites-own-token", "-H", "X-Custom: kept"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def _assert_passed_through(site, done, path):
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 200") and "x-site: yes" in head.lower(), head
    assert body == f"site {path}"
    got = site.received[-1]
    headers = {k.lower(): v for k, v in got.headers}
    assert got.target == path and headers["authorization"] == "Bearer the-sites-own-token"
    assert headers["x-custom"] == "kept" and headers["host"] == f"127.0.0.1:{site.port}"
    assert "x-amz-date" not in headers


def test_a_regular_listener_passes_other_sites_through_whatever_their_path(tmp_path, site, target):
    port = free_port()
    cmd = [str(BIN / "mitmdump"), "-s", str(ROOT / "addon" / "proxysigv4.py"), "--mode", "regular"]
    cmd += [
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        "--set",
        f"proxysigv4_config={_config(tmp_path, target)}",
    ]
    proc = _start(tmp_path, cmd)
    try:
        wait_for_port(port, proc)
        for path in ("/api/x", "/index.html"):
            _assert_passed_through(site, _curl_via(port, f"http://127.0.0.1:{site.port}{path}"), path)
        assert target.received == []
    finally:
        stop(proc)


def test_one_process_with_both_kinds_of_listener_treats_each_by_its_kind(tmp_path, site, target):
    reverse, regular = free_port(), free_port()
    cmd = mitmdump_command(_config(tmp_path, target), reverse, "--mode", f"regular@{regular}")
    proc = _start(tmp_path, cmd)
    try:
        wait_for_port(reverse, proc)
        wait_for_port(regular, proc)
        _assert_passed_through(site, _curl_via(regular, f"http://127.0.0.1:{site.port}/api/x"), "/api/x")
        assert target.received == []
        signed = subprocess.run(
            ["curl", "-s", "-i", f"http://127.0.0.1:{reverse}/api/items"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert signed.stdout.startswith("HTTP/1.1 200"), signed.stdout
        assert target.received[-1].target == "/prod/items"
        assert dict(target.received[-1].headers)["Authorization"].startswith("AWS4-HMAC-SHA256 ")
        missing = subprocess.run(
            ["curl", "-s", "-i", f"http://127.0.0.1:{reverse}/nowhere"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert missing.stdout.startswith("HTTP/1.1 404") and '"no_route"' in missing.stdout
        assert len(site.received) == 1 and len(target.received) == 1
    finally:
        stop(proc)
