"""The addon's hooks through mitmproxy's own test helpers (taddons, tflow): configuration
errors, fail-closed answers, rewriting and signing of a flow."""

import asyncio
import dataclasses
import logging
import re
import time
import typing
import urllib.parse

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import exceptions
from mitmproxy.addons import proxyauth, proxyserver
from mitmproxy.test import taddons, tflow, tutils

from helpers import TARGET_PIECES
from proxysigv4_core import ProxySigV4, forwarding, intake, requestlog
from proxysigv4_core import addon as addon_module

API = "https://abc.execute-api.eu-west-1.amazonaws.com"


@pytest.fixture(autouse=True)
def static_credentials(monkeypatch, tmp_path):
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTEST00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # mitmproxy re-applies the previous (default) option value after a failed configure: give the
    # default ./proxysigv4.yaml a valid, explicit table so each test sees its own error.
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, {"allowUnauthenticatedRequests": True, "/default": API}, "proxysigv4.yaml")


def write_config(tmp_path, section, name="routes.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"proxysigv4": section}))
    return str(path)


def load(tctx, a, tmp_path, section, name="routes.yaml", **options):
    """Configure the addon with a route table, listening on loopback as the README says."""
    tctx.configure(
        a, listen_host="127.0.0.1", proxysigv4_config=write_config(tmp_path, section, name), **options
    )


def run(coro):
    return asyncio.run(coro)


def client_flow(path: str, method: str = "GET", body: bytes = b"", headers=()):
    req = tutils.treq(
        method=method.encode(),
        path=path.encode(),
        content=body,
        host="127.0.0.1",
        port=9,
        headers=((b"host", b"127.0.0.1:9"), *headers),
    )
    return as_reverse(tflow.tflow(req=req))


def as_reverse(flow):
    """A flow as it arrives on a reverse-mode listener (tflow's are regular mode's)."""
    from mitmproxy.proxy.mode_specs import ProxyMode

    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9")
    return flow


def test_bad_config_raises_options_error_naming_file_route_and_key(tmp_path):
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        path = write_config(tmp_path, {"/x": {"target": API + "/p", "servcie": "x"}})
        with pytest.raises(exceptions.OptionsError, match=r"routes.yaml: route '/x': unknown key 'servcie'"):
            tctx.configure(a, proxysigv4_config=path)


def test_missing_config_file_is_an_error(tmp_path):
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        with pytest.raises(exceptions.OptionsError, match="file not found"):
            tctx.configure(a, proxysigv4_config=str(tmp_path / "nope.yaml"))


def test_allow_unauthenticated_false_requires_proxyauth(tmp_path):
    a = ProxySigV4()
    with taddons.context(proxyauth.ProxyAuth(), a) as tctx:
        path = write_config(tmp_path, {"allowUnauthenticatedRequests": False, "/x": API})
        with pytest.raises(exceptions.OptionsError, match="allowUnauthenticatedRequests is false"):
            tctx.configure(a, proxysigv4_config=path)
        tctx.configure(a, proxyauth="user:pass", proxysigv4_config=path)
        assert a.state is not None


def test_allow_unauthenticated_true_does_not_crash(tmp_path):
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        tctx.configure(
            a,
            proxysigv4_config=write_config(tmp_path, {"allowUnauthenticatedRequests": True, "/x": API}),
        )
        assert a.state.config.allow_unauthenticated_requests is True


def test_eager_connection_strategy_is_switched_to_lazy(tmp_path):
    a = ProxySigV4()
    with taddons.context(proxyserver.Proxyserver(), a) as tctx:
        load(tctx, a, tmp_path, {"/x": API}, connection_strategy="eager")
        assert tctx.options.connection_strategy == "lazy"


def test_the_clients_host_header_is_kept_for_the_host_check(tmp_path):
    a = ProxySigV4()
    with taddons.context(proxyserver.Proxyserver(), a) as tctx:
        load(tctx, a, tmp_path, {"/x": API}, keep_host_header=False)
        assert tctx.options.keep_host_header


def test_request_is_rewritten_filtered_and_signed(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API + "/prod"})
            f = client_flow(
                "/x/items?b=1&a=2",
                "POST",
                b'{"a": 1}',
                (
                    (b"content-type", b"application/json"),
                    (b"cookie", b"c=1"),
                    (b"x-amz-meta-k", b"v"),
                ),
            )
            await a.request(f)
            assert f.response is None
            r = f.request
            assert (r.scheme, r.host, r.port, r.path) == (
                "https",
                "abc.execute-api.eu-west-1.amazonaws.com",
                443,
                "/prod/items?b=1&a=2",
            )
            assert r.headers["host"] == "abc.execute-api.eu-west-1.amazonaws.com"
            assert "cookie" not in r.headers
            assert r.headers["x-amz-meta-k"] == "v"
            assert r.headers["content-length"] == "8"
            auth = r.headers["authorization"]
            assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAUNITTEST00000001/")
            assert "/eu-west-1/execute-api/aws4_request" in auth
            meta = f.metadata["proxysigv4"]
            assert meta["route"] == "/x" and meta["client_path"] == "/x/items?b=1&a=2"
            assert meta["access_key_id"] == "AKIA…0001"
            assert "unit-test-secret" not in repr(meta)

    run(main())


def test_unmatched_request_gets_404_json_and_is_not_rewritten(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API})
            f = client_flow("/y")
            await a.request(f)
            assert f.response.status_code == 404
            assert f.response.json()["error"] == "no_route"
            assert f.request.host == "127.0.0.1"
            assert "authorization" not in f.request.headers

    run(main())


def test_internal_error_answers_500_and_never_forwards(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(forwarding, "sign_upstream", broken)

    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API})
            f = client_flow("/x/a")
            await a.request(f)
            assert f.response.status_code == 500
            body = f.response.json()
            assert body["error"] == "internal_error" and body["route"] == "/x"
            assert f.request.host == "127.0.0.1"

    run(main())


