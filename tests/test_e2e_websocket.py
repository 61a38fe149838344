"""WebSockets through a real mitmdump: the upgrade request is signed (Authorization header, or in
its URL with `websocketAuth: query`), a local WebSocket upstream verifies that signature before
it accepts (awscrt), then echoes messages both ways until a clean close."""

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import KEY, SECRET, proxy_env, route
from peers.wsecho import VerifyingEchoServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def ws_upstream():
    with VerifyingEchoServer({KEY: (SECRET, None)}) as server:
        yield server


def ws_route(server, **extra):
    return route(f"http://127.0.0.1:{server.port}/production", **extra)


@pytest.mark.parametrize("auth", ["header", "query"])
def test_websocket_upgrade_is_signed_and_messages_flow_both_ways(start_proxy, tmp_path, ws_upstream, auth):
    proxy = start_proxy({"/ws": ws_route(ws_upstream, websocketAuth=auth)}, proxy_env(tmp_path))
    url = proxy.url.replace("http://", "ws://") + "/ws?client=test"
    with connect(url, subprotocols=["chat"], open_timeout=10) as ws:
        assert ws.subprotocol == "chat"  # the 101's handshake headers reached the client
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"echo: \x00\x01binary"
        for i in range(20):
            ws.send(f"m{i}")
        assert [ws.recv(timeout=10) for _ in range(20)] == [f"echo: m{i}" for i in range(20)]
    assert ws.close_code == 1000
    expected = "query signature ok" if auth == "query" else "ok"
    assert ws_upstream.verdicts == [expected], ws_upstream.verdicts
    path = ws_upstream.paths[0]
    assert path.startswith("/production?")
    assert ("X-Amz-Signature=" in path) == (auth == "query")
    log = proxy.log()
    assert "GET /ws?client=test -> http://127.0.0.1:" in log and " 101 " in log
    # the flow keeps no usable signature once the upgrade has gone
    assert SECRET not in log


def test_unsigned_or_tampered_upgrade_is_refused_by_the_upstream(ws_upstream):
    direct = f"ws://127.0.0.1:{ws_upstream.port}/production"
    with pytest.raises(InvalidStatus) as refused:
        connect(direct, open_timeout=10)
    assert refused.value.response.status_code == 403
    forged = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=" + KEY + "/20260101/eu-west-1/execute-api/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        "X-Amz-Date": "20260101T000000Z",
    }
    with pytest.raises(InvalidStatus) as refused:
        connect(direct, additional_headers=forged, open_timeout=10)
    assert refused.value.response.status_code == 403
    assert ws_upstream.verdicts[0] == "no Authorization header"
    assert "ok" not in ws_upstream.verdicts


def test_websocket_flow_and_messages_are_visible_in_mitmweb(tmp_path, ws_upstream):
    """The signed upgrade shows in mitmweb as a WebSocket flow with its messages (over its API)."""
    import yaml

    from helpers import running_mitmweb

    config = tmp_path / "routes.yaml"
    config.write_text(yaml.safe_dump({"proxysigv4": {"/ws": ws_route(ws_upstream)}}))
    with running_mitmweb(config, tmp_path, proxy_env(tmp_path)) as web:
        with connect(
            web.proxy.replace("http://", "ws://") + "/ws", subprotocols=["chat"], open_timeout=10
        ) as ws:
            ws.send("seen in mitmweb")
            assert ws.recv(timeout=10) == "echo: seen in mitmweb"
        flow = web.flow("/production")
        assert flow["response"]["status_code"] == 101
        assert flow["websocket"] is not None
        messages = web.get(f"/flows/{flow['id']}/messages/content/auto.json")
        shown = [(m["from_client"], m["text"]) for m in messages]
        assert shown == [(True, "seen in mitmweb"), (False, "echo: seen in mitmweb")]
        assert ws_upstream.verdicts == ["ok"]
