"""SigV4a (ECDSA P-256, region sets) for S3 Multi-Region Access Points and other SigV4a endpoints:
the verifier is first proven on signatures made by awscrt directly, then checks what the proxy
(a real mitmdump) sends, signed by botocore's CRT signer."""

import datetime
import io

import pytest
import requests
from awscrt import auth as crt_auth
from awscrt import http as crt_http
from botocore.credentials import ReadOnlyCredentials

from helpers import KEY, SECRET, proxy_env, verify_then_answer
from peers.sigv4_verify import verify_sigv4a
from peers.upstream import Upstream
from proxysigv4_core import config as config_module
from proxysigv4_core.config import ConfigError, parse_config
from proxysigv4_core.inference import infer_service_region, infer_signing_algorithm
from proxysigv4_core.sigv4a import sign_request_sigv4a

MRAP = "mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com"


def crt_signed(method, path, headers, body, service, region_set):
    """A request signed with SigV4a by awscrt itself (not through botocore or the proxy)."""
    request = crt_http.HttpRequest(
        method=method, path=path, headers=crt_http.HttpHeaders(headers), body_stream=io.BytesIO(body)
    )
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4_ASYMMETRIC,
        signature_type=crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(KEY, SECRET),
        region=region_set,
        service=service,
        date=datetime.datetime.now(datetime.UTC),
        use_double_uri_encode=service != "s3",
        should_normalize_uri_path=service != "s3",
        signed_body_header_type=crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
    )
    crt_auth.aws_sign_request(request, config).result(10)
    return list(request.headers)


@pytest.mark.parametrize(
    "service,path", [("s3", "/bucket/a+b/caf%C3%A9.txt"), ("execute-api", "/prod/items/42?b=2&a=1")]
)
def test_the_verifier_accepts_awscrt_sigv4a_and_rejects_tampering(service, path):
    body = b'{"x": 1}'
    headers = crt_signed(
        "PUT", path, [("host", "example.com"), ("content-type", "application/json")], body, service, "*"
    )
    assert verify_sigv4a("PUT", path, headers, body, {KEY: (SECRET, None)}).ok
    assert not verify_sigv4a("PUT", path + "x", headers, body, {KEY: (SECRET, None)}).ok
    assert not verify_sigv4a("PUT", path, headers, body + b" ", {KEY: (SECRET, None)}).ok
    assert not verify_sigv4a("PUT", path, headers, body, {KEY: ("other-secret", None)}).ok


