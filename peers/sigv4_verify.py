"""An independent SigV4 checker built on awscrt (AWS's C signer), used by the tests.

Given a request exactly as received (method, raw target, headers, body), it re-signs the
request with awscrt from those bytes and reports whether the Authorization header matches.
"""

import datetime
import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

from awscrt import auth as crt_auth
from awscrt import http as crt_http

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<sig>[0-9a-f]{64})$"
)
S3_SERVICES = {"s3", "s3-object-lambda"}
UNSIGNED_MODES = {"UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}


# access key -> (secret, session token or None)
Secrets = dict[str, tuple[str, str | None]]


@dataclass
class Verdict:
    ok: bool
    reason: str
    expected: str | None = None
    received: str | None = None


# method, target, headers, body, secrets -> the verdict (verify, verify_sigv4a)
Verifier = Callable[[str, str, list[tuple[str, str]], bytes, Secrets], Verdict]


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def crt_authorization(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    token: str | None,
    service: str,
    region: str,
    when: datetime.datetime,
) -> str:
    """awscrt's Authorization header for this request, signing the headers given (minus its own)."""
    is_s3 = service in S3_SERVICES
    content_sha = _header(headers, "x-amz-content-sha256")
    # Headers awscrt adds itself (x-amz-content-sha256 when told its value).
    own = {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
    request = crt_http.HttpRequest(
        method=method,
        path=target,
        headers=crt_http.HttpHeaders([(k, v) for k, v in headers if k.lower() not in own]),
        body_stream=io.BytesIO(body),
    )
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4,
        signature_type=crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(access_key, secret_key, token),
        region=region,
        service=service,
        date=when,
        use_double_uri_encode=not is_s3,
        should_normalize_uri_path=not is_s3,
        signed_body_value=content_sha,
        signed_body_header_type=(
            crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256
            if content_sha
            else crt_auth.AwsSignedBodyHeaderType.NONE
        ),
    )
    crt_auth.aws_sign_request(request, config).result(10)
    return request.headers.get("authorization")


def botocore_authorization(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    token: str | None,
    service: str,
    region: str,
    when: datetime.datetime,
) -> str:
    """botocore's Authorization for the received request, at the received time."""
    from unittest import mock

    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials

    host = _header(headers, "host")
    request = AWSRequest(method=method, url=f"http://{host}{target}", data=body)
    for k, v in headers:
        if k.lower() not in ("authorization", "x-amz-date"):
            request.headers[k] = v
    signer = (S3SigV4Auth if service in S3_SERVICES else SigV4Auth)(
        ReadOnlyCredentials(access_key, secret_key, token), service, region
    )
    with mock.patch("botocore.auth.datetime") as clock:
        clock.datetime.now.return_value = when
        clock.datetime.utcnow.return_value = when.replace(tzinfo=None)
        signer.add_auth(request)
    return request.headers["Authorization"]


def _payload_hash_mismatch(headers: list[tuple[str, str]], body: bytes) -> Verdict | None:
    """A failed Verdict when x-amz-content-sha256 claims a hash the body received does not have."""
    content_sha = _header(headers, "x-amz-content-sha256")
    if content_sha is not None and content_sha not in UNSIGNED_MODES:
        if content_sha != hashlib.sha256(body).hexdigest():
            return Verdict(False, "x-amz-content-sha256 does not match the body received")
    return None


def _parse_authorization(
    pattern: re.Pattern[str], headers: list[tuple[str, str]], secrets: Secrets
) -> Verdict | tuple[re.Match[str], str, str | None, list[str]]:
    """The Authorization header's parts, the caller's secret and token, and the signed header
    names, after the checks every verifier makes; or the Verdict that failed."""
    authorization = _header(headers, "authorization")
    if not authorization:
        return Verdict(False, "no Authorization header")
    m = pattern.match(authorization)
    if not m:
        return Verdict(False, f"malformed Authorization: {authorization!r}")
    if m["key"] not in secrets:
        return Verdict(False, f"unknown access key {m['key']}")
    secret, token = secrets[m["key"]]
    if token is not None and _header(headers, "x-amz-security-token") != token:
        return Verdict(False, "session token missing or wrong")
    signed = m["signed"].split(";")
    present = {k.lower() for k, _ in headers}
    if missing := [h for h in signed if h not in present]:
        return Verdict(False, f"signed headers not received: {missing}")
    return m, secret, token, signed


def verify(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    secrets: Secrets,
    also_unsigned: frozenset[str] = frozenset(),
) -> Verdict:
    """Check a received request's SigV4 signature. `secrets` maps access key -> (secret, token).
    `also_unsigned`: header names (lower case) that may arrive without being signed."""
    parsed = _parse_authorization(_AUTH, headers, secrets)
    if isinstance(parsed, Verdict):
        return parsed
    m, secret, token, signed = parsed
    authorization = m.string
    amz_date = _header(headers, "x-amz-date")
    if not amz_date or amz_date[:8] != m["date"]:
        return Verdict(False, "X-Amz-Date missing or not matching the credential scope")
    present = {k.lower() for k, _ in headers}
    unsigned = sorted(
        present - set(signed) - {"authorization", "content-length", "connection"} - also_unsigned
    )
    if unsigned:
        return Verdict(False, f"received headers that were not signed: {unsigned}")
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    signed_headers = [
        (k, v) for k, v in headers if k.lower() in signed or k.lower() == "x-amz-security-token"
    ]
    if m["service"] in S3_SERVICES and _header(headers, "x-amz-content-sha256") is None:
        return Verdict(False, "S3 request without x-amz-content-sha256")
    if (mismatch := _payload_hash_mismatch(headers, body)) is not None:
        return mismatch
    signer = crt_authorization
    if "://" in target.split("?")[0] or ":/" in target.split("?")[0]:
        # awscrt's URI parser rejects paths with a "scheme:/" look-alike segment (e.g. /http:/x):
        # for those only, fall back to botocore's signer run on the received request.
        signer = botocore_authorization
    expected = signer(
        method,
        target,
        signed_headers,
        body,
        access_key=m["key"],
        secret_key=secret,
        token=token,
        service=m["service"],
        region=m["region"],
        when=when,
    )
    if expected != authorization:
        return Verdict(False, "signature mismatch", expected, authorization)
    return Verdict(True, "ok", expected, authorization)


def crt_query_signature(method: str, url: str, secrets: Secrets) -> tuple[str, str]:
    """(awscrt's signature, the URL's) for a presigned URL, re-signed by awscrt in query-string
    mode from the URL alone (its non-X-Amz parameters, path and host)."""
    from urllib.parse import parse_qsl, quote, urlsplit

    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(params)
    access_key, _, region, service, _ = given["X-Amz-Credential"].split("/")
    secret, token = secrets[access_key]
    is_s3 = service in S3_SERVICES
    plain = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in params if not k.startswith("X-Amz-")
    )
    request = crt_http.HttpRequest(
        method=method,
        path=parts.path + (f"?{plain}" if plain else ""),
        headers=crt_http.HttpHeaders([("host", parts.netloc)]),
        body_stream=io.BytesIO(b""),
    )
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4,
        signature_type=crt_auth.AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS,
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(access_key, secret, token),
        region=region,
        service=service,
        date=datetime.datetime.strptime(given["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC),
        use_double_uri_encode=not is_s3,
        should_normalize_uri_path=not is_s3,
        signed_body_value="UNSIGNED-PAYLOAD" if is_s3 else None,
        expiration_in_seconds=int(given["X-Amz-Expires"]),
    )
    crt_auth.aws_sign_request(request, config).result(10)
    theirs = dict(parse_qsl(urlsplit(request.path).query))
    return theirs["X-Amz-Signature"], given["X-Amz-Signature"]


# ---- SigV4a -----------------------------------------------------------------------------------
_AUTH_V4A = re.compile(
    r"^AWS4-ECDSA-P256-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<service>[^/]+)/aws4_request, ?"
    r"SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<sig>[0-9a-f]+)$"
)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def sigv4a_private_key(access_key: str, secret_key: str) -> int:
    """The ECDSA P-256 private key SigV4a derives from a key pair (NIST SP 800-108 KDF in counter
    mode with HMAC-SHA256, as the SigV4a specification and aws-c-auth do)."""
    import hmac

    input_key = b"AWS4A" + secret_key.encode()
    for counter in range(1, 255):
        fixed = (
            (1).to_bytes(4, "big")
            + b"AWS4-ECDSA-P256-SHA256"
            + b"\x00"
            + access_key.encode()
            + bytes([counter])
            + (256).to_bytes(4, "big")
        )
        candidate = int.from_bytes(hmac.new(input_key, fixed, hashlib.sha256).digest(), "big")
        if candidate <= _P256_ORDER - 2:
            return candidate + 1
    raise ValueError("no key derived")


def verify_sigv4a(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    secrets: Secrets,
) -> Verdict:
    """Check a received request's SigV4a signature: rebuild its canonical request (botocore's
    algorithm, from the signed headers received) and verify the ECDSA signature over the string to
    sign with the public key derived from the credentials."""
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    parsed = _parse_authorization(_AUTH_V4A, headers, secrets)
    if isinstance(parsed, Verdict):
        return parsed
    m, secret, token, signed = parsed
    amz_date = _header(headers, "x-amz-date") or ""
    if "x-amz-region-set" not in signed:
        return Verdict(False, "x-amz-region-set not signed")
    if (mismatch := _payload_hash_mismatch(headers, body)) is not None:
        return mismatch
    request = AWSRequest(method=method, url=f"http://{_header(headers, 'host')}{target}", data=body)
    for k, v in headers:
        if k.lower() in signed:
            request.headers[k] = v
    signer = (S3SigV4Auth if m["service"] in S3_SERVICES else SigV4Auth)(
        ReadOnlyCredentials(m["key"], secret, token), m["service"], "unused"
    )
    canonical_request = signer.canonical_request(request)
    string_to_sign = "\n".join(
        [
            "AWS4-ECDSA-P256-SHA256",
            amz_date,
            f"{m['date']}/{m['service']}/aws4_request",
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    public = ec.derive_private_key(sigv4a_private_key(m["key"], secret), ec.SECP256R1()).public_key()
    try:
        public.verify(bytes.fromhex(m["sig"]), string_to_sign.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return Verdict(False, "SigV4a signature does not verify")
    return Verdict(True, "ok")
