"""Presigned URLs: each one is re-signed independently with awscrt in query-string mode (from the
URL alone) and must carry the same signature; routing and hardening apply as for requests."""

import asyncio
import datetime
import os
import subprocess
import sys
from unittest import mock
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from botocore.credentials import ReadOnlyCredentials
from mitmproxy import exceptions
from mitmproxy.test import taddons

from peers.sigv4_verify import crt_query_signature
from proxysigv4_core import ProxySigV4
from proxysigv4_core.config import parse_config
from proxysigv4_core.presign import MAX_EXPIRES, PresignError, presign
from proxysigv4_core.routing import RequestRejected, RouteTable

KEY, SECRET = "AKIAPRESIGNTEST00001", "presign/secret"
WHEN = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)
TABLE = RouteTable(
    parse_config(
        {
            "proxysigv4": {
                "/api": "https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
                "/s3": "https://s3.eu-central-1.amazonaws.com",
                "/local": {"target": "http://127.0.0.1:9000/base", "service": "s3", "region": "us-east-1"},
            }
        },
        "test",
    ).routes
)


def crt_signature(url: str, method: str, token: str | None) -> tuple[str, str]:
    """(awscrt's signature, ours) for a presigned URL, re-signed by awscrt from the URL alone."""
    return crt_query_signature(method, url, {KEY: (SECRET, token)})


@pytest.mark.parametrize("token", [None, "session/token+=="])
@pytest.mark.parametrize(
    "method,path,host",
    [
        ("GET", "/api/items/42?limit=10&color=blue%20green", "abc123.execute-api.eu-west-1.amazonaws.com"),
        ("POST", "/api/a:b/c", "abc123.execute-api.eu-west-1.amazonaws.com"),
        ("GET", "/s3/bucket/report%202026.pdf", "s3.eu-central-1.amazonaws.com"),
        ("PUT", "/s3/bucket/a+b/caf%C3%A9!*'().txt", "s3.eu-central-1.amazonaws.com"),
        ("GET", "/s3/bucket/key?response-content-disposition=attachment", "s3.eu-central-1.amazonaws.com"),
        ("HEAD", "/local/bucket/x", "127.0.0.1:9000"),
    ],
)
def test_presigned_url_verifies_with_awscrt(method, path, host, token):
    creds = ReadOnlyCredentials(KEY, SECRET, token)
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        upstream, url = presign(TABLE, method, path, lambda route: creds, expires=600)
    parts = urlsplit(url)
    assert parts.netloc == host
    assert parts.path == upstream.path
    query = dict(parse_qsl(parts.query))
    assert query["X-Amz-Expires"] == "600"
    assert query["X-Amz-Credential"].startswith(
        f"{KEY}/20261126/{upstream.route.region}/{upstream.route.service}/"
    )
    assert (query.get("X-Amz-Security-Token") == token) if token else "X-Amz-Security-Token" not in query
    theirs, ours = crt_signature(url, method, token)
    assert theirs == ours


def test_a_tampered_presigned_url_does_not_verify():
    creds = ReadOnlyCredentials(KEY, SECRET, None)
    _, url = presign(TABLE, "GET", "/s3/bucket/key", lambda route: creds, expires=600)
    theirs, ours = crt_signature(url.replace("/key", "/other"), "GET", None)
    assert theirs != ours


@pytest.mark.parametrize(
    "method,path,expires,error",
    [
        ("GET", "/nowhere/x", 600, RequestRejected),
        ("GET", "/api/../admin", 600, RequestRejected),
        ("GET", "/api/%2e%2e/admin", 600, RequestRejected),
        ("GET", "/api/x", 0, PresignError),
        ("GET", "/api/x", MAX_EXPIRES + 1, PresignError),
        ("FETCH", "/api/x", 600, PresignError),
    ],
)
def test_presign_refuses(method, path, expires, error):
    creds = ReadOnlyCredentials(KEY, SECRET, None)
    with pytest.raises(error):
        presign(TABLE, method, path, lambda route: creds, expires=expires)