def test_credential_failure_answers_503_naming_the_route(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API})
            f = client_flow("/x/a")
            await a.request(f)
            assert f.response.status_code == 503
            assert f.response.json()["route"] == "/x"
            assert "no AWS credentials found" in f.response.json()["message"]

    run(main())


def test_request_streaming_is_turned_off_so_the_body_can_be_hashed(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API})
            f = client_flow("/x/a", "PUT", b"abc")
            f.request.stream = True  # as mitmproxy's stream_large_bodies would set it
            await a.requestheaders(f)
            assert not f.request.stream and f.response is None
            await a.request(f)
            assert f.request.headers["authorization"].startswith("AWS4-HMAC-SHA256")

    run(main())


def test_config_reload_swaps_the_route_table_whole(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/old": API}, "a.yaml")
            first = a.state
            load(tctx, a, tmp_path, {"/new": API}, "b.yaml")
            assert a.state is not first
            f = client_flow("/old/x")
            await a.request(f)
            assert f.response.status_code == 404
            with pytest.raises(exceptions.OptionsError):
                load(tctx, a, tmp_path, {"/bad": "nope"}, "c.yaml")
            f = client_flow("/new/x")
            await a.request(f)
            assert f.response is None  # the previous valid table stays in force

    run(main())


def test_response_headers_filtered_for_signed_flows_only(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API})
            f = client_flow("/x/a")
            await a.request(f)
            f.response = tutils.tresp(
                headers=((b"etag", b'"1"'), (b"set-cookie", b"a=1"), (b"content-length", b"7"))
            )
            a.responseheaders(f)
            assert f.response.headers.get("etag") == '"1"'
            assert "set-cookie" not in f.response.headers
            a.response(f)
            assert f.id not in a._in_flight

    run(main())


def test_replay_is_signed_afresh_without_rewriting_twice(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            # The target path equals the route prefix: a second rewrite would give /api/api/x.
            load(tctx, a, tmp_path, {"/api": API + "/api?stage=1"})
            f = client_flow("/api/x?q=1")
            await a.request(f)
            assert f.request.path == "/api/x?stage=1&q=1"
            first_auth = f.request.headers["authorization"]
            replay = f.copy()
            replay.is_replay = "request"
            replay.live = True  # as mitmproxy's replay makes it
            replay.request.headers["authorization"] = "stale"
            replay.request.headers["x-amz-date"] = "20000101T000000Z"
            await a.request(replay)
            assert replay.response is None
            assert replay.request.path == "/api/x?stage=1&q=1"
            assert replay.request.host == "abc.execute-api.eu-west-1.amazonaws.com"
            assert replay.request.headers["authorization"].startswith("AWS4-HMAC-SHA256")
            assert replay.request.headers["x-amz-date"] != "20000101T000000Z"
            assert (
                first_auth.split("Signature=")[0]
                == replay.request.headers["authorization"].split("Signature=")[0]
            )
            assert replay.metadata["proxysigv4"]["client_path"] == "/api/x?q=1"

            edited = f.copy()
            edited.is_replay = "request"
            edited.live = True
            edited.request.method = "DELETE"
            edited.request.path = "/api/other"
            await a.request(edited)
            assert edited.response is None and edited.request.path == "/api/other"

            escaped = f.copy()
            escaped.is_replay = "request"
            escaped.live = True
            escaped.request.host = "evil.example"
            await a.request(escaped)
            assert escaped.response.status_code == 400
            assert escaped.response.json()["error"] == "replay_target_changed"

            outside = f.copy()
            outside.is_replay = "request"
            outside.live = True
            outside.request.path = "/elsewhere"
            await a.request(outside)
            assert outside.response.status_code == 400

    run(main())


TOKEN = "correct-horse-battery-staple-42"


def test_listening_beyond_loopback_without_auth_refuses_to_start(tmp_path):
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        path = write_config(tmp_path, {"/x": API})
        with pytest.raises(
            exceptions.OptionsError, match=r"listens on 0.0.0.0 \(all interfaces\).*--listen-host 127.0.0.1"
        ):
            tctx.configure(a, listen_host="", proxysigv4_config=path)
        with pytest.raises(exceptions.OptionsError, match="listens on 192.168.1.5"):
            tctx.configure(a, listen_host="192.168.1.5", proxysigv4_config=path)
        tctx.configure(a, listen_host="::1", proxysigv4_config=path)  # loopback: allowed
        explicit = write_config(tmp_path, {"allowUnauthenticatedRequests": True, "/x": API}, "explicit.yaml")
        tctx.configure(a, listen_host="", proxysigv4_config=explicit)
        assert a.state.bearer is None
        with_tokens = write_config(tmp_path, {"bearerTokens": [TOKEN], "/x": API}, "tokens.yaml")
        tctx.configure(a, listen_host="0.0.0.0", proxysigv4_config=with_tokens)
        assert a.state.bearer is not None


@pytest.mark.parametrize(
    "token_entry", [TOKEN, "sha256:" + __import__("hashlib").sha256(TOKEN.encode()).hexdigest()]
)
def test_bearer_tokens_are_required_and_never_forwarded(tmp_path, token_entry):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(
                tctx,
                a,
                tmp_path,
                {"allowUnauthenticatedRequests": False, "bearerTokens": [token_entry], "/x": API},
            )
            for auth in (None, b"Bearer wrong-token-wrong-token", b"Basic dXNlcjpwYXNz", TOKEN.encode()):
                headers = ((b"authorization", auth),) if auth else ()
                f = client_flow("/x/a", headers=headers)
                await a.requestheaders(f)
                assert f.response.status_code == 401, auth
                assert f.response.headers["www-authenticate"] == 'Bearer realm="proxysigv4"'
                assert f.request.host == "127.0.0.1"
            f = client_flow("/x/a", headers=((b"authorization", b"Bearer " + TOKEN.encode()),))
            await a.requestheaders(f)
            await a.request(f)
            assert f.response is None
            assert TOKEN not in str(f.request.headers)
            assert f.request.headers["authorization"].startswith("AWS4-HMAC-SHA256")

    run(main())


@pytest.fixture(scope="module")
def shared_addon(tmp_path_factory):
    """One addon and event loop for all property examples (a context per example would leave
    mitmproxy log handlers pointing at closed loops)."""
    tmp_path = tmp_path_factory.mktemp("prop")
    a = ProxySigV4()
    context = taddons.context(a)
    tctx = context.__enter__()
    v2 = {"target": "https://v2.example.com/base", "service": "execute-api", "region": "eu-west-1"}
    load(tctx, a, tmp_path, {"/api": API + "/prod", "/api/v2": v2, "/api/v2/x": v2})
    yield a, tctx.master.event_loop
    context.__exit__(None, None, None)


# The credentials in the environment (a function-scoped autouse fixture) are the same for every example.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from(TARGET_PIECES), min_size=1, max_size=8),
    st.text(alphabet="ab=&%+?/.#", max_size=10),
)
def test_property_the_forwarded_flow_never_leaves_its_route(shared_addon, segments, query):
    """Through the addon's hooks: a request either gets the proxy's own 400/404, or the flow that
    mitmproxy will send goes to the route's scheme/host/port under its path prefix."""
    a, loop = shared_addon
    target = "/" + "/".join(segments) + ("?" + query if query else "")
    f = client_flow(target)
    f.request.path = target  # as received, unnormalised

    async def hooks():
        await a.requestheaders(f)
        await a.request(f)

    loop.run_until_complete(hooks())
    if f.response is not None:
        assert f.response.status_code in (400, 404), (target, f.response.content)
        assert f.request.host == "127.0.0.1"
        return
    r = f.request
    allowed = {"abc.execute-api.eu-west-1.amazonaws.com": "/prod", "v2.example.com": "/base"}
    prefix = allowed[r.host]
    assert (r.scheme, r.port) == ("https", 443) and r.headers["host"] == r.host
    path = r.path.split("?")[0]
    assert path == prefix or path.startswith(prefix + "/"), r.path
    for form in (path, urllib.parse.unquote(path), urllib.parse.unquote(urllib.parse.unquote(path))):
        assert ".." not in form.split("/") and "." not in form.split("/"), (target, r.path)
    assert "//" not in path
    assert r.headers["authorization"].startswith("AWS4-HMAC-SHA256")


