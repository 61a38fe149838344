"""The hot path's signer is botocore's: sign_upstream hands botocore's SigV4Auth / S3SigV4Auth
(and the CRT's SigV4a signer) exactly what will be sent, and what it records for mitmweb is what
botocore computed. Signatures themselves are checked against awscrt and verifying upstreams in
test_signing_crosscheck.py and the end-to-end tests."""

import ast
import datetime
import hashlib
from pathlib import Path
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from peers.sigv4_verify import verify, verify_sigv4a
from proxysigv4_core import signers
from proxysigv4_core.config import parse_config
from proxysigv4_core.headers import filter_request_headers
from proxysigv4_core.routing import RouteTable, resolve
from proxysigv4_core.signing import sign_request, sign_upstream

WHEN = datetime.datetime(2026, 11, 26, 23, 59, 58, tzinfo=datetime.UTC)
ADDON = Path(__file__).resolve().parent.parent / "addon"


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
    """sign_upstream filters the headers, frames the body and signs the upstream URL: the same as
    sign_request (botocore's signer) on what the filter let through plus Content-Length."""
    upstream = resolve(ROUTES, client_target)
    route = upstream.route
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret/key", token)
    headers = [("Content-Type", "application/json"), ("Date", "x"), ("X-Amz-Meta-A", " a  b ")]
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
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
        )
    assert (ours.headers, ours.canonical_request, ours.string_to_sign) == (
        reference.headers,
        reference.canonical_request,
        reference.string_to_sign,
    )


