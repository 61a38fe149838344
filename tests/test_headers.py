import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxysigv4_core.headers import (
    RESPONSE_DECISION_HEADERS,
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
        expected = [
            (k, v)
            for k, v in fields
            if k.lower() == "transfer-encoding" or (k.lower() not in hop and policy.allows(k))
        ]
        kept, first = filter_response_fields(policy, raw)
        assert _decoded(kept if kept is not None else raw) == expected
        assert kept is None or len(kept) < len(raw)
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
    from test_streaming import R

    from proxysigv4_core.headers import check_request_headers, websocket_handshake
    from proxysigv4_core.rejection import RequestRejected
    from proxysigv4_core.streaming import plan_request, streams_response

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
    for route in R.values():
        for method in ("GET", "HEAD"):
            assert streams_response(route, fields, method, first) == streams_response(route, fields, method)
        try:
            expected = plan_request(route, fields)
        except RequestRejected as refused:
            expected = refused.error
        try:
            assert plan_request(route, fields, first) == expected
        except RequestRejected as refused:
            assert refused.error == expected