def test_presign_command_needs_loaded_credentials_and_then_signs(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    config = tmp_path / "routes.yaml"
    config.write_text("proxysigv4:\n  /s3: https://s3.eu-central-1.amazonaws.com\n")
    addon = ProxySigV4()

    async def before_and_after_loading(tctx):
        # Commands run on mitmproxy's event loop (mitmweb, console): so does this.
        provider = addon.credentials.provider(addon.state.table.routes[0])
        provider.reset()
        with pytest.raises(exceptions.CommandError, match="not loaded yet"):
            tctx.command(addon.presign, "GET", "/s3/bucket/key")
        await provider._background  # the refresh the refusal started
        return tctx.command(addon.presign, "GET", "/s3/bucket/key", "120")

    with taddons.context(addon) as tctx:
        tctx.configure(addon, listen_host="127.0.0.1", proxysigv4_config=str(config))
        url = asyncio.run(before_and_after_loading(tctx))
        assert url.startswith("https://s3.eu-central-1.amazonaws.com/bucket/key?")
        theirs, ours = crt_signature(url, "GET", None)
        assert theirs == ours
        with pytest.raises(exceptions.CommandError, match="no route matches"):
            tctx.command(addon.presign, "GET", "/elsewhere/key")


def test_presign_cli(tmp_path):
    from helpers import KEY as ENV_KEY
    from helpers import SECRET as ENV_SECRET
    from helpers import proxy_env

    config = tmp_path / "routes.yaml"
    config.write_text("proxysigv4:\n  /api: https://abc123.execute-api.eu-west-1.amazonaws.com/prod\n")
    env = proxy_env(tmp_path)  # the keys below, and no AWS configuration of the machine's own
    cli = [sys.executable, "-m", "proxysigv4_core.cli", "presign", "-c", str(config)]
    done = subprocess.run(
        [*cli, "GET", "/api/items?q=1", "--expires", "300"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert url.startswith("https://abc123.execute-api.eu-west-1.amazonaws.com/prod/items?")
    assert "route /api (execute-api/eu-west-1), GET, valid 300 s" in done.stderr
    theirs, ours = crt_query_signature("GET", url, {ENV_KEY: (ENV_SECRET, None)})
    assert theirs == ours
    bad = subprocess.run([*cli, "GET", "/api/x", "--expires", "0"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("proxysigv4: error: expires must be between 1 and 604800")


def test_presigned_secrets_are_hidden_for_the_record():
    from proxysigv4_core.presign import presign_url
    from proxysigv4_core.redaction import REDACTED, redact_query

    signed = presign_url(
        "GET",
        "https://abc.execute-api.eu-west-1.amazonaws.com/prod/chat?x=1",
        ReadOnlyCredentials(KEY, SECRET, "the/session+token=="),
        "execute-api",
        "eu-west-1",
        False,
        60,
    )
    query = urlsplit(signed.url).query
    for text in (redact_query(query), redact_query(signed.canonical_request)):
        assert "session" not in text and "X-Amz-Security-Token=" in text
        assert quote(REDACTED, safe="") in text
    assert dict(parse_qsl(query))["X-Amz-Signature"] not in redact_query(query)
    assert "x=1" in redact_query(query)


def test_a_host_route_presigns_a_full_url_for_its_own_host():
    from botocore.credentials import ReadOnlyCredentials

    from proxysigv4_core.config import parse_config
    from proxysigv4_core.presign import PresignError, presign
    from proxysigv4_core.routing import HostTable, RouteTable

    routes = parse_config({"proxysigv4": {"https://*.s3.eu-west-1.amazonaws.com": {}}}, "t").routes
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)
    upstream, url = presign(
        RouteTable(()),
        "GET",
        "https://bucket.s3.eu-west-1.amazonaws.com/a+b.pdf?x=1",
        lambda r: creds,
        600,
        HostTable(routes),
    )
    assert url.startswith("https://bucket.s3.eu-west-1.amazonaws.com/a%2Bb.pdf?")
    assert (
        "X-Amz-Credential=AKIDEXAMPLE%2F" in url
        and "%2Feu-west-1%2Fs3%2Faws4_request" in url
        and "X-Amz-Expires=600" in url
    )
    assert upstream.route.prefix == "https://*.s3.eu-west-1.amazonaws.com"
    with pytest.raises(PresignError, match="no host route matches"):
        presign(RouteTable(()), "GET", "https://other.example/x", lambda r: creds, 600, HostTable(routes))