def _unsigned(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The headers sent, without the Authorization header botocore adds last."""
    return {k: v for k, v in headers if k.lower() != "authorization"}


@pytest.mark.parametrize("token", [None, "session/token+=="])
@pytest.mark.parametrize("date_header", [False, True])
def test_what_is_recorded_is_what_botocore_signed(token, date_header):
    """The canonical request and string to sign kept for mitmweb are the ones botocore's own,
    unmodified signer computes for the request as sent; the signature verifies independently; the
    scope, time stamp and hidden secrets are read back from what was sent."""
    creds = ReadOnlyCredentials("AKIAIOSFODNN7EXAMPLE", "secret/key", token)
    headers = [("Accept", "*/*")] + ([("Date", "Thu, 01 Jan 2026 00:00:00 GMT")] if date_header else [])
    args = get_args(creds, "h.execute-api.us-east-1.amazonaws.com", "/x?b=1&a=2", headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        signed = sign_request(**args)
    sent = AWSRequest(method="GET", url=args["url"], headers=_unsigned(signed.headers))
    sent.context["timestamp"] = "20261126T235958Z"
    botocore = SigV4Auth(creds, "execute-api", "us-east-1")
    assert signed.canonical_request == botocore.canonical_request(sent)
    assert signed.string_to_sign == botocore.string_to_sign(sent, signed.canonical_request)
    if not date_header:  # the test verifier reads the time from X-Amz-Date only
        secrets = {"AKIAIOSFODNN7EXAMPLE": ("secret/key", token)}
        verdict = verify("GET", "/x?b=1&a=2", signed.headers, b"", secrets)
        assert verdict.ok, verdict.reason
    assert signed.signed_at == "20261126T235958Z"
    assert (signed.header("date") is not None) == date_header
    assert signed.scope == "20261126/us-east-1/execute-api/aws4_request"
    hidden = dict(signed.redacted_secrets())
    assert (
        signed.signature not in hidden["Authorization"]
        and "AKIAIOSFODNN7EXAMPLE" not in hidden["Authorization"]
    )
    assert hidden["Authorization"].endswith("Signature=<redacted>")
    assert ("X-Amz-Security-Token" in hidden) == bool(token)


@pytest.mark.parametrize("payload_hash", [None, "UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"])
def test_s3_payload_modes_are_botocores(payload_hash):
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret/key", None)
    args = dict(get_args(creds, "s3.eu-west-1.amazonaws.com", "/bucket/a%2Bb"), method="PUT", body=b"data")
    args |= dict(service="s3", region="eu-west-1", is_s3=True, payload_hash=payload_hash)
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        signed = sign_request(**args)
    expected = payload_hash or hashlib.sha256(b"data").hexdigest()
    assert signed.header("x-amz-content-sha256") == expected
    assert signed.canonical_request.endswith("\n" + expected)
    sent = AWSRequest(method="PUT", url=args["url"], headers=_unsigned(signed.headers), data=b"data")
    sent.context["timestamp"] = "20261126T235958Z"
    assert signed.canonical_request == S3SigV4Auth(creds, "s3", "eu-west-1").canonical_request(sent)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "patch"]),
    path=st.sampled_from(["/", "/a%20b/caf%C3%A9", "/x//y/../z", "/bucket/a+b", "/m/a.b-v1:0/invoke"]),
    query=st.sampled_from(["", "b=2&a=1&a=0", "empty=&bare", "x=%20y"]),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["Accept", "Content-Type", "X-Amz-Meta-A", "Date", "X-Amz-Target", "Range"]),
            st.sampled_from(["a", " b  c ", "application/json", "Thu, 01 Jan 2026 00:00:00 GMT", ""]),
        ),
        max_size=5,
    ),
    body=st.sampled_from([b"", b"x", b'{"a": 1}' * 50]),
    token=st.sampled_from([None, "session/token+=="]),
    service=st.sampled_from([("execute-api", False), ("s3", True), ("aoss", False)]),
    payload_hash=st.sampled_from([None, "UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"]),
    port=st.sampled_from(["", ":8443"]),
)
def test_the_speed_tricks_sign_as_plain_botocore(
    method, path, query, headers, body, token, service, payload_hash, port
):
    """sign_request hands botocore the body's SHA-256 and keeps its header selection for the
    request's second use (HeadersOnce): the request must come out as botocore's own signer,
    unsubclassed and unhelped, makes it (same headers in the same order, same Authorization)."""
    name, is_s3 = service
    assume(not (is_s3 and payload_hash))  # plain S3SigV4Auth takes no chosen payload hash (see above)
    host = f"h.{name}.eu-west-1.amazonaws.com{port}"
    url = f"https://{host}{path}" + (f"?{query}" if query else "")
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret/key", token)
    args = dict(method=method, url=url, host_header=host, headers=headers, body=body, credentials=creds)
    args |= dict(service=name, region="eu-west-1", is_s3=is_s3, payload_hash=payload_hash)
    plain = signers.aws_request(method, url, host, headers, body)
    if payload_hash is not None and not is_s3:
        plain.headers["X-Amz-Content-SHA256"] = payload_hash
    elif payload_hash is None and name == "aoss":
        plain.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    if is_s3:
        plain.context["client_config"] = signers.S3_SIGN_PAYLOAD
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        ours = sign_request(**args)
        (S3SigV4Auth if is_s3 else SigV4Auth)(creds, name, "eu-west-1").add_auth(plain)
    assert ours.headers == list(plain.headers.items())


def test_no_module_of_the_addon_computes_sigv4_itself():
    """botocore computes every canonical request, string to sign, key and signature: nothing under
    addon/ calls HMAC (inbound.py compares token digests with hmac.compare_digest only) or writes
    a SigV4 string to sign's algorithm line."""
    for path in ADDON.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "hmac"
            ):
                assert node.attr == "compare_digest", f"{path.name}: hmac.{node.attr}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert (
                    "AWS4-HMAC-SHA256\n" not in node.value and "AWS4-ECDSA-P256-SHA256\n" not in node.value
                ), path.name
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
                )
                assert "AWS4-HMAC-SHA256\n" not in text and "AWS4-ECDSA-P256-SHA256\n" not in text, path.name


@pytest.mark.parametrize("client_target", ["/api/a?b=1", "/s3/bucket/key", "/aoss/index/_doc", "/v4a/a"])
def test_a_body_digest_computed_ahead_signs_as_hashing_the_body_does(client_target):
    """The addon hashes large bodies in a thread and hands the digest over: the request is signed
    exactly as when the signer hashes the body itself, and the digest given is the one used."""
    upstream = resolve(ROUTES, client_target)
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret/key", None)
    body = bytes(range(256)) * 40
    digest = signers.body_sha256(body)
    assert digest == hashlib.sha256(body).hexdigest()
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
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