def test_botocore_crt_signer_through_our_interface_verifies():
    signed = sign_request_sigv4a(
        method="POST",
        url=f"https://{MRAP}/report.csv?uploads",
        host_header=MRAP,
        headers=[("content-type", "text/csv"), ("content-length", "3")],
        body=b"a,b",
        credentials=ReadOnlyCredentials(KEY, SECRET, "tok/en=="),
        service="s3",
        region="*",
        is_s3=True,
    )
    assert signed.header("x-amz-region-set") == "*"
    assert signed.header("authorization").startswith(f"AWS4-ECDSA-P256-SHA256 Credential={KEY}/")
    assert "x-amz-region-set" in signed.signed_headers
    assert signed.string_to_sign is None  # computed inside awscrt, not exposed
    verdict = verify_sigv4a(
        "POST", "/report.csv?uploads", signed.headers, b"a,b", {KEY: (SECRET, "tok/en==")}
    )
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize(
    "service, is_s3, url",
    [
        ("s3", True, f"https://{MRAP}/a%2Bb/report.csv?uploads"),
        ("execute-api", False, "https://h.example/a%20b/x"),
    ],
)
def test_the_recorded_sigv4a_canonical_request_is_the_one_the_crt_signed(service, is_s3, url):
    """The CRT does not expose its canonical request; the one recorded for mitmweb (botocore's
    canonical_request over the headers the CRT signed) must be exactly what the ECDSA signature
    covers: the signature verifies over it with the credentials' public key."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from peers.sigv4_verify import sigv4a_private_key

    host = url.split("/")[2]
    signed = sign_request_sigv4a(
        method="PUT",
        url=url,
        host_header=host,
        headers=[("content-type", "text/csv"), ("x-amz-meta-a", " b  c ")],
        body=b"a,b",
        credentials=ReadOnlyCredentials(KEY, SECRET, "tok/en=="),
        service=service,
        region="*",
        is_s3=is_s3,
    )
    string_to_sign = "\n".join(
        [
            "AWS4-ECDSA-P256-SHA256",
            signed.signed_at,
            signed.scope,
            hashlib.sha256(signed.canonical_request.encode()).hexdigest(),
        ]
    )
    public = ec.derive_private_key(sigv4a_private_key(KEY, SECRET), ec.SECP256R1()).public_key()
    public.verify(bytes.fromhex(signed.signature), string_to_sign.encode(), ec.ECDSA(hashes.SHA256()))
    assert signed.scope.endswith(f"/{service}/aws4_request") and signed.string_to_sign is None


def test_mrap_hosts_infer_s3_region_set_and_sigv4a():
    assert infer_service_region(MRAP) == ("s3", "*")
    assert infer_signing_algorithm(MRAP) == "sigv4a"
    route = parse_config({"proxysigv4": {"/mrap": f"https://{MRAP}"}}, "t").routes[0]
    assert (route.service, route.region, route.signing_algorithm) == ("s3", "*", "sigv4a")
    assert infer_signing_algorithm("bucket.s3.eu-west-1.amazonaws.com") == "sigv4"


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"target": "https://x.example", "service": "s3", "region": "*"}, "key 'region'"),
        (
            {"target": "https://x.example", "service": "s3", "region": "eu-west-1", "signingAlgorithm": "v5"},
            "one of sigv4, sigv4a",
        ),
        (
            {"target": "https://x.example", "service": "s3", "region": "a b", "signingAlgorithm": "sigv4a"},
            "region set",
        ),
    ],
)
def test_sigv4a_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"proxysigv4": {"/a": spec}}, "t")


def test_a_clear_error_when_awscrt_is_missing(monkeypatch):
    monkeypatch.setattr(config_module, "crt_available", lambda: False)
    with pytest.raises(
        ConfigError, match=r"sigv4a needs the awscrt package.*pip install 'proxysigv4\[crt\]'"
    ):
        parse_config({"proxysigv4": {"/mrap": f"https://{MRAP}"}}, "t")


_verified = verify_then_answer(verifier=verify_sigv4a)  # 200 if the SigV4a signature verifies, else 403


@pytest.mark.e2e
def test_sigv4a_through_mitmdump_verified_upstream(start_proxy, tmp_path):
    with Upstream(_verified) as upstream:
        route = {"target": upstream.url, "service": "s3", "region": "*", "signingAlgorithm": "sigv4a"}
        proxy = start_proxy({"/mrap": route}, proxy_env(tmp_path))
        put = requests.put(f"{proxy.url}/mrap/bucket/a%20b.txt", data=b"hello sigv4a", timeout=10)
        assert put.status_code == 200, put.text
        got = requests.get(f"{proxy.url}/mrap/bucket/a%20b.txt?versionId=1", timeout=10)
        assert got.status_code == 200, got.text
        sent = dict((k.lower(), v) for k, v in upstream.received[-1].headers)
        assert sent["x-amz-region-set"] == "*"
        assert sent["authorization"].startswith("AWS4-ECDSA-P256-SHA256 ")
        # the same request with a signature from other credentials is refused by the upstream
        forged = crt_signed("GET", "/bucket/x", [("host", f"127.0.0.1:{upstream.port}")], b"", "s3", "*")
        forged = [
            (k, v.replace(KEY, "AKIAOTHERKEY00000000") if k.lower() == "authorization" else v)
            for k, v in forged
        ]
        r = requests.get(f"{upstream.url}/bucket/x", headers=dict(forged), timeout=10)
        assert r.status_code == 403


@pytest.mark.e2e
def test_sigv4a_to_another_service_through_mitmdump_verified_upstream(start_proxy, tmp_path):
    """A non-S3 SigV4a route (no X-Amz-Content-SHA256 header): a small body, and bodies from 2 MiB
    on, whose digest is computed in a thread and handed to the CRT signer, verify upstream."""

    with Upstream(_verified) as upstream:
        route = {
            "target": upstream.url,
            "service": "execute-api",
            "region": "*",
            "signingAlgorithm": "sigv4a",
        }
        proxy = start_proxy({"/v4a": route}, proxy_env(tmp_path))
        for size in (12, (2 << 20) - 1, 2 << 20, 3 << 20):
            body = bytes(range(251)) * (size // 251) + b"x" * (size % 251)
            put = requests.put(f"{proxy.url}/v4a/items/a%20b?b=2&a=1", data=body, timeout=30)
            assert put.status_code == 200, (size, put.text)
            sent = upstream.received[-1]
            assert len(sent.body) == size
            names = {k.lower() for k, _ in sent.headers}
            assert "x-amz-content-sha256" not in names and "x-amz-region-set" in names