def test_refused_flows_are_marked_and_commented_for_mitmweb(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API})
            f = client_flow("/nowhere")
            await a.requestheaders(f)
            assert f.marked == ":no_entry:"
            assert f.comment == "proxysigv4 refused (404 no_route): no route matches path '/nowhere'"
            assert f.metadata["proxysigv4"] == {
                "rejected": "no_route",
                "status": 404,
                "message": "no route matches path '/nowhere'",
                "client_path": "/nowhere",
            }
            ok = client_flow("/x/a")
            await a.requestheaders(ok)
            await a.request(ok)
            assert not ok.marked and not ok.comment

    run(main())


def test_routes_and_refresh_commands(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API, "/y": {"target": API, "profile": "absent"}})
            f = client_flow("/x/a")
            await a.request(f)
            await a.request(client_flow("/y/a"))
            lines = a.routes()
            assert lines[0] == (
                "/x -> https://abc.execute-api.eu-west-1.amazonaws.com (execute-api/eu-west-1); "
                "default credential chain; ok: AKIA…0001 via env"
            )
            assert (
                lines[1].startswith("/y -> ")
                and "profile absent; error: The config profile (absent) could not be found" in lines[1]
            )
            assert a.refresh("/x") == "proxysigv4: re-resolving credentials for /x"
            assert a.routes()[0].endswith("; not resolved yet")  # forgotten; resolving in the background
            await asyncio.sleep(0.5)
            assert a.routes()[0].endswith("ok: AKIA…0001 via env")
            with pytest.raises(exceptions.CommandError, match="no such route: /nope"):
                a.refresh("/nope")

    run(main())


def test_request_records_carry_what_a_log_record_carries():
    """The request line's record is made from a template: every attribute a LogRecord has, the
    message as it is ('%' included), and its own creation time."""

    before = time.time()
    first = requestlog._request_record("GET /a%25s -> x 200")
    second = requestlog._request_record("GET /b -> y 404")
    reference = requestlog.request_log.makeRecord("proxysigv4.request", logging.INFO, "f", 0, "m", None, None)
    assert set(vars(first)) == set(vars(reference))
    assert (first.levelname, first.name, first.getMessage()) == (
        "INFO",
        "proxysigv4.request",
        "GET /a%25s -> x 200",
    )
    assert second.getMessage() == "GET /b -> y 404" and first.getMessage() != second.getMessage()
    assert before <= first.created <= second.created <= time.time()
    assert second.msecs == int((second.created - int(second.created)) * 1000)
    assert second.relativeCreated - first.relativeCreated == pytest.approx(
        (second.created - first.created) * 1000
    )
    assert (
        logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        .format(second)
        .endswith("INFO GET /b -> y 404")
    )


