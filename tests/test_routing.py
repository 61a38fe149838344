"""Routing: longest prefix on segment boundaries, URL joining, wire encoding, path hardening."""

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import TARGET_PIECES
from proxysigv4_core.config import parse_config
from proxysigv4_core.routing import RequestRejected, RouteTable, canonical_query, resolve

ROUTES = parse_config(
    {
        "proxysigv4": {
            "/api": "https://abc.execute-api.us-east-1.amazonaws.com/base",
            "/api/v2": "https://def.execute-api.us-east-1.amazonaws.com/v2/",
            "/root": "https://ghi.execute-api.us-east-1.amazonaws.com",
            "/q": "https://jkl.execute-api.us-east-1.amazonaws.com/p?fixed=1&x=a+b",
            "/s3": "https://s3.us-east-1.amazonaws.com",
        }
    },
    "t",
).routes
TABLE = RouteTable(ROUTES)


def url(target: str) -> str:
    return resolve(TABLE, target).url


def test_longest_prefix_wins_regardless_of_file_order():
    reversed_table = RouteTable(tuple(reversed(ROUTES)))
    for table in (TABLE, reversed_table):
        assert resolve(table, "/api/v2/x").route.prefix == "/api/v2"
        assert resolve(table, "/api/v2").route.prefix == "/api/v2"
        assert resolve(table, "/api/v3").route.prefix == "/api"


@pytest.mark.parametrize("path", ["/apix", "/ap", "/", "/other/api", "/API"])
def test_prefix_matches_only_on_segment_boundaries(path):
    with pytest.raises(RequestRejected) as e:
        resolve(TABLE, path)
    assert e.value.status == 404 and e.value.error == "no_route"


@pytest.mark.parametrize(
    ("client", "upstream"),
    [
        ("/api", "https://abc.execute-api.us-east-1.amazonaws.com/base"),
        ("/api/", "https://abc.execute-api.us-east-1.amazonaws.com/base/"),
        ("/api/x/y", "https://abc.execute-api.us-east-1.amazonaws.com/base/x/y"),
        ("/api/v2", "https://def.execute-api.us-east-1.amazonaws.com/v2/"),
        ("/api/v2/x", "https://def.execute-api.us-east-1.amazonaws.com/v2/x"),
        ("/root", "https://ghi.execute-api.us-east-1.amazonaws.com/"),
        ("/root/", "https://ghi.execute-api.us-east-1.amazonaws.com/"),
        ("/root/a", "https://ghi.execute-api.us-east-1.amazonaws.com/a"),
        ("/api/x?b=2&a=1", "https://abc.execute-api.us-east-1.amazonaws.com/base/x?b=2&a=1"),
        ("/q/z?y=2", "https://jkl.execute-api.us-east-1.amazonaws.com/p/z?fixed=1&x=a%20b&y=2"),
        ("/q/z", "https://jkl.execute-api.us-east-1.amazonaws.com/p/z?fixed=1&x=a%20b"),
        ("/q/z?&", "https://jkl.execute-api.us-east-1.amazonaws.com/p/z?fixed=1&x=a%20b"),
        ("/api/x?&", "https://abc.execute-api.us-east-1.amazonaws.com/base/x"),
        ("/ap%69/x", "https://abc.execute-api.us-east-1.amazonaws.com/base/x"),
    ],
)
def test_rewrite_joins_with_one_slash_and_keeps_and_merges_queries(client, upstream):
    assert url(client) == upstream


@pytest.mark.parametrize(
    ("client", "wire"),
    [
        ("/api/a:b", "/base/a:b"),
        ("/api/a%20b", "/base/a%20b"),
        ("/api/a%2Fb", "/base/a%2Fb"),
        ("/api/a%3Ab", "/base/a%3Ab"),
        ('/api/a"b{c}', "/base/a%22b%7Bc%7D"),
        ("/s3/b/a%2Fb", "/b/a/b"),
        ("/s3/b/a+b", "/b/a%2Bb"),
        ("/s3/b/%7e~", "/b/~~"),
        ("/s3/b/caf%c3%a9", "/b/caf%C3%A9"),
        ("/s3/b/a:b@c", "/b/a%3Ab%40c"),
        ("/s3/b/x//y/", "/b/x//y/"),
    ],
)
def test_wire_path_is_as_sent_for_services_and_canonical_for_s3(client, wire):
    assert resolve(TABLE, client).path == wire


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("a=1&b=2", "a=1&b=2"),
        ("b=2&a=1", "b=2&a=1"),
        ("acl", "acl"),
        ("empty=", "empty="),
        ("q=a+b", "q=a%20b"),
        ("q=a%2bb", "q=a%2Bb"),
        ("k=a/b:c", "k=a%2Fb%3Ac"),
        ("k=%7e~", "k=~~"),
        ("%E2%9C%93=%e2%9c%93", "%E2%9C%93=%E2%9C%93"),
        ("a=1&&b=2&", "a=1&b=2"),
        ("k=%ff", "k=%FF"),
    ],
)
def test_query_parameters_are_re_encoded_canonically(raw, canonical):
    assert canonical_query(raw) == canonical


