"""End to end through a real mitmdump: a local upstream verifies every signature with awscrt
(for what moto cannot check: awkward S3 keys, execute-api/bedrock paths) and records exactly
what arrived, so header filtering, routing and failure answers are observed on the wire."""

import gzip
import json
import socket
import threading
import time

import pytest
import requests

from helpers import ENV_CREDS, KEY, SECRET, get, proxy_env, raw_exchange, route, start_role_proxy, verifying
from peers.fakests import FakeSTS
from peers.processes import free_port
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e


@pytest.fixture
def upstream():
    with Upstream(verifying) as u:
        yield u


@pytest.fixture
def proxy(upstream, start_proxy, tmp_path):
    routes = {
        "/s3": route(upstream.url, "s3"),
        "/api": route(upstream.url + "/prod"),
        "/api/v2": route(upstream.url + "/v2-stage", allowedResponseHeaders=["x-custom-*"]),
        "/bedrock": route(upstream.url, "bedrock"),
    }
    return start_proxy(routes, proxy_env(tmp_path))


@pytest.mark.parametrize(
    ("client_path", "wire_path"),
    [
        ("/s3/bucket/key+with+plus", "/bucket/key%2Bwith%2Bplus"),
        ("/s3/bucket/caf%C3%A9%20%E2%9C%93", "/bucket/caf%C3%A9%20%E2%9C%93"),
        ("/s3/bucket/a;b=c&d", "/bucket/a%3Bb%3Dc%26d"),
        ("/s3/bucket/'()!*$@", "/bucket/%27%28%29%21%2A%24%40"),
        ("/s3/bucket/a%2Fb", "/bucket/a/b"),
        ("/s3/bucket/%7Etilde", "/bucket/~tilde"),
        (
            "/bedrock/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
            "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
        ),
        (
            "/api/items/a%20b?q=a+b&empty=&bare&x=%E2%9C%93",
            "/prod/items/a%20b?q=a%20b&empty=&bare&x=%E2%9C%93",
        ),
    ],
)
def test_signature_verifies_on_the_wire(proxy, upstream, client_path, wire_path):
    r = requests.put(f"{proxy.url}{client_path}", data=b"payload \x00\xff", timeout=10)
    assert r.status_code == 200, r.text
    assert upstream.received[-1].target == wire_path