@pytest.mark.parametrize("changed_after_signing", [False, True])
def test_secrets_are_hidden_in_the_flow_once_the_response_is_in(tmp_path, monkeypatch, changed_after_signing):
    """After the response the flow keeps no usable signature or session token, whether its
    headers are still the ones signed (swapped whole) or were changed since (set by name)."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "unit-test-session-token")
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        load(tctx, a, tmp_path, {"allowUnauthenticatedRequests": True, "/api": API})
        f = client_flow("/api/x?a=1", headers=((b"accept", b"*/*"),))
        run(a.requestheaders(f))
        run(a.request(f))
        sent = {k.lower(): v for k, v in f.request.headers.items()}
        signature = sent["authorization"].rsplit("Signature=", 1)[1]
        assert sent["x-amz-security-token"] == "unit-test-session-token" and len(signature) == 64
        if changed_after_signing:
            f.request.headers["x-added-later"] = "1"
        f.response = tutils.tresp()
        a.responseheaders(f)
        a.response(f)
        kept = {k.lower(): v for k, v in f.request.headers.items()}
        assert kept["x-amz-security-token"] == "<redacted>"
        assert kept["authorization"].endswith("Signature=<redacted>")
        assert "AKIAUNITTEST00000001" not in kept["authorization"] and "AKIA…0001" in kept["authorization"]
        assert signature not in str(f.request.headers) and "unit-test-session-token" not in str(
            f.request.headers
        )
        assert list(kept) == list(sent) + (["x-added-later"] if changed_after_signing else [])
        assert {
            k: v
            for k, v in kept.items()
            if k not in ("authorization", "x-amz-security-token", "x-added-later")
        } == {k: v for k, v in sent.items() if k not in ("authorization", "x-amz-security-token")}


def test_the_request_line_names_method_paths_status_duration_size_and_route(tmp_path, caplog):
    """One line per request at info: signed and answered, answered without a length, refused."""
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        load(tctx, a, tmp_path, {"allowUnauthenticatedRequests": True, "/api": API})
        with caplog.at_level(logging.INFO, logger="proxysigv4.request"):
            for path, response_headers, content in (
                (
                    "/api/x?a=1",
                    (b"content-type", b"application/json", b"Content-Length", b"11"),
                    b'{"ok":true}',
                ),
                ("/api/y", (b"content-type", b"text/plain"), b"no length"),
            ):
                f = client_flow(path)
                run(a.requestheaders(f))
                run(a.request(f))
                f.response = tutils.tresp(content=content)
                f.response.headers.fields = tuple(
                    zip(response_headers[::2], response_headers[1::2], strict=True)
                )
                a.responseheaders(f)
                a.response(f)
            refused = client_flow("/nope/z")
            run(a.requestheaders(refused))
    lines = [r.getMessage() for r in caplog.records if r.name == "proxysigv4.request"]
    assert len(lines) == 3, lines
    assert re.fullmatch(
        rf"GET /api/x\?a=1 -> {re.escape(API)}/x\?a=1 200 \d+\.\dms 11B route=/api execute-api/eu-west-1",
        lines[0],
    ), lines[0]
    assert re.fullmatch(
        rf"GET /api/y -> {re.escape(API)}/y 200 \d+\.\dms 9B route=/api execute-api/eu-west-1", lines[1]
    ), lines[1]
    assert re.fullmatch(r"GET /nope/z -> - 404 \d+\.\dms \d+B route=- -", lines[2]), lines[2]


_HEADER_NAMES = st.sampled_from(
    [b"content-length", b"Content-Length", b"CONTENT-LENGTH", b"content-type", b"x-len"]
)


def test_the_request_line_is_written_once_the_answer_is_on_its_way(tmp_path, caplog):
    """Inside mitmproxy's event loop the line is logged on the loop's next turn, after the response
    hook has returned (mitmproxy sends the response in between): the log handlers' work does not
    delay the answer. Refused requests likewise."""
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        load(tctx, a, tmp_path, {"allowUnauthenticatedRequests": True, "/api": API})

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "proxysigv4.request"]

        async def main() -> list[tuple[int, int]]:
            counts = []
            with caplog.at_level(logging.INFO, logger="proxysigv4.request"):
                f = client_flow("/api/x")
                await a.requestheaders(f)
                await a.request(f)
                f.response = tutils.tresp(content=b"ok")
                a.responseheaders(f)
                a.response(f)
                in_hook = len(lines())
                await asyncio.sleep(0)
                counts.append((in_hook, len(lines())))
                await a.requestheaders(client_flow("/nope"))
                in_hook = len(lines())
                await asyncio.sleep(0)
                counts.append((in_hook, len(lines())))
            return counts

        assert run(main()) == [(0, 1), (1, 2)]
    assert " 200 " in lines()[0] and lines()[1].startswith("GET /nope -> - 404 ")


@pytest.mark.parametrize("algorithm", ["sigv4", "sigv4a"])
@pytest.mark.parametrize("in_thread", [True, False])
def test_a_large_body_is_hashed_while_the_event_loop_goes_on(tmp_path, monkeypatch, in_thread, algorithm):
    """The signature covers the body's SHA-256. From HASH_IN_THREAD_MIN bytes it is computed in a
    thread: the event loop keeps serving others meanwhile (a 1 ms ticker never waits more than a
    fraction of the hash's time). The control (in_thread False: the threshold above the body) shows
    the ticker does see a hash made on the loop. Either way the request is signed over the body.
    SigV4a too: the CRT signer is given the digest (it would otherwise hash the body itself, on the
    loop)."""
    import hashlib

    probe = bytes(range(256)) * (32 << 12)  # 8 MiB
    timings = []
    for _ in range(3):  # the fastest of three: a first, cold run overestimates the time per byte
        started = time.perf_counter()
        hashlib.sha256(probe).digest()
        timings.append(time.perf_counter() - started)
    per_byte = min(timings) / len(probe)
    # a body whose hash takes about 100 ms on this machine (16 to 512 MiB)
    body = bytes(range(256)) * (min(512 << 20, max(16 << 20, int(0.1 / per_byte))) // 256)
    started = time.perf_counter()
    digest = hashlib.sha256(body).hexdigest()
    hash_seconds = time.perf_counter() - started
    if not in_thread:
        monkeypatch.setattr(addon_module, "HASH_IN_THREAD_MIN", len(body) + 1)
    gaps: list[float] = []

    async def ticker():
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            route = {"target": API, "bufferLimit": "1g", "signingAlgorithm": algorithm}
            load(tctx, a, tmp_path, {"/x": route})
            f = client_flow("/x/a", "PUT", body)
            await a.requestheaders(f)
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.02)
            await a.request(f)
            await asyncio.sleep(0.005)
            tick.cancel()
            scheme = "AWS4-HMAC-SHA256" if algorithm == "sigv4" else "AWS4-ECDSA-P256-SHA256"
            assert f.response is None and f.request.headers["authorization"].startswith(scheme)
            assert f.metadata["proxysigv4"]["canonical_request"].endswith(digest)

    run(main())
    assert hash_seconds > 0.03, hash_seconds  # long enough for the difference to show
    if in_thread:
        assert max(gaps) < hash_seconds / 2, (max(gaps), hash_seconds)
    else:
        assert max(gaps) > hash_seconds / 2, (max(gaps), hash_seconds)


# ---- browsers (browser.py): Host names, cross-site refusals, CORS ----------------------------
def reverse_flow(path: str, method: str = "GET", headers=(), host: bytes = b"127.0.0.1:8080"):
    """A flow as a reverse listener receives it: the client's own Host (keep_host_header)."""
    from mitmproxy.proxy.mode_specs import ProxyMode

    req = tutils.treq(
        method=method.encode(),
        path=path.encode(),
        host="127.0.0.1",
        port=9,
        headers=((b"host", host), *headers),
    )
    f = tflow.tflow(req=req)
    f.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9")
    return f


BROWSER_ROUTES = {
    "corsOrigins": ["http://localhost:4000"],
    "/x": {"target": API, "corsOrigins": ["http://localhost:3000"]},
    "/y": API,
}
EVIL = (b"origin", b"https://evil.example")


@pytest.mark.parametrize(
    "host, headers, error",
    [
        (b"rebind.test:8080", (), "host_not_allowed"),  # DNS rebinding: the attacker's name
        (b"127.0.0.1:8080", (EVIL, (b"sec-fetch-site", b"cross-site")), "cross_origin_refused"),
        (b"127.0.0.1:8080", ((b"origin", b"null"),), "cross_origin_refused"),
        (b"127.0.0.1:8080", ((b"sec-fetch-site", b"same-site"),), "cross_origin_refused"),  # <img>
        (b"127.0.0.1:8080", ((b"origin", b"http://localhost:3000"),), "cross_origin_refused"),  # /y's list
        (b"localhost:8080", ((b"origin", b"http://localhost:3001"),), "cross_origin_refused"),
    ],
)
def test_web_pages_cannot_make_the_proxy_sign(tmp_path, caplog, host, headers, error):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, BROWSER_ROUTES)
            f = reverse_flow("/y/a", "POST", ((b"content-type", b"text/plain"), *headers), host)
            await a.requestheaders(f)
            await a.request(f)
            assert f.response.status_code == 403 and f.response.json()["error"] == error
            # not retargeted to the route's API: the flow shows what the client asked for
            assert (f.request.host, f.request.port) == (host.decode().split(":")[0], 8080)
            assert "authorization" not in f.request.headers
            assert f.marked == ":no_entry:" and error in f.comment
            assert "access-control-allow-origin" not in f.response.headers

    with caplog.at_level(logging.WARNING, "proxysigv4"):
        run(main())
    assert any("refused POST /y/a" in r.getMessage() for r in caplog.records)


