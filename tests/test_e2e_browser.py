"""Browsers are clients too, end to end: a real mitmdump (and mitmweb, and HTTP/2 over TLS) in
front of an upstream that counts what it receives. A web page must not make the proxy sign:
cross-site requests, DNS rebinding and WebSocket hijacking are refused before anything is
signed or forwarded; a listed origin's page reads the answers (CORS), signatures verified."""

import json
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from helpers import (
    chromium,
    proxy_env,
    raw_exchange,
    route,
    running_mitmweb,
    verify_then_answer,
    wait_for,
)
from peers.processes import free_port
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e
ALLOWED_PORT = free_port()
ALLOWED = f"http://localhost:{ALLOWED_PORT}"


# Like AWS: 200 with an ETag when the signature verifies, else 403; the upstream's own CORS
# header must never reach the client.
verified = verify_then_answer(
    [("content-type", "application/json"), ("etag", '"e-1"'), ("x-amz-request-id", "r-1")]
    + [("access-control-allow-origin", "*")],
    lambda r, v: json.dumps({"verified": v.ok, "method": r.method, "body": r.body.decode()}).encode(),
)


def _route(upstream, service="execute-api", **extra):
    return route(upstream.url, service, "us-east-1", **extra)


@pytest.fixture
def counting():
    with Upstream(lambda r: (200, [("content-type", "text/plain")], b"reached")) as up:
        yield up


@pytest.fixture
def good():
    with Upstream(verified) as up:
        yield up


def routes_for(counting, good):
    return {
        "/sts": _route(counting, "sts"),  # a query-protocol API: form posts are its bodies
        "/api": _route(counting),
        "/ws": _route(counting),
        "/ok": _route(good, corsOrigins=[ALLOWED]),
    }


@pytest.fixture
def proxy(start_proxy, tmp_path, counting, good):
    return start_proxy(routes_for(counting, good), proxy_env(tmp_path))


def _port(proxy) -> int:
    return int(proxy.url.rsplit(":", 1)[1])