TRAVERSALS = [
    "/api/..",
    "/api/../s3",
    "/api/./x",
    "/api/%2e%2e/x",
    "/api/%2E%2E/x",
    "/api/.%2e/x",
    "/api/%2e./x",
    "/api/%252e%252e/x",
    "/api/%25252e%25252e/x",
    "/api/x/..%2f..%2fy",
    "/api/x%2F..%2F..",
    "/api/x%5c..%5cy",
    "/api/x\\..\\y",
    "/api/%00",
    "/api/a%0Ab",
    "/api/a%0d%0aHost:evil",
    "/api/a%09b",
    "/api/%c0%ae%c0%ae/x",
    "/api/%ef%bc%8f..%ef%bc%8fx",
    "/api/%EF%BC%8E%EF%BC%8E/x",
    "/api/x%EF%BC%8Fy",
    "/api/%E2%80%A4%E2%80%A4/x",
    "/api/x%EF%BC%BCy",
    "/api/%E2%88%95x",
    "/api/x%E2%81%84y",
    "/api/a%zz",
    "/api/é",
    "api/x",
    "/api/a b",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_and_smuggling_forms_are_rejected(target):
    with pytest.raises(RequestRejected) as e:
        resolve(TABLE, target)
    assert e.value.status == 400


def _decoded_segments(path: str) -> list[str]:
    from urllib.parse import unquote

    return [unquote(s) for s in path.split("/")]


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.sampled_from(TARGET_PIECES),
        min_size=1,
        max_size=8,
    ),
    st.text(alphabet="ab=&%+?/.", max_size=12),
)
def test_forwarded_url_never_leaves_the_route_target(segments, query):
    """Property: whatever the client sends, the request either is rejected or goes to the route's
    own scheme/host/port, under its path prefix, without dot segments in any decoding."""
    target = "/" + "/".join(segments) + ("?" + query if query else "")
    try:
        upstream = resolve(TABLE, target)
    except RequestRejected:
        return
    t = upstream.route.target
    sent = urlsplit(upstream.url)
    assert (sent.scheme, sent.hostname, sent.port or (443 if sent.scheme == "https" else 80)) == (
        t.scheme,
        t.host,
        t.port,
    )
    assert upstream.path.startswith(t.path.rstrip("/") or "/")
    for form in (upstream.path, *_decoded_segments(upstream.path)):
        assert ".." not in form.split("/") and "." not in form.split("/")
    assert "#" not in upstream.url


@settings(max_examples=500, deadline=None)
@given(
    path=st.lists(
        st.sampled_from(list("aZ09/_~!$&'()*+,;=:@.-%é ?#[]\\\"<>|`{}^") + ["%20", "%2F", "%2f", "//"]),
        max_size=20,
    ).map(lambda pieces: "/" + "".join(pieces))
)
def test_path_fast_paths_equal_the_general_encoding(path):
    """wire_path and canonical_s3_path skip the encoder for paths it would leave unchanged: the
    result must equal the general formula on every path."""
    from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

    from proxysigv4_core import routing

    assert routing.wire_path(path) == re.sub(r"/{2,}", "/", quote(path, safe="/!$&'()*+,;=:@%-._~"))
    assert routing.canonical_s3_path(path) == quote_from_bytes(unquote_to_bytes(path), safe="/~")


_PREFIXES = ["/", "/a", "/a/b", "/ab", "/b", "/a/b/c", "/x-y", "/A"]


@settings(max_examples=500, deadline=None)
@given(
    prefixes=st.lists(st.sampled_from(_PREFIXES), min_size=1, max_size=5, unique=True),
    path=st.lists(st.sampled_from(["a", "b", "ab", "c", "", "x-y", "A", "a.b"]), max_size=5).map(
        lambda segments: "/" + "/".join(segments)
    ),
)
def test_string_prefix_match_equals_the_segment_match(prefixes, path):
    """Paths without escapes are matched by string prefix: the same route and remainder as the
    segment-by-segment match that paths with escapes take."""
    table = RouteTable(
        parse_config(
            {
                "proxysigv4": {
                    p: f"https://h{i}.execute-api.us-east-1.amazonaws.com" for i, p in enumerate(prefixes)
                }
            },
            "t",
        ).routes
    )
    assert table.match(path) == table._match_segments(path)


def test_canonicalisation_caches_keep_only_short_strings():
    """The per-request cache holds client-chosen strings: long ones are computed, not kept."""
    from proxysigv4_core import memo

    short, long = "a=1&b=%20", "a=" + "x" * (memo.MAX_KEY_CHARS + 1)
    canonical_query.cache_clear()
    canonical_query(short)
    canonical_query(long)
    assert canonical_query.cache_info().currsize == 1
    assert canonical_query(long) == canonical_query.__wrapped__(long)
    assert canonical_query(short) == canonical_query.__wrapped__(short)