def test_path_routes_and_host_check_are_for_reverse_listeners_and_replays_are_the_operators(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, BROWSER_ROUTES)
            for host in (b"localhost:8080", b"LOCALHOST.:1", b"[::1]:8080", b"127.0.0.1"):
                f = reverse_flow("/y/a", host=host)
                await a.requestheaders(f)
                await a.request(f)
                assert f.response is None and f.request.host == "abc.execute-api.eu-west-1.amazonaws.com", (
                    host
                )
            # another listener's flow names its own host: passed through untouched (path routes
            # and the browser rules are a reverse listener's)
            f = tflow.tflow(req=tutils.treq(path=b"/y/a", headers=((b"host", b"elsewhere.example"), EVIL)))
            before = f.request.copy()
            await a.requestheaders(f)
            await a.request(f)
            assert f.response is None and f.request.data == before.data and "proxysigv4" not in f.metadata
            replay = reverse_flow("/y/a", "POST", (EVIL, (b"sec-fetch-site", b"cross-site")), b"evil.example")
            replay.is_replay = "request"
            await a.requestheaders(replay)
            await a.request(replay)
            assert replay.response is None and "authorization" in replay.request.headers

    run(main())


def test_preflight_from_an_allowed_origin_is_answered_by_the_proxy(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, BROWSER_ROUTES)
            asks = (
                (b"origin", b"http://localhost:3000"),
                (b"access-control-request-method", b"PUT"),
                (b"access-control-request-headers", b"content-type,x-amz-meta-color,cookie"),
                (b"sec-fetch-site", b"same-site"),
            )
            f = reverse_flow("/x/a", "OPTIONS", asks)
            await a.requestheaders(f)
            assert f.response.status_code == 204
            h = f.response.headers
            assert h["access-control-allow-origin"] == "http://localhost:3000"
            assert h["access-control-allow-headers"] == "content-type, x-amz-meta-color"
            assert h["vary"] == "Origin" and "PUT" in h["access-control-allow-methods"]
            assert f.request.host == "127.0.0.1" and "authorization" not in f.request.headers
            refused = reverse_flow("/y/a", "OPTIONS", asks)  # /y lists no origin
            await a.requestheaders(refused)
            assert refused.response.status_code == 403
            assert refused.response.json()["error"] == "cross_origin_refused"
            # a flow requestheaders did not see (injected by another addon): answered in `request`
            injected = reverse_flow("/x/a", "OPTIONS", asks)
            await a.request(injected)
            assert injected.response.status_code == 204 and "authorization" not in injected.request.headers
            assert injected.response.headers["access-control-allow-origin"] == "http://localhost:3000"

    run(main())


