"""The `proxysigv4` command: each subcommand's output and exit codes, run against real processes."""

import re
import subprocess
import time

import pytest
import requests
import yaml

from helpers import proxy_env, verifying, wait_for
from peers.processes import BIN, REGION, aws_env, free_port, stop, wait_for_port
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e
CLI = str(BIN / "proxysigv4")


def cli(*args: str, env=None, cwd=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_version_and_help_with_examples():
    version = cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"proxysigv4 \d+\.\d+\.\d+\n", version.stdout)
    helptext = cli("--help")
    assert helptext.returncode == 0
    assert "examples:" in helptext.stdout and "proxysigv4 demo" in helptext.stdout
    for sub in ("run", "check", "demo"):
        assert cli(sub, "--help").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "-c", "missing.yaml"), "proxysigv4: error: missing.yaml: file not found"),
        (("run", "-c", "routes.yaml", "--listen-host", "0.0.0.0"), "listens on 0.0.0.0"),
        (("run", "-c", "routes.yaml", "--set", "nosuchoption=1"), "unknown mitmproxy option: nosuchoption"),
        (("run", "-c", "bad.yaml"), "bad.yaml: route '/x': unknown key 'servce'; did you mean 'service'?"),
        (("check", "-c", "bad.yaml", "--offline"), "bad.yaml: route '/x': unknown key 'servce'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump({"proxysigv4": {"/x": "https://sts.amazonaws.com"}}))
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump({"proxysigv4": {"/x": {"target": "https://sts.amazonaws.com", "servce": "sts"}}})
    )
    result = cli(*args, cwd=tmp_path, env=proxy_env(tmp_path))
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    debug = cli("--debug", *args, cwd=tmp_path, env=proxy_env(tmp_path))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def start_cli_run(tmp_path, routes, *extra, env=None):
    config = tmp_path / "routes.yaml"
    config.write_text(yaml.safe_dump({"proxysigv4": routes}))
    port = free_port()
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [CLI, "run", "-c", str(config), "-p", str(port), *extra],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        env=env or proxy_env(tmp_path),
    )
    wait_for_port(port, proc)
    return proc, f"http://127.0.0.1:{port}", log, config


def wait_for_text(path, text, timeout=10):
    wait_for(lambda: text in path.read_text(), timeout)


def test_run_signs_logs_a_curl_example_and_reloads_the_file(tmp_path):
    with Upstream(verifying) as upstream:
        route = {"target": upstream.url + "/prod", "service": "execute-api", "region": "eu-west-1"}
        proc, url, log, config = start_cli_run(tmp_path, {"/api": route}, "-v")
        try:
            wait_for_text(log, f"proxysigv4 ready on {url} - try: curl -s {url}/api/")
            assert "/api -> " + upstream.url + "/prod (execute-api/eu-west-1)" in log.read_text()
            r = requests.get(f"{url}/api/items?x=1", timeout=10)
            assert r.status_code == 200, r.text
            wait_for_text(log, "GET /api/items?x=1 -> ")
            line = next(x for x in log.read_text().splitlines() if "GET /api/items?x=1 -> " in x)
            assert re.search(
                r" 200 [\d.]+ms \d+B route=/api execute-api/eu-west-1 signed=accept;host;x-amz-date$", line
            ), line
            config.write_text(yaml.safe_dump({"proxysigv4": {"/api": route, "/v2": route}}))
            deadline = time.monotonic() + 5
            while requests.get(f"{url}/v2/x", timeout=10).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert requests.get(f"{url}/v2/x", timeout=10).status_code == 200
        finally:
            stop(proc)
        assert proc.returncode == 0


def test_run_web_starts_mitmweb_with_a_token(tmp_path):
    with Upstream(verifying) as upstream:
        web_port = free_port()
        route = {"target": upstream.url, "service": "execute-api", "region": "eu-west-1"}
        proc, url, log, _ = start_cli_run(tmp_path, {"/api": route}, "--web", "--web-port", str(web_port))
        try:
            wait_for_port(web_port, proc)
            wait_for_text(log, f"Web server listening at http://127.0.0.1:{web_port}/?token=")
            token = re.search(r"\?token=([0-9a-f]+)", log.read_text())[1]
            assert requests.get(f"{url}/api/x", timeout=10).status_code == 200
            flows = requests.get(
                f"http://127.0.0.1:{web_port}/flows", headers={"Authorization": f"Bearer {token}"}, timeout=10
            ).json()
            assert flows and flows[0]["request"]["path"] == "/x"
        finally:
            stop(proc)


