"""HTTP/2 upstream through a real mitmdump: a local TLS upstream (hypercorn, certificate from a
test CA that mitmproxy is told to trust with ssl_verify_upstream_trusted_ca) records the HTTP
version of each request and verifies its SigV4 signature with awscrt (`:authority` is what it
sees as Host). Upstream TLS verification stays on: without the CA the request fails."""

import asyncio
import subprocess
import threading

import pytest
import requests
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from helpers import KEY, SECRET, proxy_env, route
from peers.processes import free_port, wait_for_port
from peers.sigv4_verify import verify
from peers.tls import make_ca_and_server_cert

pytestmark = pytest.mark.e2e


class H2Upstream:
    """hypercorn over TLS (ALPN h2 and http/1.1): answers 200 if the SigV4 signature verifies."""

    def __init__(self, pem) -> None:
        self.port = free_port()
        self.seen: list[dict] = []
        config = HypercornConfig()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile, config.keyfile = str(pem["cert"]), str(pem["key"])
        config.alpn_protocols = ["h2", "http/1.1"]
        config.accesslog = config.errorlog = None
        self.config = config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def app(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"]]
        target = scope["raw_path"].decode() + (
            f"?{scope['query_string'].decode()}" if scope["query_string"] else ""
        )
        verdict = verify(scope["method"], target, headers, body, {KEY: (SECRET, None)})
        self.seen.append(
            {"http_version": scope["http_version"], "verdict": verdict.reason, "headers": headers}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200 if verdict.ok else 403,
                "headers": [(b"content-type", b"text/plain"), (b"x-amzn-requestid", b"h2")],
            }
        )
        await send(
            {"type": "http.response.body", "body": f"{scope['http_version']} {verdict.reason}".encode()}
        )

    async def _main(self) -> None:
        async def stop():
            while not self._stop.is_set():
                await asyncio.sleep(0.05)

        await serve(self.app, self.config, shutdown_trigger=stop)

    def __enter__(self):
        self._thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def pem(tmp_path):
    return make_ca_and_server_cert(tmp_path)


@pytest.fixture
def h2_upstream(pem):
    with H2Upstream(pem) as upstream:
        yield upstream


def h2_route(upstream, host="localhost", **extra):
    return route(f"https://{host}:{upstream.port}/prod", **extra)


def test_http1_client_gets_http2_upstream_when_the_route_asks(start_proxy, tmp_path, pem, h2_upstream):
    proxy = start_proxy(
        # two names for the upstream: the h2 choice is per target host and port
        {"/h2": h2_route(h2_upstream, http2=True), "/h1": h2_route(h2_upstream, host="127.0.0.1")},
        proxy_env(tmp_path),
        ("--set", f"ssl_verify_upstream_trusted_ca={pem['ca']}"),
    )
    r = requests.post(f"{proxy.url}/h2/items?x=1", json={"a": 1}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.text == "2 ok"
    assert r.headers["x-amzn-requestid"] == "h2"
    r = requests.get(f"{proxy.url}/h1/items", timeout=10)
    assert r.status_code == 200, r.text
    assert r.text == "1.1 ok"
    assert [s["http_version"] for s in h2_upstream.seen] == ["2", "1.1"]


def test_http2_client_over_tls_gets_http2_upstream(start_proxy, tmp_path, pem, h2_upstream):
    """curl speaking h2 over TLS to the proxy (mitmproxy's own certificate, hence -k on that side
    only); the proxy's upstream connection verifies the upstream against the test CA."""
    proxy = start_proxy(
        {"/api": h2_route(h2_upstream)},
        proxy_env(tmp_path),
        (
            "--set",
            f"ssl_verify_upstream_trusted_ca={pem['ca']}",
            "--set",
            f"confdir={tmp_path / 'mitmproxy'}",
        ),
    )
    port = proxy.url.rsplit(":", 1)[1]
    done = subprocess.run(
        [
            "curl",
            "-sk",
            "--http2",
            "-o",
            "-",
            "-w",
            "\n%{http_version}",
            f"https://127.0.0.1:{port}/api/items",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, client_version = done.stdout.rsplit("\n", 1)
    assert (body, client_version) == ("2 ok", "2"), (done.stdout, done.stderr, proxy.log()[-2000:])
    assert h2_upstream.seen[-1]["http_version"] == "2"


def test_upstream_tls_is_verified_by_default(start_proxy, tmp_path, h2_upstream):
    proxy = start_proxy({"/h2": h2_route(h2_upstream, http2=True)}, proxy_env(tmp_path))
    r = requests.get(f"{proxy.url}/h2/items", timeout=10)
    assert r.status_code == 502
    assert "certificate" in r.text.lower() or "verify" in r.text.lower(), r.text
    assert h2_upstream.seen == []


def test_http2_clients_get_the_json_error_answers_too(start_proxy, tmp_path):
    """Upstream refused (502) and route timeout (504) for an h2 client: JSON like for HTTP/1."""
    import time

    from peers.upstream import Upstream

    def slow(received):
        time.sleep(3)
        return 200, [], b"late"

    with Upstream(slow) as upstream:
        routes = {
            "/gone": {
                "target": f"http://127.0.0.1:{free_port()}",
                "service": "execute-api",
                "region": "eu-west-1",
            },
            "/slow": {"target": upstream.url, "service": "execute-api", "region": "eu-west-1", "timeout": 1},
        }
        proxy = start_proxy(routes, proxy_env(tmp_path), ("--set", f"confdir={tmp_path / 'mitmproxy'}"))
        port = proxy.url.rsplit(":", 1)[1]
        for path, status, error in (
            ("/gone/x", "502", "upstream_unreachable"),
            ("/slow/x", "504", "upstream_timeout"),
        ):
            done = subprocess.run(
                ["curl", "-sk", "--http2", "-D", "-", f"https://127.0.0.1:{port}{path}"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            head, _, body = done.stdout.partition("\n\n")  # text mode: \r\n read as \n
            assert head.startswith(f"HTTP/2 {status}"), done.stdout
            assert "content-type: application/json" in head.lower(), head
            assert f'"error": "{error}"' in body, body
