"""Security and faults end to end through a real mitmdump: inbound authentication, SSRF and
header-injection attempts, secret hygiene at every verbosity, redirects, config reloads,
clock skew, credential refresh across expiry, and a 200-client load run."""

import base64
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from helpers import KEY, SECRET, get, proxy_env, raw_exchange, route, start_role_proxy, verifying
from peers.fakests import FakeSTS
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e
TOKEN = "inbound-token-for-tests-0123456789"


@pytest.fixture
def upstream():
    with Upstream(verifying) as u:
        yield u


# ---- inbound authentication ---------------------------------------------------------------------
def test_listening_on_all_interfaces_without_auth_refuses_to_start(start_proxy, tmp_path, upstream):
    proxy = start_proxy(
        {"/api": route(upstream.url + "/prod")},
        proxy_env(tmp_path),
        args=("--listen-host", "0.0.0.0"),
        expect_exit=True,
    )
    assert proxy.proc.returncode != 0
    log = proxy.log()
    assert (
        "listens on 0.0.0.0" in log
        and "--listen-host 127.0.0.1" in log
        and "allowUnauthenticatedRequests" in log
    )


def test_bearer_token_required_and_not_forwarded(start_proxy, tmp_path, upstream):
    env = proxy_env(tmp_path) | {"PROXY_TOKEN": TOKEN}
    routes = {
        "allowUnauthenticatedRequests": False,
        "bearerTokens": ["${PROXY_TOKEN}"],
        "/api": route(upstream.url + "/prod"),
    }
    proxy = start_proxy(routes, env)
    for headers in ({}, {"Authorization": "Bearer nope-nope-nope-nope"}, {"Authorization": f"Basic {TOKEN}"}):
        r = get(f"{proxy.url}/api/x", headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == 'Bearer realm="proxysigv4"'
    assert upstream.received == []
    r = get(f"{proxy.url}/api/x", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    sent = dict((k.lower(), v) for k, v in upstream.received[-1].headers)
    assert sent["authorization"].startswith("AWS4-HMAC-SHA256") and TOKEN not in json.dumps(sent)


def test_mitmproxy_proxyauth_is_reused_and_its_header_not_forwarded(start_proxy, tmp_path, upstream):
    routes = {"allowUnauthenticatedRequests": False, "/api": route(upstream.url + "/prod")}
    proxy = start_proxy(routes, proxy_env(tmp_path), args=("--set", "proxyauth=alice:wonderland"))
    r = get(f"{proxy.url}/api/x")
    assert r.status_code == 401 and "basic" in r.headers.get("www-authenticate", "").lower()
    assert upstream.received == []
    basic = base64.b64encode(b"alice:wonderland").decode()
    r = get(f"{proxy.url}/api/x", headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.text
    assert basic not in json.dumps(upstream.received[-1].headers)


# ---- SSRF and path traversal --------------------------------------------------------------------
# The seed plugin's twelve SSRF examples, sent after a route prefix and at a catch-all root route.
SEED_SSRF = [
    "//attacker.example.com/",
    "%2F/attacker.example.com/",
    "%2F%2Fattacker.example.com/",
    "\\\\attacker.example.com/",
    "%5C%5Cattacker.example.com/",
    "/%2Fattacker.example.com/",
    "//trusted.internal@attacker.example.com/",
    "%2F%2Ftrusted.internal%40attacker.example.com/",
    "%252F%252Fattacker.example.com/",
    "\uff0f\uff0fattacker.example.com/",
    "/%09/attacker.example.com/",
    "/%0A/attacker.example.com/",
]
MORE_ATTEMPTS = [
    "../x",
    "..%2fx",
    "%2e%2e/x",
    "%2E%2E%2Fx",
    "%252e%252e/x",
    ".%2e/x",
    "x/../../y",
    "%c0%ae%c0%ae/x",
    "x%00y",
    "x%0d%0aHost:%20evil",
    "@evil.example/x",
    "x@evil.example:80/y",
    "%40evil/x",
    "http://evil.example/x",
    "\uff0e\uff0e/x",
]


@pytest.mark.parametrize("prefix", ["/api/", "/"])
def test_no_request_target_leaves_the_route_target(start_proxy, tmp_path, upstream, prefix):
    """Each attempt is sent raw; it is refused (400/404), or reaches the route's own host under
    its path prefix, never anything else."""
    routes = (
        {"/api": route(upstream.url + "/prod")} if prefix == "/api/" else {"/": route(upstream.url + "/prod")}
    )
    proxy = start_proxy(routes, proxy_env(tmp_path))
    outcomes = {}
    for attempt in SEED_SSRF + MORE_ATTEMPTS:
        before = len(upstream.received)
        target = (prefix + attempt).encode()
        raw = raw_exchange(
            proxy, b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        status = int(raw.split()[1]) if raw.startswith(b"HTTP/") else 0
        if len(upstream.received) > before:
            got = upstream.received[-1]
            host = dict((k.lower(), v) for k, v in got.headers)["host"]
            assert status == 200, (attempt, raw[:300])
            assert host == f"127.0.0.1:{upstream.port}", attempt
            assert got.target == "/prod" or got.target.startswith("/prod/"), (attempt, got.target)
            assert ".." not in got.target.split("/") and "%2e%2e" not in got.target.lower(), attempt
            outcomes[attempt] = f"forwarded {got.target}"
        else:
            assert status in (400, 404) or status == 0, (attempt, raw[:300])
            outcomes[attempt] = f"refused {status}"
    for attempt in (
        "\\\\attacker.example.com/",
        "%5C%5Cattacker.example.com/",
        "/%09/attacker.example.com/",
        "/%0A/attacker.example.com/",
        "../x",
        "%252e%252e/x",
        "x%0d%0aHost:%20evil",
    ):
        assert outcomes[attempt].startswith("refused"), (attempt, outcomes[attempt])
    print(json.dumps(outcomes, indent=1))


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Test: a\rInjected: 1\r\n\r\n",
        b"GET /api/x\r\nInjected: 1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n",
        b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ],
    ids=[
        "bare-cr",
        "crlf-in-target",
        "oversized-header",
        "two-content-lengths",
        "cl-and-te",
        "te-not-chunked",
        "two-te",
    ],
)
def test_header_injection_and_smuggling_forms_are_rejected(start_proxy, tmp_path, upstream, request_bytes):
    proxy = start_proxy({"/api": route(upstream.url + "/prod")}, proxy_env(tmp_path))
    try:
        raw = raw_exchange(proxy, request_bytes)
    except (ConnectionResetError, BrokenPipeError):
        raw = b""
    assert upstream.received == []
    assert raw == b"" or int(raw.split()[1]) >= 400, raw[:200]


def test_obsolete_line_folding_is_unfolded_never_smuggled(start_proxy, tmp_path, upstream):
    """RFC 9112 5.2 allows replacing obs-fold with a space; nothing may become a new header."""
    proxy = start_proxy(
        {"/api": route(upstream.url + "/prod", allowedRequestHeaders=["x-test"])}, proxy_env(tmp_path)
    )
    raw = raw_exchange(
        proxy,
        b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Test: a\r\n Injected: 1\r\nConnection: close\r\n\r\n",
    )
    if upstream.received:
        assert raw.startswith(b"HTTP/1.1 200"), raw[:200]  # and the signature verified upstream
        got = upstream.received[-1].headers
        assert all(k.lower() != "injected" for k, _ in got)
        assert all("\r" not in v and "\n" not in v for _, v in got)
    else:
        assert int(raw.split()[1]) == 400


# ---- secret hygiene -----------------------------------------------------------------------------
def test_no_secret_in_logs_saved_flows_or_error_bodies_at_any_verbosity(start_proxy, tmp_path):
    with FakeSTS() as sts, sts.verifier({KEY: (SECRET, None)}) as upstream:
        flows = tmp_path / "flows.mitm"
        routes = {
            "/role": route(upstream.url + "/prod", roleArn="arn:aws:iam::123456789012:role/r"),
            "/static": route(upstream.url + "/prod"),
            "/nocreds": route(upstream.url + "/prod", profile="missing-profile"),
        }
        env = proxy_env(tmp_path) | {"AWS_ENDPOINT_URL_STS": sts.url}
        proxy = start_proxy(
            routes, env, args=("--set", "flow_detail=4", "--set", "termlog_verbosity=debug", "-w", str(flows))
        )
        bodies = []
        for path in ("/role/a?x=1", "/static/b", "/nocreds/c", "/nothing", "/static/../x"):
            bodies.append(get(proxy.url + path).text)
        bodies.append(requests.post(f"{proxy.url}/role/p", data=b"{}", timeout=10).text)
        time.sleep(0.5)
        from peers.processes import stop

        stop(proxy.proc)  # flush the flow file
        assert sts.issued, "the role route must have used temporary credentials"
        secrets = [SECRET] + [s for s, _, _ in sts.issued.values()] + [t for _, t, _ in sts.issued.values()]
        log, saved = proxy.log(), flows.read_bytes()
        assert "GET /role/a?x=1" in log and "Signature=<redacted>" in log  # the dump really shows headers
        for secret in secrets:
            assert secret not in log, secret
            assert secret.encode() not in saved, secret
            assert all(secret not in b for b in bodies), secret
        for where in (log, saved.decode("latin-1"), *bodies):
            assert not re.search(r"Signature=[0-9a-f]{64}", where)
            assert not re.search(r"Credential=[A-Z0-9]{20}/", where)


def test_upstream_redirects_are_passed_back_not_followed(start_proxy, tmp_path):
    with Upstream(lambda r: (200, [], b"other")) as other:
        with Upstream(lambda r: (307, [("location", other.url + "/stolen")], b"")) as upstream:
            proxy = start_proxy({"/api": route(upstream.url + "/prod")}, proxy_env(tmp_path))
            r = requests.get(f"{proxy.url}/api/x", allow_redirects=False, timeout=10)
            assert r.status_code == 307 and r.headers["location"] == other.url + "/stolen"
            assert len(upstream.received) == 1 and other.received == []


# ---- faults -------------------------------------------------------------------------------------
def test_config_edits_take_effect_and_broken_edits_keep_the_last_good_table(start_proxy, tmp_path, upstream):
    proxy = start_proxy({"/a": route(upstream.url + "/prod")}, proxy_env(tmp_path))
    assert get(f"{proxy.url}/a/x").status_code == 200
    assert get(f"{proxy.url}/b/x").status_code == 404
    proxy.config.write_text(
        yaml.safe_dump(
            {"proxysigv4": {"/a": route(upstream.url + "/prod"), "/b": route(upstream.url + "/prod")}}
        )
    )
    deadline = time.monotonic() + 10
    while get(f"{proxy.url}/b/x").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(f"{proxy.url}/b/x").status_code == 200
    proxy.config.write_text("proxysigv4:\n  /a: {target: ftp://broken}\n")
    deadline = time.monotonic() + 10
    while "cannot be used, keeping the previous routes" not in proxy.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "route '/a': key 'target'" in proxy.log()
    assert get(f"{proxy.url}/a/x").status_code == 200 and get(f"{proxy.url}/b/x").status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "expect_offset"),
    [
        (
            b"<?xml version='1.0'?><Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the "
            b"request time and the current time is too large.</Message><RequestTime>20200101T000000Z</RequestTime>"
            b"<ServerTime>2020-01-01T00:20:00Z</ServerTime></Error>",
            "application/xml",
            True,
        ),
        (
            b'{"__type":"InvalidSignatureException","message":"Signature expired: 20200101T000000Z is now earlier '
            b'than 20200101T001500Z (20200101T002000Z - 5 min.)"}',
            "application/x-amz-json-1.1",
            False,
        ),
    ],
)
def test_clock_skew_answers_are_explained_naming_the_local_clock(
    start_proxy, tmp_path, body, content_type, expect_offset
):
    with Upstream(lambda r: (403, [("content-type", content_type)], body)) as upstream:
        proxy = start_proxy({"/api": route(upstream.url + "/prod")}, proxy_env(tmp_path))
        r = get(f"{proxy.url}/api/x")
        assert r.status_code == 403 and r.content == body  # AWS's own answer is kept for the client's SDK
        diagnosis = r.headers["x-proxysigv4-diagnosis"]
        assert (
            "this machine's clock reads" in diagnosis
            and time.strftime("%Y-%m-%d", time.gmtime()) in diagnosis
        )
        assert ("ahead" in diagnosis) is expect_offset
        assert diagnosis in proxy.log()


