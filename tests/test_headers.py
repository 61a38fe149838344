import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import streaming_routes
from proxysigv4_core.headers import (
    RESPONSE_DECISION_HEADERS,
    connection_management,
    connection_tokens,
    filter_request_headers,
    filter_response_fields,
    first_values,
    request_policy,
    response_policy,
)

SEED_NINE = [
    "cache-control",
    "content-language",
    "content-length",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
    "accept",
    "accept-language",
]


@pytest.mark.parametrize(
    "name",
    SEED_NINE[:2]
    + SEED_NINE[3:]
    + [
        "Range",
        "If-None-Match",
        "Content-MD5",
        "X-Amz-Meta-Owner",
        "x-amz-acl",
        "X-Amz-Target",
        "Content-Encoding",
    ],
)
def test_default_request_allowlist(name):
    assert request_policy().allows(name)


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "X-Amz-Date",
        "X-Amz-Security-Token",
        "X-Amz-Content-Sha256",
        "Cookie",
        "Host",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "Forwarded",
        "Connection",
        "Transfer-Encoding",
        "Upgrade",
        "TE",
        "Expect",
        "User-Agent",
        "X-Amzn-Trace-Id",
        "Proxy-Authorization",
        "X-Unknown",
    ],
)
def test_always_removed_or_unlisted_request_headers(name):
    assert not request_policy().allows(name)


def test_always_removed_even_with_star_allowlist():
    policy = request_policy(["*"])
    assert policy.allows("x-anything") and policy.allows("x-custom")
    for name in ("authorization", "cookie", "x-forwarded-for", "host", "x-amz-date", "connection"):
        assert not policy.allows(name)


def test_request_filter_drops_connection_listed_and_content_length():
    fields = [
        ("Connection", "keep-alive, X-Meta-Hop"),
        ("X-Meta-Hop", "1"),
        ("Content-Length", "5"),
        ("Content-Type", "a/b"),
        ("x-amz-meta-a", "1"),
        ("x-amz-meta-a", "2"),
    ]
    policy = request_policy(["x-meta-*"])
    assert filter_request_headers(policy, fields) == [
        ("Content-Type", "a/b"),
        ("x-amz-meta-a", "1"),
        ("x-amz-meta-a", "2"),
    ]


def test_response_filter_keeps_framing_and_aws_headers_drops_the_rest():
    fields = [
        ("Transfer-Encoding", "chunked"),
        ("ETag", '"1"'),
        ("Set-Cookie", "a=1"),
        ("x-amzn-ErrorType", "X"),
        ("x-amz-request-id", "1"),
        ("Server", "AmazonS3"),
        ("Connection", "close, x-amz-hop"),
        ("x-amz-hop", "1"),
    ]
    raw = _raw(fields)
    assert filter_response_fields(response_policy(), raw) == (
        (
            (b"Transfer-Encoding", b"chunked"),
            (b"ETag", b'"1"'),
            (b"x-amzn-ErrorType", b"X"),
            (b"x-amz-request-id", b"1"),
            (b"Connection", b"close"),  # cut down to the token mitmproxy acts on
        ),
        {"transfer-encoding": "chunked"},
    )
    kept, _ = filter_response_fields(response_policy(["set-cookie"]), raw)
    assert (b"Set-Cookie", b"a=1") in kept
    allowed = ((b"Content-Type", b"a/b; x=1"), (b"content-length", b" 12 "), (b"Content-Type", b"c/d"))
    assert filter_response_fields(response_policy(), allowed) == (  # nothing dropped: None
        None,
        {"content-type": "a/b; x=1", "content-length": "12"},
    )