def test_an_allowed_origin_gets_the_signed_answer_with_cors_headers_and_no_upstream_cors(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, BROWSER_ROUTES)
            origin = ((b"origin", b"http://localhost:3000"), (b"sec-fetch-site", b"same-site"))
            f = reverse_flow("/x/a", "PUT", origin)
            await a.requestheaders(f)
            await a.request(f)
            assert f.response is None and f.request.headers["authorization"].startswith("AWS4-HMAC-SHA256")
            assert "origin" not in f.request.headers  # not in the request allowlist
            f.response = tutils.tresp(
                headers=(
                    (b"etag", b'"1"'),
                    (b"content-length", b"7"),
                    (b"access-control-allow-origin", b"*"),
                    (b"access-control-allow-credentials", b"true"),
                )
            )
            a.responseheaders(f)
            h = f.response.headers
            assert h.get_all("access-control-allow-origin") == ["http://localhost:3000"]
            assert "access-control-allow-credentials" not in h
            assert h["access-control-expose-headers"] == "etag" and h["vary"] == "Origin"
            # refused, before any route is known: a globally allowed page may read why
            missing = reverse_flow("/nowhere", "GET", ((b"origin", b"http://localhost:4000"),))
            await a.requestheaders(missing)
            assert missing.response.status_code == 404
            assert missing.response.headers["access-control-allow-origin"] == "http://localhost:4000"

    run(main())


@pytest.mark.parametrize("origin", ["*", "null"])
def test_any_origin_needs_inbound_authentication(tmp_path, origin):
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        with pytest.raises(exceptions.OptionsError, match="any web page"):
            load(tctx, a, tmp_path, {"corsOrigins": [origin], "/x": API})
        load(
            tctx, a, tmp_path, {"corsOrigins": [origin], "bearerTokens": ["t" * 20], "/x": API}, name="b.yaml"
        )
        assert a.state.bearer is not None


# ---- a request's stages (intake.prepare): a refusal names what the request had reached ----------
def _outcome(a, path, method="GET", headers=(), host=b"127.0.0.1:8080"):
    f = reverse_flow(path, method, headers, host)
    return intake.prepare(a.state, f, intake.received_for(a.state, f))


SAME_SITE = (b"sec-fetch-site", b"same-site")


def test_prepare_refuses_at_the_stage_the_request_reached(tmp_path):
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        load(tctx, a, tmp_path, BROWSER_ROUTES)
        # the Host check fails first: nothing known but the request
        o = _outcome(a, "/x/a", host=b"rebind.test:8080")
        assert isinstance(o, intake.Refusal) and type(o.stage) is intake.Received
        assert (o.error.error, o.stage.route_prefix, o.stage.cors_origin) == ("host_not_allowed", None, None)
        # past the browser rules, from an origin every route allows, but no route: readable there
        o = _outcome(a, "/nowhere", headers=((b"origin", b"http://localhost:4000"), SAME_SITE))
        assert isinstance(o, intake.Refusal) and type(o.stage) is intake.Checked
        assert (o.error.error, o.stage.route_prefix) == ("no_route", None)
        assert (o.stage.cors_origin, o.stage.host) == ("http://localhost:4000", "127.0.0.1:8080")
        # routed to /y, whose origins do not include /x's: refused, naming /y, readable by nobody
        o = _outcome(a, "/y/a", headers=((b"origin", b"http://localhost:3000"), SAME_SITE))
        assert isinstance(o, intake.Refusal) and type(o.stage) is intake.Routed
        assert (o.error.error, o.stage.route_prefix, o.stage.cors_origin) == (
            "cross_origin_refused",
            "/y",
            None,
        )
        # routed and allowed, then the body plan refuses: the route and the origin are known
        chunk_signed = ((b"x-amz-content-sha256", b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),)
        o = _outcome(a, "/x/a", "PUT", ((b"origin", b"http://localhost:3000"), SAME_SITE, *chunk_signed))
        assert isinstance(o, intake.Refusal) and type(o.stage) is intake.Routed
        assert (o.error.error, o.stage.route_prefix) == ("unsupported_payload_mode", "/x")
        assert o.stage.cors_origin == "http://localhost:3000"
        # a request that passes every stage: planned, with its route and upstream
        o = _outcome(a, "/x/a", "PUT", ((b"origin", b"http://localhost:3000"), SAME_SITE))
        assert isinstance(o, intake.Planned) and o.route.prefix == "/x" and o.plan.payload_hash is None
        assert (o.upstream.url, o.client_target, o.cors_origin) == (
            API + "/a",
            "/x/a",
            "http://localhost:3000",
        )


def test_the_stages_fields_are_final_so_mypy_keeps_them_unchanged():
    stages = (intake.Received, intake.Checked, intake.Routed, intake.Planned, intake.Preflight)
    for stage in stages:
        for field in dataclasses.fields(stage):
            assert typing.get_origin(field.type) is typing.Final, (stage.__name__, field.name)
    assert {f.name for f in dataclasses.fields(intake.Planned)} == {
        "client_target",
        "started",
        "host_route",
        "cors_origin",
        "upstream",
        "plan",
    }


