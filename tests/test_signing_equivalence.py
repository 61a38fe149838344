"""`sign_request` (the hot path's signer) must equal botocore's own SigV4Auth / S3SigV4Auth on
every input: same headers in the same order, same canonical request, string to sign and
Authorization. Hypothesis draws the requests; botocore's clock is pinned to the same instant."""

import datetime
from unittest import mock

from botocore.credentials import ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from proxysigv4_core import signing
from proxysigv4_core.signing import sign_request, sign_request_botocore

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


def test_signing_key_is_cached_per_day_region_and_service():
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)
    signing._signing_keys.clear()
    args = dict(
        method="GET",
        url="https://h/x",
        host_header="h",
        headers=[],
        body=b"",
        credentials=creds,
        service="execute-api",
        region="us-east-1",
        is_s3=False,
    )
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