def _raw(fields: list[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    """Header fields as mitmproxy holds them."""
    return tuple((k.encode("latin-1"), v.encode("utf-8", "surrogateescape")) for k, v in fields)


def _decoded(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in raw]


_KNOWN_NAMES = st.sampled_from(
    [b"Connection", b"CONNECTION", b"Content-Type", b"content-length", b"Transfer-Encoding", b"ETag"]
    + [b"x-amzn-RequestId", b"Set-Cookie", b"Keep-Alive", b"X-Hop", b"\xc9tag", b"\xe9tag", b"Upgrade"]
)
# utf-8 \xc3\x89 is the latin-1 name byte \xc9 (É): a Connection token naming a non-ASCII header
_KNOWN_VALUES = st.sampled_from(
    [
        b"close",
        b"keep-alive, x-hop",
        b" X-HOP ,etag",
        b"\xc3\x89TAG",
        b"\xc3\xa9tag,a",
        b"chunked",
        b" 12 ",
        b"",
    ]
    + [b"text/event-stream; charset=utf-8", b"\xff\xfe"]
)
# mostly the names and values above, sometimes any bytes
_RAW_NAMES = st.one_of(_KNOWN_NAMES, _KNOWN_NAMES, _KNOWN_NAMES, st.binary(min_size=1, max_size=6))
_RAW_VALUES = st.one_of(_KNOWN_VALUES, _KNOWN_VALUES, _KNOWN_VALUES, st.binary(max_size=8))


@settings(max_examples=500, deadline=None)
@given(raw=st.lists(st.tuples(_RAW_NAMES, _RAW_VALUES), max_size=8).map(tuple))
@example(raw=((b"Connection", b"\xc3\x89TAG"), (b"\xc9tag", b"1"), (b"\xe9tag", b"2")))
def test_response_fields_filtered_raw_as_the_rule_says_on_decoded_fields(raw):
    """The response filter works on mitmproxy's bytes: it must keep exactly the fields the rule
    keeps when stated on the decoded fields (names latin-1, values utf-8 as mitmproxy decodes
    them), Connection-listed names compared decoded and lower-cased, non-ASCII ones too."""
    fields = _decoded(raw)
    for policy in (response_policy(), response_policy(["x-hop", "keep-alive", "\xe9tag", "*"])):
        hop = connection_tokens(fields)
        manage = connection_management(hop)
        expected = []
        for k, v in fields:
            if k.lower() == "connection" and manage is not None:
                if not any(name.lower() == "connection" for name, _ in expected):
                    expected.append((k, manage))
            elif k.lower() in ("transfer-encoding", "content-length") or (
                k.lower() not in hop and policy.allows(k)
            ):
                expected.append((k, v))
        kept, first = filter_response_fields(policy, raw)
        assert _decoded(kept if kept is not None else raw) == expected
        assert kept is None or kept != raw
        wanted = {name.decode() for name in RESPONSE_DECISION_HEADERS}
        assert first == {k: v for k, v in first_values(fields).items() if k in wanted}


@pytest.mark.parametrize(
    "fields, status, error, names",
    [
        ([("Accept", "a"), ("X-A", "b\x00c")], 400, "invalid_header", "'X-A'"),
        ([("X-B\r", "v"), ("Accept", "a")], 400, "invalid_header", "'X-B\\r'"),
        ([("Accept", "a"), ("X-C", "line\nInjected: 1"), ("X-D", "ok")], 400, "invalid_header", "'X-C'"),
        ([("X-Big", "a" * (64 * 1024))], 431, "headers_too_large", None),
        ([("Transfer-Encoding", "gzip, chunked")], 501, "unsupported_transfer_encoding", None),
    ],
)
def test_request_headers_with_forbidden_bytes_size_or_codings_are_refused(fields, status, error, names):
    from proxysigv4_core.headers import check_request_headers
    from proxysigv4_core.rejection import RequestRejected

    with pytest.raises(RequestRejected) as refused:
        check_request_headers(fields)
    assert (refused.value.status, refused.value.error) == (status, error)
    if names:
        assert names in refused.value.message


def test_ordinary_request_headers_pass_the_check():
    from proxysigv4_core.headers import check_request_headers

    check_request_headers(
        [("Accept", "a"), ("X-Tab", "a\tb"), ("Transfer-Encoding", "chunked"), ("X-Near", "a" * 60000)]
    )


_NAMES = [
    "Connection",
    "connection",
    "Upgrade",
    "Expect",
    "Content-Length",
    "content-length",
    "Content-Type",
    "Transfer-Encoding",
    "X-Amz-Content-SHA256",
    "X-Amz-Meta-A",
    "Keep-Alive",
    "Accept",
    "X-Custom",
    "Sec-WebSocket-Key",
]
_VALUES = [
    "close",
    "keep-alive, X-Custom",
    "Upgrade",
    " websocket ",
    "12",
    "100-continue",
    "a, b",
    "chunked",
    "",
]


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)), max_size=8))
def test_decisions_from_first_values_equal_the_ones_from_the_fields(fields):
    """The hot path computes first_values once (check_request_headers returns them) and hands
    them to every decision: each must decide exactly as it does from the fields alone."""

    from proxysigv4_core.headers import check_request_headers, websocket_handshake
    from proxysigv4_core.rejection import RequestRejected
    from proxysigv4_core.streaming import plan_request

    first = first_values(fields)
    try:
        assert check_request_headers(fields) == first
    except RequestRejected as refused:
        assert refused.error == "unsupported_transfer_encoding"
    assert connection_tokens(fields, first) == connection_tokens(fields)
    for policy in (request_policy(), request_policy(["x-custom", "keep-alive"])):
        tokens = connection_tokens(fields, first)
        assert filter_request_headers(policy, fields, tokens) == filter_request_headers(policy, fields)
    assert websocket_handshake("GET", fields, first) == websocket_handshake("GET", fields)
    for route in streaming_routes().values():
        try:
            expected = plan_request(route, fields)
        except RequestRejected as refused:
            expected = refused.error
        try:
            assert plan_request(route, fields, first) == expected
        except RequestRejected as refused:
            assert refused.error == expected


# ---- connection management: what mitmproxy reads to keep, close and frame, both ways ---------
_CONN_NAMES = st.sampled_from(
    [b"Connection", b"connection", b"Keep-Alive", b"Content-Length", b"Transfer-Encoding", b"Upgrade"]
    + [b"Proxy-Connection", b"Trailer", b"TE", b"ETag", b"X-Hop", b"Content-Type"]
)
_CONN_VALUES = st.sampled_from(
    [b"close", b"keep-alive", b"Keep-Alive, X-Hop", b"CLOSE , keep-alive", b"upgrade", b"x-hop, close"]
    + [b"content-length", b"transfer-encoding", b"chunked", b"12", b"timeout=5, max=100", b"", b"h2c"]
)
_VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0"])
_STATUSES = st.sampled_from([200, 204, 304, 404, 101])