def test_200_concurrent_clients_for_20_seconds_no_errors_no_leaks(start_proxy, tmp_path, upstream):
    proxy = start_proxy(
        {"/api": route(upstream.url + "/prod")}, proxy_env(tmp_path), args=("--set", "termlog_verbosity=warn")
    )
    pid = proxy.proc.pid
    get(f"{proxy.url}/api/warm")
    time.sleep(0.5)
    fds_before = len(os.listdir(f"/proc/{pid}/fd"))
    errors, done = [], [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + 20

    def client():
        with requests.Session() as s:
            while time.monotonic() < stop_at:
                try:
                    r = s.get(f"{proxy.url}/api/load", timeout=30)
                    ok = r.status_code == 200
                except requests.RequestException as e:
                    ok, r = False, e
                with lock:
                    done[0] += 1
                    if not ok:
                        errors.append(repr(r)[:200])

    threads = [threading.Thread(target=client) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{pid}/fd")) > fds_before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    fds_after = len(os.listdir(f"/proc/{pid}/fd"))
    print(f"200 clients, 20 s: {done[0]} requests, {len(errors)} errors, fds {fds_before} -> {fds_after}")
    assert errors == []
    assert done[0] > 1000
    assert fds_after <= fds_before + 2
    assert Path(f"/proc/{pid}").exists() and proxy.proc.poll() is None


def test_session_token_and_signature_echoed_by_aws_never_reach_the_client(start_proxy, tmp_path):
    """S3 answers SignatureDoesNotMatch with its CanonicalRequest (which holds the session token)
    and the signature it received: the proxy blanks both before the client sees the body."""

    def echo_error(received):
        headers = {k.lower(): v for k, v in received.headers}
        signature = headers["authorization"].rsplit("Signature=", 1)[1]
        body = (
            "<Error><Code>SignatureDoesNotMatch</Code><Message>mismatch</Message>"
            f"<SignatureProvided>{signature}</SignatureProvided><CanonicalRequest>GET\n{received.target}\n\n"
            f"host:{headers['host']}\nx-amz-security-token:{headers['x-amz-security-token']}\n</CanonicalRequest></Error>"
        )
        return 403, [("content-type", "application/xml")], body.encode()

    with FakeSTS() as sts, Upstream(echo_error) as upstream:
        proxy = start_role_proxy(start_proxy, tmp_path, sts, upstream)
        r = get(f"{proxy.url}/role/x")
        assert r.status_code == 403 and "<SignatureProvided><redacted></SignatureProvided>" in r.text
        sent = dict((k.lower(), v) for k, v in upstream.received[-1].headers)
        token = sent["x-amz-security-token"]
        assert token in sts.issued[next(iter(sts.issued))][1] and token not in r.text
        assert sent["authorization"].rsplit("Signature=", 1)[1] not in r.text
        assert "x-amz-security-token:<redacted>" in r.text
