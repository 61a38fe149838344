"""mitmweb with the addon, driven over its HTTP API: the SigV4 content view, diagnosis of a
path changed after signing (by mitmproxy's own map_remote), refused flows marked,
replay re-signed, and the proxysigv4 commands."""

import os
from pathlib import Path

import pytest
import requests
import yaml

from helpers import (
    KEY,
    PASSWORD,
    SECRET,
    proxy_env,
    running_mitmweb,
    s3_request_as_received,
    sigv4_view_in_chromium,
    wait_for,
)
from peers.sigv4_verify import verify
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e


def s3_like(received):
    """Verify like AWS; on a mismatch answer as S3 does, with the canonical request it computed."""
    verdict = verify(received.method, received.target, received.headers, received.body, {KEY: (SECRET, None)})
    if verdict.ok:
        return 200, [("content-type", "text/plain")], b"signature ok"
    auth, request = s3_request_as_received(received)
    canonical = auth.canonical_request(request)
    string_to_sign = auth.string_to_sign(request, canonical)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request '
        "signature we calculated does not match the signature you provided.</Message>"
        f"<AWSAccessKeyId>{KEY}</AWSAccessKeyId><StringToSign>{string_to_sign}</StringToSign>"
        f"<CanonicalRequest>{canonical}</CanonicalRequest><RequestId>1</RequestId></Error>"
    )
    return 403, [("content-type", "application/xml")], body.encode()


@pytest.fixture
def web(tmp_path):
    with Upstream(s3_like) as upstream:
        config = tmp_path / "routes.yaml"
        route = {"target": upstream.url, "service": "s3", "region": "eu-west-1"}
        config.write_text(yaml.safe_dump({"proxysigv4": {"/ok": route, "/tampered": route}}))
        tamper = ("--map-remote", "|~hq x-amz-meta-tamper|/bucket/key$|/bucket/other")
        with running_mitmweb(config, tmp_path, proxy_env(tmp_path), *tamper) as web:
            yield web, upstream


def test_sigv4_view_diagnosis_markers_replay_and_commands(web):
    web, upstream = web
    assert (
        requests.put(
            f"{web.proxy}/ok/bucket/key", data=b"x", headers={"x-amz-meta-color": "blue"}, timeout=10
        ).status_code
        == 200
    )
    bad = requests.put(
        f"{web.proxy}/tampered/bucket/key",
        data=b"x",
        headers={"x-amz-meta-color": "blue", "x-amz-meta-tamper": "yes"},
        timeout=10,
    )
    assert bad.status_code == 403
    assert (
        "canonical URI (path): we signed '/bucket/key', AWS computed '/bucket/other'"
        in bad.headers["x-proxysigv4-diagnosis"]
    )
    assert requests.get(f"{web.proxy}/nowhere", timeout=10).status_code == 404

    ok = wait_for(
        lambda: (
            web.flow("/bucket/key")
            if any(f["response"] and f["response"]["status_code"] == 200 for f in web.get("/flows"))
            else None
        )
    )
    ok = next(f for f in web.get("/flows") if f["response"] and f["response"]["status_code"] == 200)
    view = web.get(f"/flows/{ok['id']}/request/content/sigv4.json")
    assert view["view_name"] == "SigV4"
    text = view["text"]
    assert "proxysigv4 signed this request" in text and "route           /ok" in text
    assert "--- canonical request ---\nPUT\n/bucket/key\n" in text and "x-amz-meta-color:blue" in text
    assert "--- string to sign ---\nAWS4-HMAC-SHA256\n" in text and "/eu-west-1/s3/aws4_request" in text
    assert SECRET not in text
    auto = web.get(f"/flows/{ok['id']}/request/content/auto.json")
    assert auto["view_name"] != "SigV4"

    tampered = next(f for f in web.get("/flows") if f["response"] and f["response"]["status_code"] == 403)
    assert tampered["marked"] == "⚠"  # mitmweb sends the emoji for ":warning:"
    assert "canonical URI (path)" in tampered["comment"]
    detail = web.get(f"/flows/{tampered['id']}/request/content/sigv4.json")["text"]
    assert "DIAGNOSIS (SignatureDoesNotMatch)" in detail and "-/bucket/key\n+/bucket/other" in detail

    refused = web.flow("/nowhere")
    assert refused["marked"] == "⛔" and refused["comment"].startswith("proxysigv4 refused (404 no_route)")
    # the URL the client asked for, not the --mode placeholder (reverse:http://127.0.0.1:9)
    request = refused["request"]
    assert (
        f"{request['scheme']}://{request['host']}:{request['port']}{request['path']}"
        == f"{web.proxy}/nowhere"
    )

    before = len(upstream.received)
    web.post(f"/flows/{ok['id']}/replay")
    wait_for(lambda: len(upstream.received) > before)
    replayed = upstream.received[-1]
    assert replayed.target == "/bucket/key"
    auth = dict((k.lower(), v) for k, v in replayed.headers)["authorization"]
    assert "Signature=<redacted>" not in auth  # signed afresh, not the redacted record
    replay_flow = wait_for(
        lambda: next((f for f in web.get("/flows") if f["id"] == ok["id"] and f["response"]), None)
    )
    assert replay_flow["response"]["status_code"] == 200

    routes = web.post("/commands/sigv.routes", json={"arguments": []})["value"]
    assert any(
        line.startswith("/ok -> http://127.0.0.1:") and "ok: AKIA…0001 via env" in line for line in routes
    )
    refreshed = web.post("/commands/sigv.refresh", json={"arguments": ["/ok"]})["value"]
    assert refreshed == "proxysigv4: re-resolving credentials for /ok"
    assert "map_remote" in web.log.read_text() and "after they are signed" in web.log.read_text()


def test_browser_shows_the_sigv4_view_and_diagnosis_in_mitmweb(web, tmp_path):
    web, _ = web
    requests.put(f"{web.proxy}/ok/bucket/key", data=b"x", headers={"x-amz-meta-color": "blue"}, timeout=10)
    requests.put(
        f"{web.proxy}/tampered/bucket/key",
        data=b"payload",
        headers={"x-amz-meta-color": "blue", "x-amz-meta-tamper": "yes"},
        timeout=10,
    )
    wait_for(lambda: len(web.get("/flows")) >= 2)
    shot = Path(os.environ.get("PROXYSIGV4_SCREENSHOT") or tmp_path / "mitmweb-sigv4.png")
    content = sigv4_view_in_chromium(
        f"{web.api}/?token={PASSWORD}",
        lambda page: page.get_by_text("/bucket/other").first,  # the flow the S3-like upstream refused
        "DIAGNOSIS (SignatureDoesNotMatch)",
        shot,
    )
    assert "-/bucket/key\n+/bucket/other" in content and "x-amz-meta-color:blue" in content
    assert shot.stat().st_size > 10_000