def _mitmproxy_reading(request, response):
    """What mitmproxy decides from a finished exchange (_http1.Http1Connection.mark_done): keep
    or close each side, and the response's framing (or the error its headers raise)."""
    from mitmproxy.net.http import http1

    try:
        size = http1.expected_http_body_size(request, response)
    except ValueError as e:
        size = f"invalid: {e}"
    return (
        http1.connection_close(request.http_version, request.headers),
        http1.connection_close(response.http_version, response.headers),
        size,
    )


@settings(max_examples=400, deadline=None)
@given(
    raw=st.lists(st.tuples(_CONN_NAMES, _CONN_VALUES), max_size=7).map(tuple),
    version=_VERSIONS,
    status=_STATUSES,
    method=st.sampled_from(["GET", "HEAD"]),
)
def test_the_response_filter_never_changes_how_mitmproxy_frames_or_keeps_connections(
    raw, version, status, method
):
    """Whatever the allowlist drops from a response, mitmproxy must keep or close the client's and
    the upstream's connection, and frame the body, exactly as for the response as it came, read
    as RFC 9110 7.6.1 says: connection options are case-insensitive (mitmproxy compares them as
    sent, so `Connection: CLOSE` would keep a connection the upstream ends; the filter sends the
    token lower-cased)."""
    from mitmproxy.http import Headers
    from mitmproxy.test import tutils

    request = tutils.treq(method=method.encode(), headers=Headers())
    as_rfc = tuple((k, v.lower() if k.lower() == b"connection" else v) for k, v in raw)
    before = tutils.tresp(status_code=status, http_version=version.encode(), headers=Headers(as_rfc))
    for policy in (response_policy(), response_policy(["*"]), response_policy(["x-hop"])):
        kept, _ = filter_response_fields(policy, raw)
        after = before.copy()
        after.headers.fields = kept if kept is not None else raw
        assert _mitmproxy_reading(request, after) == _mitmproxy_reading(request, before), kept


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(st.tuples(_CONN_NAMES, _CONN_VALUES), max_size=6).map(tuple), version=_VERSIONS)
def test_the_request_connection_value_keeps_mitmproxys_keep_or_close_decision(raw, version):
    """The other way: the request the proxy sends carries only `connection_management` of the
    client's Connection tokens (the addon adds it after signing); mitmproxy must decide to keep
    or close the connections exactly as it would from the client's own headers."""
    from mitmproxy.http import Headers
    from mitmproxy.net.http import http1

    fields = _decoded(raw)
    manage = connection_management(connection_tokens(fields))
    sent = Headers([(b"connection", manage.encode())] if manage else [])
    as_rfc = Headers([(k, v.lower() if k.lower() == b"connection" else v) for k, v in raw])  # see above
    assert http1.connection_close(version, sent) == http1.connection_close(version, as_rfc)
    # and nothing else of the client's hop-by-hop headers passes the request filter
    for policy in (request_policy(), request_policy(["*"])):
        names = {k.lower() for k, _ in filter_request_headers(policy, fields)}
        assert not names & {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}
        assert "proxy-connection" not in names and "content-length" not in names


@pytest.mark.parametrize(
    "tokens, value",
    [
        (set(), None),
        ({"x-hop"}, None),
        ({"close"}, "close"),
        ({"keep-alive"}, "keep-alive"),
        ({"keep-alive", "close"}, "close"),
        ({"upgrade"}, None),
    ],
)
def test_connection_management_keeps_the_token_mitmproxy_acts_on(tokens, value):
    assert connection_management(tokens) == value


def test_an_upstream_connection_close_reaches_the_client_whatever_else_connection_lists():
    raw = (
        (b"Content-Length", b"2"),
        (b"Connection", b"x-hop, close"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"5"),
    )
    kept, _ = filter_response_fields(response_policy(["x-hop", "keep-alive"]), raw)
    assert kept == ((b"Content-Length", b"2"), (b"Connection", b"close"))
    # Connection may not strip the framing: Content-Length stays even when listed
    raw = ((b"Content-Length", b"2"), (b"Connection", b"content-length"))
    assert filter_response_fields(response_policy(), raw)[0] == ((b"Content-Length", b"2"),)


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.one_of(st.sampled_from(_NAMES), st.text(min_size=1, max_size=8)), max_size=12))
def test_the_remembered_decisions_are_the_plain_ones(names):
    """HeaderPolicy.allows remembers each name's decision (allows_raw too): asked again, or after
    the memo was cleared, it must answer as the plain rule does."""
    for policy in (request_policy(), response_policy(["x-custom-*"]), request_policy(["*"])):
        for name in names + names:
            assert policy.allows(name) == policy.decide(name)
            raw = name.encode("latin-1", "replace")
            assert policy.allows_raw(raw) == policy.decide(raw.decode("latin-1"))
