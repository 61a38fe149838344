"""Sign a rewritten request with AWS Signature Version 4, computed by botocore.

The caller hands over exactly what will be sent: the wire path and query, the headers that
survived the allowlist and the body bytes. What comes back is the complete header list to
send; nothing else may be added afterwards (it would not be signed).
"""

import functools
import hashlib
import re
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import quote

from botocore.auth import EMPTY_SHA256_HASH, S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from .headers import filter_request_headers
from .routing import Upstream

# Methods whose empty body is still announced with Content-Length: 0.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Services that require the payload hash as a header (S3 adds it itself).
_CONTENT_SHA256_SERVICES = frozenset({"aoss"})
# Ask botocore's S3 signer to hash the payload even over https with Content-MD5.
_S3_SIGN_PAYLOAD = SimpleNamespace(s3={"payload_signing_enabled": True})
_PAYLOAD_KEY = "proxysigv4_payload_hash"
_RECORD_KEY = "proxysigv4_canonical"
_HEADERS_KEY = "proxysigv4_headers_to_sign"


_SIGNATURE = re.compile(r"Signature=[0-9a-f]+")
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")
REDACTED = "<redacted>"
# Signed headers that hold a secret: hidden in the flow once the request has left.
SECRET_HEADERS = frozenset({"authorization", "x-amz-security-token"})


def mask_key_id(access_key_id: str | None) -> str | None:
    """An access key id shown as AKIA…WXYZ: recognisable, not complete."""
    if not access_key_id:
        return None
    return f"{access_key_id[:4]}…{access_key_id[-4:]}" if len(access_key_id) > 8 else "…"