def _status(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body.strip().startswith(b"{") else {}


# ---- raw HTTP/1: every Host and Origin variant ------------------------------------------------
@pytest.mark.parametrize(
    "target, host, status",
    [
        ("/api/x", "localhost:{port}", 200),
        ("/api/x", "LOCALHOST:{port}", 200),
        ("/api/x", "localhost.:{port}", 200),
        ("/api/x", "127.0.0.1:{port}", 200),
        ("/api/x", "127.0.0.1", 200),
        ("/api/x", "[::1]:{port}", 200),
        ("/api/x", "rebind.test:{port}", 403),
        ("/api/x", "localhost.rebind.test", 403),
        ("/api/x", "127.0.0.1.nip.io:{port}", 403),
        ("/api/x", "[::2]:{port}", 403),
        ("http://rebind.test:{port}/api/x", "localhost:{port}", 403),  # absolute-form
        ("http://localhost:{port}/api/x", "localhost:{port}", 200),
    ],
)
def test_only_names_the_proxy_is_known_by_reach_it(proxy, counting, target, host, status):
    port = _port(proxy)
    request = f"GET {target.format(port=port)} HTTP/1.1\r\nHost: {host.format(port=port)}\r\nConnection: close\r\n\r\n"
    got, body = _status(raw_exchange(proxy, request.encode()))
    assert got == status, body
    assert len(counting.received) == (1 if status == 200 else 0)
    if status == 403:
        assert body["error"] == "host_not_allowed" and "allowedHosts" in body["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
        {"Origin": "http://localhost:{port}1"},  # another port
        {"Origin": "https://localhost:{port}"},  # another scheme
        {"Origin": "http://sub.localhost:{port}"},  # a subdomain
        {"Origin": ALLOWED},  # allowed on /ok only
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_site_requests_are_refused_and_never_reach_the_upstream(proxy, counting, headers):
    port = _port(proxy)
    sent = {k: v.format(port=port) for k, v in headers.items()}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = requests.post(
        f"{proxy.url}/sts/",
        data="Action=GetCallerIdentity&Version=2011-06-15",
        headers={**form, **sent},
        timeout=10,
    )
    assert r.status_code == 403 and r.json()["error"] == "cross_origin_refused", r.text
    assert "access-control-allow-origin" not in r.headers
    assert counting.received == []
    assert "proxysigv4: refused POST /sts/" in proxy.log()


def test_clients_without_browser_headers_and_typed_urls_work_as_before(proxy, counting):
    assert requests.get(f"{proxy.url}/api/a", timeout=10).status_code == 200
    assert (
        requests.get(f"{proxy.url}/api/b", headers={"Sec-Fetch-Site": "none"}, timeout=10).status_code == 200
    )
    own = {"Origin": proxy.url, "Sec-Fetch-Site": "same-origin"}  # a page of the proxy's own origin
    assert requests.get(f"{proxy.url}/api/c", headers=own, timeout=10).status_code == 200
    assert len(counting.received) == 3


def test_a_websocket_upgrade_from_another_origin_is_refused(proxy, counting):
    port = _port(proxy)
    upgrade = (
        f"GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: https://evil.example\r\n\r\n"
    )
    got, body = _status(raw_exchange(proxy, upgrade.encode(), timeout=3))
    assert (got, body["error"]) == (403, "cross_origin_refused")
    rebound = upgrade.replace(f"Host: 127.0.0.1:{port}", f"Host: rebind.test:{port}")
    rebound = rebound.replace("https://evil.example", f"http://rebind.test:{port}")
    got, body = _status(raw_exchange(proxy, rebound.encode(), timeout=3))
    assert (got, body["error"]) == (403, "host_not_allowed")
    assert counting.received == []


def test_a_preflight_from_the_listed_origin_is_answered_and_its_requests_signed(proxy, good, counting):
    asks = {
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "x-amz-meta-color, content-type, cookie",
    }
    r = requests.options(f"{proxy.url}/ok/obj", headers=asks, timeout=10)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert r.headers["access-control-allow-headers"] == "x-amz-meta-color, content-type"
    assert good.received == []  # the proxy answered it
    r = requests.put(
        f"{proxy.url}/ok/obj", data=b"v", headers={"Origin": ALLOWED, "x-amz-meta-color": "blue"}, timeout=10
    )
    assert r.status_code == 200 and r.json()["verified"] is True
    assert r.headers["access-control-allow-origin"] == ALLOWED  # the upstream's '*' never reaches
    assert r.headers["access-control-expose-headers"] == "date, etag, x-amz-request-id"
    refused = requests.options(f"{proxy.url}/api/obj", headers=asks, timeout=10)
    assert refused.status_code == 403 and refused.json()["error"] == "cross_origin_refused"
    assert counting.received == []


def test_any_origin_without_inbound_authentication_stops_the_proxy(start_proxy, tmp_path, counting):
    proxy = start_proxy(
        {"corsOrigins": ["*"], "/api": _route(counting)}, proxy_env(tmp_path), expect_exit=True
    )
    assert proxy.proc.returncode != 0
    assert "any web page" in proxy.log()


def test_http2_clients_are_held_to_the_same_rules(start_proxy, tmp_path, counting):
    proxy = start_proxy(
        {"/api": _route(counting)}, proxy_env(tmp_path), ("--set", f"confdir={tmp_path / 'mitmproxy'}")
    )
    port = _port(proxy)

    def curl(*args):
        done = subprocess.run(
            ["curl", "-sk", "--http2", "-o", "-", "-w", "\n%{http_code} %{http_version}", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout.rsplit("\n", 1)

    body, status = curl(f"https://localhost:{port}/api/x")
    assert status == "200 2", body
    body, status = curl(
        "--connect-to", f"rebind.test:{port}:127.0.0.1:{port}", f"https://rebind.test:{port}/api/x"
    )
    assert status == "403 2" and "host_not_allowed" in body
    body, status = curl("-H", "Origin: https://evil.example", f"https://localhost:{port}/api/x")
    assert status == "403 2" and "cross_origin_refused" in body
    assert len(counting.received) == 1


# ---- a real browser --------------------------------------------------------------------------
HOSTILE_PAGE = """<!doctype html><title>hostile</title><body><iframe name="sink"></iframe><script>
const proxy = "PROXY";
window.attempts = async () => {
  const out = {};
  const form = document.createElement("form");
  form.method = "POST"; form.action = proxy + "/sts/"; form.target = "sink";
  for (const [k, v] of [["Action", "GetCallerIdentity"], ["Version", "2011-06-15"]]) {
    const input = document.createElement("input"); input.name = k; input.value = v; form.appendChild(input);
  }
  document.body.appendChild(form); form.submit();
  await new Promise(r => document.querySelector("iframe").onload = r);
  out.form = "submitted";
  try { const r = await fetch(proxy + "/api/no-cors", {method: "POST", mode: "no-cors", body: "hello",
        headers: {"content-type": "text/plain"}}); out.nocors = r.type; } catch (e) { out.nocors = "error"; }
  try { const r = await fetch(proxy + "/api/put", {method: "PUT", body: "x",
        headers: {"content-type": "application/json"}}); out.put = r.status; } catch (e) { out.put = "blocked"; }
  out.img = await new Promise(r => { const i = new Image(); i.onload = () => r("loaded");
        i.onerror = () => r("error"); i.src = proxy + "/api/img"; });
  out.ws = await new Promise(r => { const ws = new WebSocket(proxy.replace("http", "ws") + "/ws/chat");
        ws.onopen = () => r("open"); ws.onerror = () => r("error"); });
  return out;
};
</script>"""

REBIND_PAGE = """<!doctype html><title>rebind</title><script>
window.attempts = async () => { const r = await fetch("/api/rebind"); return {status: r.status, body: await r.text()}; };
</script>"""

ALLOWED_PAGE = """<!doctype html><title>own front end</title><script>
const proxy = "PROXY";
window.attempts = async () => {
  const get = await fetch(proxy + "/ok/item?x=1");
  const post = await fetch(proxy + "/ok/item", {method: "POST", body: JSON.stringify({a: 1}),
      headers: {"content-type": "application/json"}});
  const put = await fetch(proxy + "/ok/obj", {method: "PUT", body: "blue thing",
      headers: {"x-amz-meta-color": "blue"}});
  return {get: [get.status, await get.json()], post: [post.status, await post.json()],
          put: [put.status, await put.json()], etag: put.headers.get("etag")};
};
</script>"""


def _serve(directory: Path, port: int) -> ThreadingHTTPServer:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_hostile_page_in_chromium_cannot_use_the_proxy_and_an_allowed_one_can(tmp_path, counting, good):
    config = tmp_path / "routes.yaml"
    config.write_text(yaml.safe_dump({"proxysigv4": routes_for(counting, good)}))
    pages = tmp_path / "pages"
    pages.mkdir()
    hostile_port = free_port()
    with running_mitmweb(config, tmp_path, proxy_env(tmp_path)) as web:
        (pages / "hostile.html").write_text(HOSTILE_PAGE.replace("PROXY", web.proxy))
        (pages / "allowed.html").write_text(ALLOWED_PAGE.replace("PROXY", web.proxy))
        servers = [_serve(pages, hostile_port), _serve(pages, ALLOWED_PORT)]
        proxy_port = int(web.proxy.rsplit(":", 1)[1])
        try:
            # rebind.test resolves to 127.0.0.1; Chromium's own Local Network Access checks, which
            # would stop a rebound page on its side too, are off: the proxy must hold alone (other
            # browsers, older ones, and a page the user allowed).
            with chromium(
                "--host-resolver-rules=MAP rebind.test 127.0.0.1",
                "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
                "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults",
            ) as browser:
                page = browser.new_page()
                page.goto(f"http://localhost:{hostile_port}/hostile.html")
                hostile = page.evaluate("window.attempts()")
                # DNS rebinding: the attacker served this page under its own name, which now
                # resolves to 127.0.0.1; the page's same-origin fetch reaches the proxy.
                rebind = browser.new_page()
                rebind.route(
                    f"http://rebind.test:{proxy_port}/",
                    lambda route: route.fulfill(body=REBIND_PAGE, content_type="text/html"),
                )
                rebind.goto(f"http://rebind.test:{proxy_port}/")
                rebound = rebind.evaluate("window.attempts()")
                own = browser.new_page()
                own.goto(f"{ALLOWED}/allowed.html")
                allowed = own.evaluate("window.attempts()")
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()
        flows = wait_for(
            lambda: (
                [f for f in web.get("/flows") if f.get("comment")] if len(web.get("/flows")) >= 9 else None
            )
        )
    print("\nhostile:", hostile, "\nrebind:", rebound, "\nallowed:", allowed)
    assert counting.received == []  # nothing the hostile pages tried reached the upstream
    assert hostile["put"] == "blocked" and hostile["ws"] == "error" and hostile["img"] == "error"
    assert rebound["status"] == 403 and "host_not_allowed" in rebound["body"]
    refused = {(f["request"]["method"], f["request"]["path"]): f for f in flows if "refused" in f["comment"]}
    for key, error in {
        ("POST", "/sts/"): "cross_origin_refused",
        ("POST", "/api/no-cors"): "cross_origin_refused",
        ("OPTIONS", "/api/put"): "cross_origin_refused",
        ("GET", "/api/img"): "cross_origin_refused",
        ("GET", "/ws/chat"): "cross_origin_refused",
        ("GET", "/api/rebind"): "host_not_allowed",
    }.items():
        assert key in refused and error in refused[key]["comment"], (key, sorted(refused))
        assert refused[key]["marked"] == "\u26d4"  # :no_entry:, as mitmweb's API gives it
        assert f"refused {key[0]} {key[1]}" in web.log.read_text()
    # the page on the listed origin read every answer, each signature verified upstream
    assert allowed["get"] == [200, {"verified": True, "method": "GET", "body": ""}]
    assert allowed["post"] == [200, {"verified": True, "method": "POST", "body": '{"a":1}'}]
    assert allowed["put"][0] == 200 and allowed["put"][1]["verified"] is True
    assert allowed["etag"] == '"e-1"'
    assert [r.method for r in good.received] == ["GET", "POST", "PUT"]


TOKEN = "browser-test-token-0123456789"


@pytest.mark.parametrize("auth", ["bearer", "proxyauth"])
def test_the_rules_hold_with_inbound_authentication_on(start_proxy, tmp_path, counting, good, auth):
    """A page that somehow holds the token (or Basic credentials) is still refused from a foreign
    origin; a preflight from the listed origin needs no token, its request does."""
    routes = routes_for(counting, good)
    if auth == "bearer":
        routes["bearerTokens"] = [TOKEN]
        args, credentials = (), {"Authorization": f"Bearer {TOKEN}"}
    else:
        args, credentials = ("--set", "proxyauth=user:pass"), {"Authorization": "Basic dXNlcjpwYXNz"}
    proxy = start_proxy(routes, proxy_env(tmp_path), args)
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", **credentials}
    r = requests.post(f"{proxy.url}/sts/", data="Action=GetCallerIdentity", headers=evil, timeout=10)
    assert r.status_code == 403 and r.json()["error"] == "cross_origin_refused"
    port = _port(proxy)
    r = requests.get(f"{proxy.url}/api/x", headers={"Host": f"rebind.test:{port}", **credentials}, timeout=10)
    assert r.status_code == 403 and r.json()["error"] == "host_not_allowed"
    asks = {
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization",
    }
    if auth == "bearer":  # mitmproxy checks proxyauth itself, before any addon: preflights need Basic there
        r = requests.options(f"{proxy.url}/ok/obj", headers=asks, timeout=10)
        assert r.status_code == 204 and r.headers["access-control-allow-headers"] == "authorization"
        assert requests.put(f"{proxy.url}/ok/obj", headers={"Origin": ALLOWED}, timeout=10).status_code == 401
    r = requests.put(f"{proxy.url}/ok/obj", data=b"v", headers={"Origin": ALLOWED, **credentials}, timeout=10)
    assert r.status_code == 200 and r.json()["verified"] is True
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert counting.received == []
