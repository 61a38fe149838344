"""Sign a rewritten request with AWS Signature Version 4, computed by botocore.

The caller hands over exactly what will be sent: the wire path and query, the headers that
survived the allowlist and the body bytes. What comes back is the complete header list to
send; nothing else may be added afterwards (it would not be signed).
"""

import hashlib
from dataclasses import dataclass
from types import SimpleNamespace

from botocore.auth import EMPTY_SHA256_HASH, S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from .headers import filter_request_headers
from .redaction import SECRET_HEADERS, redact
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


@dataclass(frozen=True)
class SignedRequest:
    """A request as signed: the complete header list to send, and botocore's record of it."""

    headers: list[tuple[str, str]]
    signed_headers: tuple[str, ...]
    canonical_request: str
    # None where the signer does not expose it (SigV4a: computed inside awscrt)
    string_to_sign: str | None
    signed_at: str  # the signature's time stamp (X-Amz-Date's form), also when a Date header carried it
    scope: str  # the credential scope: day/region/service/aws4_request (SigV4a: day/service/...)
    signature: str

    @classmethod
    def from_authorization(
        cls,
        headers: list[tuple[str, str]],
        canonical_request: str,
        string_to_sign: str | None,
        signed_at: str,
    ) -> "SignedRequest":
        """The signed names, scope and signature as the Authorization header among `headers` states
        them ("ALGORITHM Credential=<key>/<scope>, SignedHeaders=<names>, Signature=<hex>")."""
        authorization = next(v for k, v in headers if k.lower() == "authorization")
        credential = authorization.split("Credential=", 1)[1].split(",", 1)[0]
        names = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        signature = authorization.rsplit("Signature=", 1)[1]
        return cls(
            headers,
            tuple(names),
            canonical_request,
            string_to_sign,
            signed_at,
            credential.split("/", 1)[1],
            signature,
        )

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

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
    canonical_request, string_to_sign = request.context[_RECORD_KEY]
    headers = list(request.headers.items())
    return SignedRequest.from_authorization(
        headers, canonical_request, string_to_sign, request.context["timestamp"]
    )


def body_sha256(body: bytes) -> str:
    """The SHA-256 of a body, hex: what the signature covers (callers may compute it ahead, e.g.
    off the event loop, and pass it as `body_digest`)."""
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256_HASH


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
    sign = sign_request
    if route.signing_algorithm == "sigv4a":
        from .sigv4a import sign_request_sigv4a as sign  # awscrt: optional, imported when needed
    return sign(
        method=method,
        url=upstream.url,
        host_header=upstream.target.host_header,
        headers=headers,
        body=body or b"",
        credentials=credentials,
        service=route.service,
        region=route.region,
        is_s3=route.is_s3,
        payload_hash=payload_hash,
        body_digest=body_digest,
    )