@pytest.mark.parametrize("extra", [(), ("--web", "--web-port", "0")], ids=["run", "run --web"])
def test_run_applies_the_browser_rules(tmp_path, extra):
    """`proxysigv4 run` (and with --web) refuses a rebinding Host and a cross-site Origin as
    `mitmdump -s` does, and lets curl-like clients and a listed origin through."""
    if extra:
        extra = ("--web", "--web-port", str(free_port()))
    with Upstream(verifying) as upstream:
        route = {
            "target": upstream.url,
            "service": "execute-api",
            "region": "eu-west-1",
            "corsOrigins": ["http://localhost:3000"],
        }
        proc, url, _, _ = start_cli_run(tmp_path, {"/api": route}, *extra)
        port = url.rsplit(":", 1)[1]
        try:
            for headers, status, error in (
                ({}, 200, None),
                ({"Host": f"rebind.test:{port}"}, 403, "host_not_allowed"),
                ({"Origin": "https://evil.example"}, 403, "cross_origin_refused"),
                ({"Sec-Fetch-Site": "cross-site"}, 403, "cross_origin_refused"),
                ({"Origin": "http://localhost:3000"}, 200, None),
            ):
                r = requests.post(f"{url}/api/x", data=b"a=1", headers=headers, timeout=10)
                assert r.status_code == status, (headers, r.text)
                assert error is None or r.json()["error"] == error
            assert len(upstream.received) == 2
        finally:
            stop(proc)


def test_check_offline_and_against_sts(moto, tmp_path):
    routes = {
        "/sts": {"target": moto.url, "service": "sts", "region": REGION},
        "/role": {"target": moto.url, "service": "sts", "region": REGION, "roleArn": moto.role_arn},
    }
    config = tmp_path / "routes.yaml"
    config.write_text(yaml.safe_dump({"proxysigv4": routes}))
    offline = cli("check", "-c", str(config), "--offline")
    assert offline.returncode == 0 and "2 routes valid (offline" in offline.stdout
    online = cli("check", "-c", str(config), env=aws_env(moto))
    assert online.returncode == 0, online.stderr
    assert re.search(r"/sts -> .*: arn:aws:iam::123456789012:user/proxy-user, no expiry", online.stdout)
    assert re.search(
        r"/role -> .*: arn:aws:sts::123456789012:assumed-role/proxy-role/proxysigv4, expires 20\d\d-",
        online.stdout,
    )
    routes["/broken"] = {"target": moto.url, "service": "sts", "region": REGION, "profile": "absent"}
    config.write_text(yaml.safe_dump({"proxysigv4": routes}))
    failing = cli("check", "-c", str(config), env=aws_env(moto))
    assert failing.returncode == 1
    assert (
        "/broken -> " in failing.stdout
        and "FAILED (profile absent via default credential chain)" not in failing.stdout
    )
    assert re.search(
        r"/broken -> .*: FAILED \(profile absent\): The config profile \(absent\) could not be found",
        failing.stdout,
    )
    assert "1 of 3 routes have a problem" in failing.stderr


def test_demo_once_runs_every_step_against_the_emulator():
    result = cli("demo", "--once", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 of 9 steps behaved as expected" in result.stdout
    # moto's IAM checks refuse the read-only role's CreateQueue; the proxy's explanation is shown
    assert re.search(
        r"why +authorization denied \(AWS saw assumed role reader-role .*no identity-based policy allows "
        r"sqs:CreateQueue",
        result.stdout,
    )
    assert "assumed-role/proxy-role/proxysigv4-demo" in result.stdout or "signed=" in result.stdout
    assert re.search(
        r"signed +POST /as-role/ -> http://127\.0\.0\.1:\d+/ 200 .*x-amz-security-token", result.stdout
    )
    assert "SignatureDoesNotMatch" in result.stdout and "UNEXPECTED" not in result.stdout
