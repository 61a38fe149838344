import pytest

from proxysigv4_core.headers import (
    filter_request_headers,
    filter_response_headers,
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
    assert filter_response_headers(response_policy(), fields) == [
        ("Transfer-Encoding", "chunked"),
        ("ETag", '"1"'),
        ("x-amzn-ErrorType", "X"),
        ("x-amz-request-id", "1"),
    ]
    assert ("Set-Cookie", "a=1") in filter_response_headers(response_policy(["set-cookie"]), fields)


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
