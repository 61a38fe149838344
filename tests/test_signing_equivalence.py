"""`sign_request` (the hot path's signer) must equal botocore's own SigV4Auth / S3SigV4Auth on
every input: same headers in the same order, same canonical request, string to sign and
Authorization. Hypothesis draws the requests; botocore's clock is pinned to the same instant."""

import datetime
import hashlib
from unittest import mock

import pytest
from botocore.credentials import ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from proxysigv4_core import signing
from proxysigv4_core.config import parse_config
from proxysigv4_core.headers import filter_request_headers
from proxysigv4_core.routing import RouteTable, resolve
from proxysigv4_core.signing import SignedRequest, sign_request, sign_request_botocore, sign_upstream
from sigv4_verify import verify_sigv4a

WHEN = datetime.datetime(2026, 11, 26, 23, 59, 58, tzinfo=datetime.UTC)

SEGMENT = st.sampled_from(
    [
        "api",
        "v1",
        "items",
        "%20",
        "a%2Fb",
        "caf%C3%A9",
        "~x",
        "a+b",
        "x:y",
        "k=v",
        "it's",
        "",
        "%25",
        "!$&()*,;@",
    ]
)
QUERY_PIECE = st.sampled_from(
    ["a", "b", "a=1", "a=2", "b=", "x=%20y", "z=%2F", "empty", "k=v%3Dw", "~=_", "A=1"]
)
HEADER_NAME = st.sampled_from(
    [
        "Accept",
        "Content-Type",
        "X-Amz-Target",
        "x-amz-meta-a",
        "X-Amz-Meta-A",
        "Date",
        "X-Amz-Date",
        "Authorization",
        "X-Amz-Security-Token",
        "X-Amz-Content-SHA256",
        "User-Agent",
        "Expect",
        "Connection",
        "Range",
        "If-Match",
        "content-length",
    ]
)
HEADER_VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x17F, blacklist_characters="\x7f"), max_size=12
).map(lambda v: v.replace("\r", "").replace("\n", ""))
SERVICE = st.sampled_from(
    [
        ("execute-api", False),
        ("s3", True),
        ("aoss", False),
        ("es", False),
        ("lambda", False),
        ("bedrock", False),
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "patch"]),
    segments=st.lists(SEGMENT, max_size=5),
    query=st.lists(QUERY_PIECE, max_size=5),
    headers=st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=8),
    body=st.binary(max_size=64),
    token=st.sampled_from([None, "session/token+=="]),
    service=SERVICE,
    region=st.sampled_from(["us-east-1", "eu-west-1"]),
    port=st.sampled_from(["", ":8443"]),
    payload_hash=st.sampled_from([None, "UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"]),
)
def test_same_signature_as_botocore(
    method, segments, query, headers, body, token, service, region, port, payload_hash
):
    name, is_s3 = service
    host = f"h.{name}.{region}.amazonaws.com{port}"
    url = f"https://{host}/" + "/".join(segments) + ("?" + "&".join(query) if query else "")
    args = dict(
        method=method,
        url=url,
        host_header=host,
        headers=headers,
        body=body,
        credentials=ReadOnlyCredentials("AKIDEXAMPLE", "secret/key", token),
        service=name,
        region=region,
        is_s3=is_s3,
        payload_hash=payload_hash,
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        reference = sign_request_botocore(**args)
    ours = sign_request(**args, now=WHEN)
    assert ours.canonical_request == reference.canonical_request
    assert ours.string_to_sign == reference.string_to_sign
    assert ours.headers == reference.headers
    assert ours.signed_headers == reference.signed_headers


def get_args(credentials: ReadOnlyCredentials, host: str = "h", target: str = "/x", headers=()) -> dict:
    """sign_request's arguments for a GET without body to an execute-api host in us-east-1."""
    return dict(
        method="GET",
        url=f"https://{host}{target}",
        host_header=host,
        headers=list(headers),
        body=b"",
        credentials=credentials,
        service="execute-api",
        region="us-east-1",
        is_s3=False,
    )


def test_signing_key_is_cached_per_day_region_and_service():
    signing._signing_keys.clear()
    args = get_args(ReadOnlyCredentials("AKIDEXAMPLE", "secret", None))
    sign_request(**args, now=WHEN)
    sign_request(**args, now=WHEN + datetime.timedelta(seconds=1))
    assert len(signing._signing_keys) == 1
    sign_request(**args, now=WHEN + datetime.timedelta(seconds=3))  # the next UTC day
    sign_request(**(args | {"region": "eu-west-1"}), now=WHEN)
    assert len(signing._signing_keys) == 3
    # A key from the cache signs like a freshly derived one (botocore's reference).
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        reference = sign_request_botocore(**args)
    assert sign_request(**args, now=WHEN).headers == reference.headers


def test_the_cached_timestamp_is_the_current_second_in_sigv4_form():
    with mock.patch("proxysigv4_core.signing.time.time", return_value=1795735000.75):
        assert signing._timestamp_now() == "20261126T231640Z"
    with mock.patch("proxysigv4_core.signing.time.time", return_value=1795735001.01):
        assert signing._timestamp_now() == "20261126T231641Z"  # a new second: formatted again
    now = datetime.datetime.now(datetime.UTC)
    assert signing._timestamp_now() in {
        now.strftime("%Y%m%dT%H%M%SZ"),
        (now + datetime.timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ"),
    }


ROUTES = RouteTable(
    parse_config(
        {
            "proxysigv4": {
                "/api": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
                "/s3": "https://s3.eu-central-1.amazonaws.com",
                "/port": "https://abc.execute-api.eu-west-1.amazonaws.com:8443/stage?fixed=1",
                "/aoss": "https://abc.eu-west-1.aoss.amazonaws.com",
                "/v4a": {
                    "target": "https://abc.execute-api.eu-west-1.amazonaws.com",
                    "signingAlgorithm": "sigv4a",
                },
            }
        },
        "inline",
    ).routes
)


@pytest.mark.parametrize(
    "client_target",
    [
        "/api/a%20b/caf%C3%A9?b=2&a=1&a=0&empty=&bare",
        "/api/a:b@c!$'()*,;=?sp=a+b&pct=100%25",
        "/s3/bucket/key+with+plus?uploads",
        "/s3/bucket/a%2Fb/%E2%9C%93?list-type=2&prefix=a%2Fb",
        "/port/x//y?Z=1&_=1&~=1",
    ],
)
@pytest.mark.parametrize("token", [None, "session/token+=="])
def test_sign_upstream_signs_as_sign_request_does_on_the_upstream_url(client_target, token):
    """sign_upstream hands the path and query over already split: the result is the same as
    sign_request on the whole URL (which botocore's signer is held to above)."""
    upstream = resolve(ROUTES, client_target)
    route = upstream.route
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret/key", token)
    headers = [("Content-Type", "application/json"), ("Date", "x"), ("X-Amz-Meta-A", " a  b ")]
    with mock.patch("proxysigv4_core.signing._timestamp_now", return_value="20261126T235958Z"):
        ours = sign_upstream(upstream, "PUT", headers, b"body", creds)
    reference = sign_request(
        method="PUT",
        url=upstream.url,
        host_header=route.target.host_header,
        headers=filter_request_headers(route.request_headers, headers) + [("content-length", "4")],
        body=b"body",
        credentials=creds,
        service=route.service,
        region=route.region,
        is_s3=route.is_s3,
        now=WHEN,
    )
    assert (ours.headers, ours.canonical_request, ours.string_to_sign) == (
        reference.headers,
        reference.canonical_request,
        reference.string_to_sign,
    )


@pytest.mark.parametrize("token", [None, "session/token+=="])
def test_recorded_parts_equal_the_ones_parsed_from_the_signed_request(token):
    """The signature and hidden secrets sign_request keeps (and the scope) are what the generic
    SignedRequest (used for the other signers) reads back from the headers."""
    creds = ReadOnlyCredentials("AKIAIOSFODNN7EXAMPLE", "secret/key", token)
    args = get_args(creds, "h.execute-api.us-east-1.amazonaws.com", "/x?a=1", [("Accept", "*/*")])
    signed = sign_request(**args, now=WHEN)
    generic = SignedRequest(
        signed.headers, signed.signed_headers, signed.canonical_request, signed.string_to_sign
    )
    assert signed.scope == generic.scope == "20261126/us-east-1/execute-api/aws4_request"
    assert signed.signature == generic.signature != ""
    assert sorted(signed.redacted_secrets()) == sorted(generic.redacted_secrets())
    hidden = dict(signed.redacted_secrets())
    assert (
        signed.signature not in hidden["Authorization"]
        and "AKIAIOSFODNN7EXAMPLE" not in hidden["Authorization"]
    )
    assert hidden["Authorization"].endswith("Signature=<redacted>")
    assert ("X-Amz-Security-Token" in hidden) == bool(token)


def test_the_signed_request_is_a_complete_frozen_dataclass():
    """sign_request builds its result without __init__: it must still equal one built normally,
    with every field set, and stay immutable."""
    import dataclasses

    args = get_args(
        ReadOnlyCredentials("AKIDEXAMPLE", "secret", "tok"), "h.execute-api.us-east-1.amazonaws.com"
    )
    signed = sign_request(**args, now=WHEN)
    fields = {f.name: getattr(signed, f.name) for f in dataclasses.fields(signed)}
    assert signed == type(signed)(**fields)
    assert fields["_token"] is True and fields["_access_key"] == "AKIDEXAMPLE"
    with pytest.raises(dataclasses.FrozenInstanceError):
        signed.canonical_request = "changed"


@pytest.mark.parametrize("client_target", ["/api/a?b=1", "/s3/bucket/key", "/aoss/index/_doc", "/v4a/a"])
def test_a_body_digest_computed_ahead_signs_as_hashing_the_body_does(client_target):
    """The addon hashes large bodies in a thread and hands the digest over: the request is signed
    exactly as when the signer hashes the body itself, and the digest given is the one used."""
    upstream = resolve(ROUTES, client_target)
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret/key", None)
    body = bytes(range(256)) * 40
    digest = signing.body_sha256(body)
    assert digest == hashlib.sha256(body).hexdigest()
    with mock.patch("proxysigv4_core.signing._timestamp_now", return_value="20261126T235958Z"):
        itself = sign_upstream(upstream, "PUT", [("Content-Type", "a/b")], body, creds)
        ahead = sign_upstream(upstream, "PUT", [("Content-Type", "a/b")], body, creds, body_digest=digest)
        given_wrong = sign_upstream(
            upstream, "PUT", [("Content-Type", "a/b")], body, creds, body_digest="0" * 64
        )
    assert ahead.canonical_request == itself.canonical_request
    assert itself.canonical_request.endswith(digest)
    assert given_wrong.canonical_request.endswith("0" * 64)  # used as given, not hashed again
    if upstream.route.signing_algorithm == "sigv4a":  # ECDSA: a new signature each time
        assert [k for k, _ in ahead.headers] == [k for k, _ in itself.headers]
        # The CRT signs with the digest given (it does not hash the body again): the right one
        # verifies over the body, the wrong one does not; no X-Amz-Content-SHA256 is added.
        secrets = {"AKIDEXAMPLE": ("secret/key", None)}
        target = upstream.path + (f"?{upstream.query}" if upstream.query else "")
        for signed, ok in ((itself, True), (ahead, True), (given_wrong, False)):
            assert "x-amz-content-sha256" not in {k.lower() for k, _ in signed.headers}
            verdict = verify_sigv4a("PUT", target, signed.headers, body, secrets)
            assert verdict.ok is ok, verdict.reason
    else:
        assert (ahead.headers, ahead.string_to_sign) == (itself.headers, itself.string_to_sign)