def test_an_internal_failure_in_prepare_is_a_refusal_not_an_exception(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(intake, "plan_request", broken)
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        load(tctx, a, tmp_path, BROWSER_ROUTES)
        o = _outcome(a, "/x/a")
        assert isinstance(o, intake.Refusal) and isinstance(o.error, RuntimeError)
        assert type(o.stage) is intake.Routed and o.stage.route_prefix == "/x"


def test_prepare_gives_a_preflight_its_answer_and_a_planned_request_its_route(tmp_path):
    a = ProxySigV4()
    with taddons.context(a) as tctx:
        load(tctx, a, tmp_path, BROWSER_ROUTES)
        asks = ((b"origin", b"http://localhost:3000"), (b"access-control-request-method", b"PUT"))
        o = _outcome(a, "/x/a", "OPTIONS", asks)
        assert isinstance(o, intake.Preflight) and o.route_prefix == "/x"
        assert ("access-control-allow-origin", "http://localhost:3000") in o.headers
        # /y does not allow that origin: not answered as a preflight; the OPTIONS is planned as any
        # request would be, and refused once routed (the origin is not /y's)
        o = _outcome(a, "/y/a", "OPTIONS", asks)
        assert isinstance(o, intake.Refusal) and o.stage.route_prefix == "/y"


# ---- host routes: a forward proxy's requests signed for their own host -------------------------
HOST_ROUTES = {
    "https://*.execute-api.eu-west-1.amazonaws.com": {},
    "https://abc.execute-api.eu-west-1.amazonaws.com/prod": {"corsOrigins": ["http://localhost:3000"]},
    "/x": API,
}


GLOB, EXACT = (
    "https://*.execute-api.eu-west-1.amazonaws.com",
    "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
)


def forward_flow(url: str, method: str = "GET", headers=()):
    """A flow as a regular (forward) listener receives it: the request names its own host."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    req = tutils.treq(
        method=method.encode(),
        scheme=parts.scheme.encode(),
        host=parts.hostname,
        port=parts.port or 443,
        path=(parts.path + (f"?{parts.query}" if parts.query else "")).encode(),
        headers=((b"host", parts.netloc.encode()), *headers),
    )
    return tflow.tflow(req=req)


def test_a_host_route_signs_a_forward_proxied_request_for_its_own_host(tmp_path):
    client_signed = (
        (
            b"authorization",
            b"AWS4-HMAC-SHA256 Credential=AKIAOTHER/20260101/eu-west-1/execute-api/aws4_request, ",
        ),
        (b"x-amz-date", b"20260101T000000Z"),
        (b"x-amz-security-token", b"client-token"),
        (b"x-amz-region-set", b"*"),
        (b"x-amz-meta-kept", b"yes"),
    )

    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, HOST_ROUTES)
            for url, route in (
                ("https://abc.execute-api.eu-west-1.amazonaws.com/prod/items?b=1&a=2", EXACT),
                ("https://zzz.execute-api.eu-west-1.amazonaws.com/stage/x", GLOB),
                ("https://abc.execute-api.eu-west-1.amazonaws.com/other", GLOB),  # outside /prod
            ):
                f = forward_flow(url, headers=client_signed)
                await a.requestheaders(f)
                await a.request(f)
                r = f.request
                assert f.response is None and r.url == url, (url, r.url)
                assert (
                    f.metadata["proxysigv4"]["route"].endswith(route)
                    or route in f.metadata["proxysigv4"]["route"]
                )
                auth = r.headers["authorization"]
                assert (
                    auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAUNITTEST00000001/")
                    and "AKIAOTHER" not in auth
                )
                assert "/eu-west-1/execute-api/aws4_request" in auth
                assert (
                    r.headers["x-amz-date"] != "20260101T000000Z" and "x-amz-security-token" not in r.headers
                )
                assert "x-amz-region-set" not in r.headers and r.headers["x-amz-meta-kept"] == "yes"
                assert r.headers["host"] == r.host
            for url in (
                "https://other.example/x/a",
                "https://abc.execute-api.us-east-1.amazonaws.com/prod/x",
            ):
                f = forward_flow(url, headers=client_signed)  # no host route: untouched
                before = f.request.copy()
                await a.requestheaders(f)
                await a.request(f)
                assert f.response is None and f.request.data == before.data
            evil = forward_flow(
                "https://abc.execute-api.eu-west-1.amazonaws.com/prod/x",
                "POST",
                ((b"origin", b"https://evil.example"), (b"sec-fetch-site", b"cross-site")),
            )
            await a.requestheaders(evil)
            assert (
                evil.response.status_code == 403 and evil.response.json()["error"] == "cross_origin_refused"
            )
            assert "authorization" not in evil.request.headers
            allowed = forward_flow(
                "https://abc.execute-api.eu-west-1.amazonaws.com/prod/x",
                headers=((b"origin", b"http://localhost:3000"),),
            )
            await a.requestheaders(allowed)
            await a.request(allowed)
            assert allowed.response is None and allowed.request.headers["authorization"].startswith(
                "AWS4-HMAC"
            )

    run(main())


def test_the_most_specific_host_route_wins():
    from proxysigv4_core.config import parse_config
    from proxysigv4_core.routing import HostTable

    routes = parse_config({"proxysigv4": HOST_ROUTES}, "t").routes
    table = HostTable(tuple(r for r in routes if not r.prefix.startswith("/")))
    host = "abc.execute-api.eu-west-1.amazonaws.com"
    assert table.match("https", host, 443, "/prod/x").prefix.endswith("/prod")
    assert table.match("https", host, 443, "/prod").prefix.endswith("/prod")
    assert table.match("https", host, 443, "/production").prefix.startswith("https://*.")
    assert table.match("https", "a.b.execute-api.eu-west-1.amazonaws.com", 443, "/") is None  # one label
    assert (
        table.match("http", host, 443, "/prod") is None and table.match("https", host, 8443, "/prod") is None
    )
    assert table.match("https", "ABC.execute-api.eu-west-1.amazonaws.com.", 443, "/prod/x").prefix.endswith(
        "/prod"
    )


def test_host_routes_on_a_forward_listener_beyond_loopback_need_proxyauth(tmp_path):
    """Bearer tokens are no guard there (the app's Authorization is its own): proxyauth is."""
    a = ProxySigV4()
    routes = {"https://abc.execute-api.eu-west-1.amazonaws.com": {}, "bearerTokens": ["t" * 20]}
    with taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), a) as tctx:
        with pytest.raises(
            exceptions.OptionsError, match="host routes sign requests that a forward listener"
        ):
            load(tctx, a, tmp_path, routes, mode=["regular@0.0.0.0:0"])
        load(tctx, a, tmp_path, routes, name="b.yaml", mode=["regular@0.0.0.0:0"], proxyauth="user:pass")
        assert a.state is not None and a.state.hosts
        load(
            tctx,
            a,
            tmp_path,
            routes,
            name="c.yaml",
            mode=["reverse:http://127.0.0.1:9@0.0.0.0:0"],
            proxyauth="",
        )
        assert a.state.bearer is not None  # a reverse listener beyond loopback: the tokens guard it