def test_forwarded_headers_are_exactly_the_signed_ones_plus_content_length(proxy, upstream):
    r = requests.post(
        f"{proxy.url}/api/x",
        data=b'{"k": 1}',
        headers={
            "Content-Type": "application/json",
            "Cookie": "session=abc",
            "User-Agent": "curl/8",
            "X-Forwarded-For": "1.2.3.4",
            "X-Forwarded-Host": "evil.example",
            "X-Amz-Date": "20000101T000000Z",
            "X-Amz-Security-Token": "client-token",
            "X-Amz-Meta-Color": "blue",
            "X-Not-Allowed": "1",
            "Authorization": "Bearer client",
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    got = {k.lower(): v for k, v in upstream.received[-1].headers}
    assert got["host"] == f"127.0.0.1:{upstream.port}"
    assert got["x-amz-meta-color"] == "blue"
    assert got["x-amz-date"] != "20000101T000000Z"
    for absent in (
        "cookie",
        "user-agent",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-amz-security-token",
        "x-not-allowed",
    ):
        assert absent not in got
    assert got["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAPROXYTEST0001/")
    signed = got["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    # and the client's keep-alive token (requests sends it), which mitmproxy reads, never signed
    assert got["connection"] == "keep-alive" and "connection" not in signed
    assert set(got) - {"authorization"} == set(signed) | {"content-length", "connection"}


def test_client_connection_close_is_honoured(proxy, upstream):
    raw = raw_exchange(
        proxy, b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )  # returns at EOF
    assert raw.startswith(b"HTTP/1.1 200")
    assert dict((k.lower(), v) for k, v in upstream.received[-1].headers)["connection"] == "close"


def test_response_headers_are_filtered_by_the_allowlist(proxy):
    r = get(f"{proxy.url}/api/x")
    assert r.status_code == 200
    assert r.headers["etag"] == '"abc"'
    assert r.headers["x-amzn-requestid"] == "req-1"
    assert r.headers["x-amz-request-id"] == "req-2"
    for absent in ("set-cookie", "x-internal-debug", "x-custom-allowed", "x-hop"):
        assert absent not in r.headers
    r = get(f"{proxy.url}/api/v2/x")
    assert r.headers["x-custom-allowed"] == "yes"


def test_longest_prefix_wins_and_no_implicit_trailing_slash(proxy, upstream):
    for client, wire in [
        ("/api/v2", "/v2-stage"),
        ("/api/v2/", "/v2-stage/"),
        ("/api/v2x", "/prod/v2x"),
        ("/api", "/prod"),
        ("/api/", "/prod/"),
        ("/api?x=1", "/prod?x=1"),
    ]:
        assert get(proxy.url + client).status_code == 200
        assert upstream.received[-1].target == wire, client


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/nothing/here", 404, "no_route"),
        ("/apix", 404, "no_route"),
        ("/", 404, "no_route"),
        ("/api/../s3/x", 400, "path_traversal"),
        ("/api/%2e%2e/x", 400, "path_traversal"),
        ("/api/%252e%252e/x", 400, "path_traversal"),
        ("/api/.%2E/x", 400, "path_traversal"),
        ("/api/a%2F..%2F..%2Fx", 400, "path_traversal"),
        ("/api/a%5c..%5cx", 400, "invalid_path"),
        ("/api/a%00b", 400, "invalid_path"),
        ("/api/%c0%ae%c0%ae/x", 400, "invalid_path"),
    ],
)
def test_rejected_requests_get_json_and_are_never_forwarded(proxy, upstream, path, status, error):
    before = len(upstream.received)
    raw = raw_exchange(proxy, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode(), raw
    assert json.loads(body)["error"] == error
    assert len(upstream.received) == before


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET http://evil.example/api/x HTTP/1.1",
        b"GET http://127.0.0.1:1/api/x HTTP/1.1",
    ],
)
def test_absolute_form_or_host_header_cannot_change_the_upstream(proxy, upstream, request_line):
    before = len(upstream.received)
    raw = raw_exchange(proxy, request_line + b"\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    status = int(raw.split()[1])
    if status == 200:
        assert len(upstream.received) == before + 1
        got = dict((k.lower(), v) for k, v in upstream.received[-1].headers)
        assert got["host"] == f"127.0.0.1:{upstream.port}"
        assert upstream.received[-1].target == "/prod/x"
    else:
        # 403: an absolute-form authority the proxy is not known by (host_not_allowed)
        assert status in (400, 403, 404) and len(upstream.received) == before


def test_chunked_and_gzip_request_bodies_are_hashed_as_sent(proxy, upstream):
    data = gzip.compress(b'{"big": "' + b"x" * 50000 + b'"}')

    def chunks():
        for i in range(0, len(data), 7000):
            yield data[i : i + 7000]

    r = requests.post(
        f"{proxy.url}/api/upload", data=chunks(), headers={"content-encoding": "gzip"}, timeout=10
    )
    assert r.status_code == 200, r.text
    got = upstream.received[-1]
    assert got.body == data
    assert dict((k.lower(), v) for k, v in got.headers)["content-length"] == str(len(data))


@pytest.mark.parametrize("size", [(2 << 20) - 1, 2 << 20, 5 << 20])
@pytest.mark.parametrize("prefix", ["/api", "/s3"])
def test_bodies_hashed_on_the_loop_or_in_a_thread_verify_on_the_wire(proxy, upstream, size, prefix):
    """From 2 MiB on the body's SHA-256 is computed in a thread: either way the upstream verifies
    the signature over the exact bytes it received (S3 carries the hash in x-amz-content-sha256)."""
    data = bytes(range(251)) * (size // 251) + b"\xff" * (size % 251)
    r = requests.put(f"{proxy.url}{prefix}/big", data=data, timeout=30)
    assert r.status_code == 200, r.text
    got = upstream.received[-1]
    assert len(got.body) == size and got.body == data


def test_each_request_is_logged_once_at_info_without_secrets(proxy):
    get(f"{proxy.url}/api/logged?x=1")
    get(f"{proxy.url}/nothing")
    get(f"{proxy.url}/api/per%25s%20cent?q=%25d")  # '%' in a line must not be taken as a format
    time.sleep(0.3)
    log = proxy.log()
    assert "GET /api/per%25s%20cent?q=%25d -> http://127.0.0.1:" in log
    assert (
        "GET /api/logged?x=1 -> http://127.0.0.1:" in log
        and " 200 " in log
        and "route=/api execute-api/eu-west-1" in log
    )
    assert "GET /nothing -> - 404" in log
    assert SECRET not in log
    assert "Signature=" not in log


# ---- failures -------------------------------------------------------------------------------
def test_upstream_refused_gives_502_json(start_proxy, tmp_path):
    dead = free_port()
    proxy = start_proxy(
        {
            "/dead": {
                "target": f"http://127.0.0.1:{dead}",
                "service": "execute-api",
                "region": "us-east-1",
            }
        },
        proxy_env(tmp_path),
    )
    r = get(f"{proxy.url}/dead/x")
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "upstream_unreachable"
    assert r.json()["route"] == "/dead"  # the error page names the route the request took


def test_route_timeout_gives_504_json_and_other_routes_keep_working(start_proxy, tmp_path, upstream):
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepts connections, never answers
    try:
        routes = {
            "/slow": {
                "target": f"http://127.0.0.1:{hang.getsockname()[1]}",
                "service": "execute-api",
                "region": "us-east-1",
                "timeout": 1,
            },
            "/fast": {"target": upstream.url, "service": "execute-api", "region": "eu-west-1"},
        }
        proxy = start_proxy(routes, proxy_env(tmp_path))
        result = {}

        def slow():
            t0 = time.monotonic()
            result["r"] = get(f"{proxy.url}/slow/x")
            result["t"] = time.monotonic() - t0

        th = threading.Thread(target=slow)
        th.start()
        time.sleep(0.2)
        assert get(f"{proxy.url}/fast/y").status_code == 200
        th.join(10)
        assert result["r"].status_code == 504
        assert result["r"].json()["error"] == "upstream_timeout"
        assert 0.9 <= result["t"] < 3
    finally:
        hang.close()


def test_route_without_credentials_answers_503_and_others_work(start_proxy, tmp_path, upstream):
    routes = {
        "/broken": {
            "target": upstream.url,
            "service": "execute-api",
            "region": "eu-west-1",
            "profile": "no-such-profile",
        },
        "/ok": {"target": upstream.url, "service": "execute-api", "region": "eu-west-1"},
    }
    proxy = start_proxy(routes, proxy_env(tmp_path))
    before = len(upstream.received)
    r = get(f"{proxy.url}/broken/x")
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "credentials_unavailable" and body["route"] == "/broken"
    assert "no-such-profile" in body["message"]
    assert len(upstream.received) == before
    assert get(f"{proxy.url}/ok/x").status_code == 200


def test_credentials_recover_without_restart(start_proxy, tmp_path, upstream):
    creds_file = tmp_path / "credentials"
    env = proxy_env(tmp_path)
    for k in ENV_CREDS:
        env.pop(k)
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds_file)
    proxy = start_proxy(
        {"/r": {"target": upstream.url, "service": "execute-api", "region": "eu-west-1"}}, env
    )
    assert get(f"{proxy.url}/r/x").status_code == 503
    creds_file.write_text(f"[default]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    deadline = time.monotonic() + 10
    while (r := get(f"{proxy.url}/r/x")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert r.status_code == 200, r.text


def test_eager_connection_strategy_is_made_lazy_so_rerouting_works(start_proxy, tmp_path, upstream):
    # The --mode target (port 9) is unreachable; eager mode would drop every client.
    proxy = start_proxy(
        {"/r": {"target": upstream.url, "service": "execute-api", "region": "eu-west-1"}},
        proxy_env(tmp_path),
        args=("--set", "connection_strategy=eager"),
    )
    assert get(f"{proxy.url}/r/x").status_code == 200


def test_bad_config_makes_mitmdump_exit_nonzero(start_proxy, tmp_path):
    proxy = start_proxy(
        {"/r": {"target": "ftp://nope", "service": "s3", "region": "us-east-1"}},
        proxy_env(tmp_path),
        expect_exit=True,
    )
    assert proxy.proc.returncode != 0
    assert "route '/r': key 'target'" in proxy.log()


# ---- credentials: STS slow, denied, called once -----------------------------------------------
def test_slow_sts_does_not_block_other_routes_and_is_called_once(start_proxy, tmp_path):
    with FakeSTS(delay=3) as sts, sts.verifier({KEY: (SECRET, None)}) as upstream:
        proxy = start_role_proxy(start_proxy, tmp_path, sts, upstream)
        baseline = []
        for _ in range(10):
            t0 = time.monotonic()
            assert get(f"{proxy.url}/static/warm").status_code == 200
            baseline.append(time.monotonic() - t0)
        results = {}

        def role_call(i):
            results[i] = get(f"{proxy.url}/role/x{i}", timeout=20)

        threads = [threading.Thread(target=role_call, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        during = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            assert get(f"{proxy.url}/static/y").status_code == 200
            during.append(time.monotonic() - t0)
        for t in threads:
            t.join(20)
        median = sorted(during)[len(during) // 2]
        print(
            f"static route latency: median {sorted(baseline)[5] * 1000:.1f} ms before, {median * 1000:.1f} ms while STS is slow"
        )
        assert len(during) >= 5 and max(during) < 0.5 and median < 0.1, during
        assert all(r.status_code == 200 for r in results.values()), [r.text for r in results.values()]
        for i in range(5):
            assert get(f"{proxy.url}/role/z{i}").status_code == 200
        assert sts.calls == 1  # prefetched at start-up, then cached


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDenied", "User is not authorized to perform: sts:AssumeRole"),
        ("ExpiredToken", "The security token included in the request is expired"),
        ("InvalidClientTokenId", "The security token included in the request is invalid"),
    ],
)
def test_sts_failure_answers_503_naming_route_and_role_then_recovers(start_proxy, tmp_path, code, message):
    with FakeSTS(deny=True) as sts, sts.verifier() as upstream:
        sts.deny_code, sts.deny_message = code, message
        proxy = start_role_proxy(start_proxy, tmp_path, sts, upstream)
        r = get(f"{proxy.url}/role/x")
        assert r.status_code == 503
        body = r.json()
        assert body["route"] == "/role" and code in body["message"] and message in body["message"]
        assert "arn:aws:iam::123456789012:role/r" in body["message"]
        assert upstream.received == []
        assert SECRET not in r.text
        sts.deny = False
        deadline = time.monotonic() + 10
        while (r := get(f"{proxy.url}/role/x")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert r.status_code == 200, r.text