def redact(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The signed headers with the signature, the session token and most of the key id hidden,
    for what stays on record (saved flows, mitmweb, dump output) after the request has left."""
    out = []
    for name, value in fields:
        lname = name.lower()
        if lname == "authorization":
            value = _SIGNATURE.sub(f"Signature={REDACTED}", value)
            value = _CREDENTIAL.sub(lambda m: f"Credential={mask_key_id(m[1])}/", value)
        elif lname == "x-amz-security-token":
            value = REDACTED
        out.append((name, value))
    return out


_TOKEN_LINE = re.compile(r"^(x-amz-security-token:)(.*)$", re.MULTILINE | re.IGNORECASE)


def redact_canonical(canonical_request: str) -> str:
    """A canonical request without the session token: a short hash stands in, so two copies can
    still be compared (e.g. ours against the one AWS returns in an error)."""

    def short_hash(m: re.Match[str]) -> str:
        return f"{m[1]}{REDACTED[:-1]} sha256:{hashlib.sha256(m[2].strip().encode()).hexdigest()[:12]}>"

    return _TOKEN_LINE.sub(short_hash, canonical_request)


@dataclass(frozen=True)
class SignedRequest:
    """A request as signed: the complete header list to send, and botocore's record of it."""

    headers: list[tuple[str, str]]
    signed_headers: tuple[str, ...]
    canonical_request: str
    # None where the signer does not expose it (SigV4a: computed inside awscrt)
    string_to_sign: str | None
    signed_at: str  # the signature's time stamp (X-Amz-Date's form), also when a Date header carried it

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

    @property
    def scope(self) -> str:
        """The credential scope (day/region/service/aws4_request, or day/service/... for SigV4a),
        as the Authorization header states it."""
        credential = (self.header("authorization") or "").split("Credential=", 1)[-1]
        return credential.split(",", 1)[0].split("/", 1)[-1]

    @property
    def signature(self) -> str:
        return (self.header("authorization") or "").rsplit("Signature=", 1)[-1]

    def redacted_secrets(self) -> tuple[tuple[str, str], ...]:
        """The signed headers that hold a secret, hidden (see `redact`): what stays in the flow."""
        return tuple(redact([(k, v) for k, v in self.headers if k.lower() in SECRET_HEADERS]))


class _Recording:
    """Keeps the canonical request and string to sign botocore computes."""

    def string_to_sign(self, request: AWSRequest, canonical_request: str) -> str:
        result = super().string_to_sign(request, canonical_request)  # type: ignore[misc]
        request.context[_RECORD_KEY] = (canonical_request, result)
        return result


class _GivenPayload:
    """botocore's payload hash, unless the caller chose one (UNSIGNED-PAYLOAD, a streaming mode) or
    already computed the body's SHA-256 (in a thread, for a large body)."""

    def payload(self, request: AWSRequest) -> str:
        return request.context.get(_PAYLOAD_KEY) or super().payload(request)  # type: ignore[misc]


class _HeadersOnce:
    """botocore's headers_to_sign, computed once per request: add_auth asks for it twice (canonical
    request, Authorization header) on unchanged headers, and each answer builds an email.message
    header map (36.9 -> 34.3 µs per signature in-process; test_signing)."""

    def headers_to_sign(self, request: AWSRequest):
        selected = request.context.get(_HEADERS_KEY)
        if selected is None:
            selected = request.context[_HEADERS_KEY] = super().headers_to_sign(request)  # type: ignore[misc]
        return selected


class _SigV4Auth(_Recording, _GivenPayload, _HeadersOnce, SigV4Auth):
    pass


class _S3Auth(_Recording, _GivenPayload, _HeadersOnce, S3SigV4Auth):
    pass


def _aws_request(
    method: str, url: str, host_header: str, headers: list[tuple[str, str]], body: bytes
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body)
    request.headers["Host"] = host_header
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders appends: repeated headers are kept
    return request


def _signed_header_names(authorization: str) -> list[str]:
    return authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")


def sign_request(
    *,
    method: str,
    url: str,
    host_header: str,
    headers: list[tuple[str, str]],
    body: bytes,
    credentials: ReadOnlyCredentials,
    service: str,
    region: str,
    is_s3: bool,
    payload_hash: str | None = None,
    body_digest: str | None = None,
) -> SignedRequest:
    """botocore's SigV4Auth / S3SigV4Auth `add_auth` on method + url + headers + body; `url` holds
    the path and query exactly as sent. `payload_hash` (UNSIGNED-PAYLOAD, a streaming mode)
    stands in for the body's SHA-256; `body_digest` is that SHA-256, if already computed.
    The canonical request and string to sign recorded are the ones botocore signed."""
    request = _aws_request(method, url, host_header, headers, body)
    if payload_hash is not None:
        request.context[_PAYLOAD_KEY] = payload_hash
        if not is_s3:  # SigV4Auth takes an explicit payload hash from this header
            request.headers["X-Amz-Content-SHA256"] = payload_hash
    else:
        # The body's SHA-256 handed over: botocore would read the body through AWSRequest.prepare(),
        # which copies every header first (43 -> 33 µs per signature in-process; test_signing).
        request.context[_PAYLOAD_KEY] = body_digest = body_digest or body_sha256(body)
        if service in _CONTENT_SHA256_SERVICES:
            request.headers["X-Amz-Content-SHA256"] = body_digest
    if is_s3:
        request.context["client_config"] = _S3_SIGN_PAYLOAD
        _S3Auth(credentials, service, region).add_auth(request)
    else:
        _SigV4Auth(credentials, service, region).add_auth(request)
    signed = _signed_header_names(request.headers["Authorization"])
    canonical_request, string_to_sign = request.context[_RECORD_KEY]
    return SignedRequest(
        list(request.headers.items()),
        tuple(signed),
        canonical_request,
        string_to_sign,
        request.context["timestamp"],
    )


def sign_request_sigv4a(
    *,
    method: str,
    url: str,
    host_header: str,
    headers: list[tuple[str, str]],
    body: bytes,
    credentials: ReadOnlyCredentials,
    service: str,
    region: str,
    is_s3: bool,
    payload_hash: str | None = None,
    body_digest: str | None = None,
) -> SignedRequest:
    """SigV4a (ECDSA P-256, valid in a region set such as `*`) by botocore's CRT signer (awscrt).

    The CRT does not return its canonical request or string to sign. The canonical request
    recorded for mitmweb is botocore's `canonical_request` of the signed request over the headers
    the CRT signed (the same algorithm; the test suite verifies real signatures against it); the
    string to sign is not recorded."""
    from botocore.crt.auth import CrtS3SigV4AsymAuth, CrtSigV4AsymAuth

    request = _aws_request(method, url, host_header, headers, body)
    signer = CrtS3SigV4AsymAuth if is_s3 else CrtSigV4AsymAuth
    if payload_hash is not None:  # the CRT signer takes an explicit payload hash from this header
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    else:
        # The body's SHA-256 computed here (or given: hashed in a thread) rather than by the CRT, which
        # would read the body again through a Python stream, on the event loop (~50-100 ms for 32 MiB).
        body_digest = body_digest or body_sha256(body)
        request.headers["X-Amz-Content-SHA256"] = body_digest
        if not (is_s3 or service in _CONTENT_SHA256_SERVICES):
            signer = _crt_digest_given()  # the same signature, without sending that header
    if is_s3:
        request.context["client_config"] = _S3_SIGN_PAYLOAD
    signer(credentials, service, region).add_auth(request)
    out = list(request.headers.items())
    signed = _signed_header_names(next(v for k, v in out if k.lower() == "authorization"))
    record = AWSRequest(method=method, url=url, data=body)
    for name, value in out:
        if name.lower() in signed:
            record.headers[name] = value
    record.context[_PAYLOAD_KEY] = payload_hash or body_digest
    canonical_request = (_S3Auth if is_s3 else _SigV4Auth)(credentials, service, region).canonical_request(
        record
    )
    signed_at = next((v for k, v in out if k.lower() == "x-amz-date"), "")
    return SignedRequest(out, tuple(signed), canonical_request, None, signed_at)


@functools.cache
def _crt_digest_given() -> type:
    """botocore's CRT SigV4a signer for a service that gets no X-Amz-Content-SHA256 header, given
    the body's SHA-256 in that header: botocore takes it as the payload's hash (the canonical
    request's last line, as when the CRT hashes the body) and removes the header before signing;
    this class does not add it back."""
    from botocore.crt.auth import CrtSigV4AsymAuth

    class CrtSigV4AsymDigestGiven(CrtSigV4AsymAuth):
        def _should_add_content_sha256_header(self, explicit_payload):
            return False

    return CrtSigV4AsymDigestGiven


def body_sha256(body: bytes) -> str:
    """The SHA-256 of a body, hex: what the signature covers (callers may compute it ahead, e.g.
    off the event loop, and pass it as `body_digest`)."""
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256_HASH


class _QueryAuth(_Recording, SigV4QueryAuth):
    pass


class _S3QueryAuth(_Recording, S3SigV4QueryAuth):
    pass


@dataclass(frozen=True)
class PresignedRequest:
    url: str
    canonical_request: str
    string_to_sign: str


def presign_url(
    method: str,
    url: str,
    credentials: ReadOnlyCredentials,
    service: str,
    region: str,
    is_s3: bool,
    expires: int,
) -> PresignedRequest:
    """botocore's query-string signer (S3SigV4QueryAuth for S3, SigV4QueryAuth otherwise) on a
    request without body: the URL carries the signature, valid `expires` seconds."""
    request = AWSRequest(method=method, url=url)
    signer = _S3QueryAuth if is_s3 else _QueryAuth
    signer(credentials, service, region, expires=expires).add_auth(request)
    canonical_request, string_to_sign = request.context[_RECORD_KEY]
    return PresignedRequest(request.url, canonical_request, string_to_sign)


_QUERY_SECRETS = re.compile(r"((?:^|&)X-Amz-(?:Signature|Security-Token)=)[^&\n]*", re.MULTILINE)


def redact_query(query: str) -> str:
    """A presigned query (or a canonical request holding one) with its signature and session
    token hidden."""
    return _QUERY_SECRETS.sub(lambda m: m[1] + quote(REDACTED), query)


def sign_upstream(
    upstream: Upstream,
    method: str,
    client_headers: list[tuple[str, str]],
    body: bytes | None,
    credentials: ReadOnlyCredentials,
    *,
    payload_hash: str | None = None,
    content_length: int | None = None,
    connection: set[str] | None = None,
    body_digest: str | None = None,
) -> SignedRequest:
    """Filter the client's headers by the route's allowlist, frame the body, and sign.

    A streamed body (`body` None) is signed with `payload_hash` and the client's Content-Length.
    `connection`: the client headers' connection_tokens, if already at hand; `body_digest`: the
    body's SHA-256 (body_sha256), if already computed.
    """
    route = upstream.route
    headers = filter_request_headers(route.request_headers, client_headers, connection)
    if body is not None:
        content_length = len(body)
    if content_length or method.upper() in _BODY_METHODS:
        headers.append(("content-length", str(content_length or 0)))
    sign = sign_request_sigv4a if route.signing_algorithm == "sigv4a" else sign_request
    return sign(
        method=method,
        url=upstream.url,
        host_header=route.target.host_header,
        headers=headers,
        body=body or b"",
        credentials=credentials,
        service=route.service,
        region=route.region,
        is_s3=route.is_s3,
        payload_hash=payload_hash,
        body_digest=body_digest,
    )
