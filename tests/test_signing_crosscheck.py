"""Cross-check: requests the proxy signs (routing + signing, as sent on the wire) verify with
awscrt, AWS's independent C signer, for a corpus of awkward paths, queries and hosts."""

import pytest
from botocore.credentials import ReadOnlyCredentials

from peers.sigv4_verify import verify
from proxysigv4_core.config import parse_config
from proxysigv4_core.routing import RouteTable, resolve
from proxysigv4_core.signing import sign_upstream

CREDS = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)
TEMP = ReadOnlyCredentials("ASIATEMPORARY", "tempsecret/with+chars", "FQoGZXIvYXdzEJr//////////token==")
TABLE = RouteTable(
    parse_config(
        {
            "proxysigv4": {
                "/api": "https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
                "/port": "https://abc123.execute-api.eu-west-1.amazonaws.com:8443/stage",
                "/bedrock": "https://bedrock-runtime.us-west-2.amazonaws.com",
                "/s3": "https://s3.eu-central-1.amazonaws.com",
                "/bucket": "https://my-bucket.s3.us-east-1.amazonaws.com/base",
                "/plain": {
                    "target": "http://127.0.0.1:9000",
                    "service": "execute-api",
                    "region": "us-east-1",
                },
            }
        },
        "inline",
    ).routes
)

CORPUS = [
    ("GET", "/api", ""),
    ("GET", "/api/", ""),
    ("GET", "/api/a%20b/c", ""),
    ("GET", "/api/caf%C3%A9/%E2%9C%93", ""),
    ("GET", "/api/a%2Fb", ""),
    ("GET", "/api/a:b@c!$'()*,;=", ""),
    ("GET", "/api/a//b", ""),
    ("GET", "/api/x?b=2&a=1&a=0&empty=&bare", ""),
    ("GET", "/api/x?k=a%2Fb%3Dc%26d&sp=a+b&pct=100%25&u=%E2%9C%93", ""),
    ("GET", "/api/x?Z=1&a=1&_=1&~=1&-=1&.=1", ""),
    ("POST", "/api/items", '{"a": 1,\n  "b": [1, 2]}'),
    ("GET", "/port/health?x=1", ""),
    ("POST", "/bedrock/model/anthropic.claude-3-haiku-20240307-v1:0/invoke", '{"prompt":"hi"}'),
    ("POST", "/bedrock/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A1%3Ax%2Fy/converse", "{}"),
    ("GET", "/s3/bucket/a%2Fb", ""),
    ("PUT", "/s3/bucket/key+with+plus", "data"),
    ("PUT", "/s3/bucket/caf%C3%A9%20%E2%9C%93", "data"),
    ("PUT", "/s3/bucket/a;b=c&d", "x"),
    ("PUT", "/s3/bucket/'()!*$@", "x"),
    ("GET", "/s3/bucket/a~b_c-d.e", ""),
    ("GET", "/s3/bucket/dir//double", ""),
    ("GET", "/s3/bucket?list-type=2&prefix=a%2Fb&delimiter=%2F", ""),
    ("GET", "/s3/bucket/key?acl", ""),
    ("POST", "/s3/bucket/key?uploads", ""),
    ("GET", "/bucket/k%20y?versionId=a+b", ""),
    ("GET", "/plain/a?x=1", ""),
]


def signed_wire_request(method, client_target, body, creds, extra_headers=()):
    """Route, filter and sign as the addon does; return what goes on the wire."""
    upstream = resolve(TABLE, client_target)
    client_headers = [
        ("Content-Type", "application/json"),
        ("X-Amz-Meta-Color", " blue   green "),
        *extra_headers,
    ]
    data = body.encode()
    signed = sign_upstream(upstream, method, client_headers, data, creds)
    wire_target = upstream.path + (f"?{upstream.query}" if upstream.query else "")
    return wire_target, signed.headers, data


@pytest.mark.parametrize("creds", [CREDS, TEMP], ids=["static", "session-token"])
@pytest.mark.parametrize(("method", "client_target", "body"), CORPUS)
def test_proxy_signature_verifies_with_awscrt(method, client_target, body, creds):
    wire_target, headers, data = signed_wire_request(method, client_target, body, creds)
    verdict = verify(method, wire_target, headers, data, {creds.access_key: (creds.secret_key, creds.token)})
    assert verdict.ok, (wire_target, verdict)


def test_checker_rejects_a_changed_path_query_header_or_body():
    """The cross-check itself must be able to fail."""
    secrets = {CREDS.access_key: (CREDS.secret_key, None)}
    target, headers, data = signed_wire_request("POST", "/api/items?a=1", '{"a":1}', CREDS)
    assert verify("POST", target, headers, data, secrets).ok
    assert not verify("POST", target.replace("items", "itemz"), headers, data, secrets).ok
    assert not verify("POST", target + "&b=2", headers, data, secrets).ok
    assert not verify("POST", target, headers, data + b" ", secrets).ok
    changed = [(k, "text/plain" if k.lower() == "content-type" else v) for k, v in headers]
    assert not verify("POST", target, changed, data, secrets).ok
    assert not verify("PUT", target, headers, data, secrets).ok
    assert not verify("POST", target, headers, data, {CREDS.access_key: ("wrong", None)}).ok


def test_checker_rejects_a_differently_encoded_s3_key():
    """For S3 the wire path is signed as sent: '~' and '%7E' are the same key, not the same signature."""
    secrets = {CREDS.access_key: (CREDS.secret_key, None)}
    target, headers, data = signed_wire_request("GET", "/s3/bucket/a~b", "", CREDS)
    assert target == "/bucket/a~b"
    assert verify("GET", target, headers, data, secrets).ok
    assert not verify("GET", "/bucket/a%7Eb", headers, data, secrets).ok
    assert not verify("GET", target, headers, b"x", secrets).ok


@pytest.mark.parametrize(
    ("client_target", "mode"),
    [
        ("/s3/bucket/big%20key+1", "UNSIGNED-PAYLOAD"),
        ("/s3/bucket/trailer", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        ("/api/lattice-like", "UNSIGNED-PAYLOAD"),
    ],
)
def test_streamed_body_signatures_verify_with_awscrt(client_target, mode):
    """A streamed body is signed before it is read: payload mode instead of hash, client's length."""
    upstream = resolve(TABLE, client_target)
    body = b"the body arrives later, any bytes \x00\xff"
    signed = sign_upstream(
        upstream,
        "PUT",
        [("Content-Length", str(len(body)))],
        None,
        CREDS,
        payload_hash=mode,
        content_length=len(body),
    )
    assert signed.header("x-amz-content-sha256") == mode
    assert signed.header("content-length") == str(len(body))
    target = upstream.path + (f"?{upstream.query}" if upstream.query else "")
    verdict = verify("PUT", target, signed.headers, body, {CREDS.access_key: (CREDS.secret_key, None)})
    assert verdict.ok, verdict