# ---- an app's own signatures, explained (appsigned.py) -----------------------------------------
def _app_signed(
    url: str, secret: str = "unit-test-secret", key: str = "AKIAUNITTEST00000001", tamper_path=None
):
    """A forward flow the app signed with botocore itself (optionally with its path changed after)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials

    signed = AWSRequest(
        method="POST", url=url, data=b'{"a": 1}', headers={"content-type": "application/json"}
    )
    SigV4Auth(ReadOnlyCredentials(key, secret, None), "execute-api", "eu-west-1").add_auth(signed)
    f = forward_flow(url, "POST", tuple((k.lower().encode(), v.encode()) for k, v in signed.headers.items()))
    f.request.content = b'{"a": 1}'
    if tamper_path:
        f.request.path = tamper_path
    return f


def test_an_apps_own_signature_is_recorded_checked_and_never_changed(tmp_path):
    from proxysigv4_core import appsigned

    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API})
            await a.credentials.provider(a.state.table.routes[0]).get()  # the proxy's own chain, loaded
            url = "https://other.execute-api.eu-west-1.amazonaws.com/prod/items?b=1"
            for flow, verdict in (
                (_app_signed(url), appsigned.MATCHES),
                (_app_signed(url, tamper_path="/prod/changed?b=1"), appsigned.DIFFERS),
                (_app_signed(url, secret="another-secret"), appsigned.DIFFERS),
                (_app_signed(url, key="AKIANOTOURS0000000001"), None),  # no secret for that key
            ):
                before = flow.request.copy()
                await a.requestheaders(flow)
                await a.request(flow)
                assert flow.response is None and flow.request.data == before.data  # passed through as is
                meta = flow.metadata["proxysigv4"]
                assert meta["app_signed"] and meta["credential_scope"].endswith(
                    "/eu-west-1/execute-api/aws4_request"
                )
                assert meta["signed_headers"] == ["content-type", "host", "x-amz-date"]
                assert meta["canonical_request"].startswith("POST\n/prod/")
                assert meta.get("recomputed") == verdict
                assert ("does not match" in (flow.comment or "")) == (verdict == appsigned.DIFFERS)
                assert "unit-test-secret" not in repr(meta)

    run(main())


def test_aws_refusing_an_apps_signature_is_diagnosed_with_the_recomputation(tmp_path):
    from proxysigv4_core import appsigned

    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, {"/x": API})
            await a.credentials.provider(a.state.table.routes[0]).get()
            flow = _app_signed("https://other.execute-api.eu-west-1.amazonaws.com/prod/items")
            await a.requestheaders(flow)
            await a.request(flow)
            theirs = flow.metadata["proxysigv4"]["canonical_request"].replace("/prod/items", "/prod/other")
            body = (
                "<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message>"
                f"<CanonicalRequest>{theirs}</CanonicalRequest></Error>"
            )
            flow.response = tutils.tresp(
                status_code=403, content=body.encode(), headers=((b"content-type", b"application/xml"),)
            )
            a.responseheaders(flow)
            a.response(flow)
            diagnosis = flow.metadata["proxysigv4"]["diagnosis"]
            assert diagnosis["summary"].startswith(appsigned.MATCHES + "; AWS disagrees: signature mismatch")
            assert "-/prod/items" in diagnosis["detail"] and "+/prod/other" in diagnosis["detail"]
            assert flow.marked == ":warning:" and "x-proxysigv4-diagnosis" not in flow.response.headers

    run(main())


def test_a_host_routed_flow_replayed_is_signed_afresh_for_its_host(tmp_path):
    async def main():
        a = ProxySigV4()
        with taddons.context(a) as tctx:
            load(tctx, a, tmp_path, HOST_ROUTES)
            f = forward_flow("https://abc.execute-api.eu-west-1.amazonaws.com/prod/items")
            await a.requestheaders(f)
            await a.request(f)
            f.response = tutils.tresp()
            a.responseheaders(f)
            a.response(f)
            assert "Signature=<redacted>" in f.request.headers["authorization"]  # hidden once it left
            replay = f.copy()
            replay.response, replay.is_replay, replay.live = None, "request", True
            replay.request.path = "/prod/edited"
            await a.requestheaders(replay)
            await a.request(replay)
            r = replay.request
            assert (
                replay.response is None
                and r.url == "https://abc.execute-api.eu-west-1.amazonaws.com/prod/edited"
            )
            assert "<redacted>" not in r.headers["authorization"] and r.headers["authorization"].startswith(
                "AWS4-HMAC"
            )
            assert replay.metadata["proxysigv4"]["replayed"] is True

    run(main())
