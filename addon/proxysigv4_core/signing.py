"""Sign a rewritten request with AWS Signature Version 4, computed by botocore.

The caller hands over exactly what will be sent: the wire path and query, the headers that
survived the allowlist and the body bytes. What comes back is the complete header list to
send; nothing else may be added afterwards (it would not be signed).
"""

import hashlib
import re
from dataclasses import dataclass
from types import SimpleNamespace

from botocore.auth import S3SigV4Auth, SigV4Auth
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


_SIGNATURE = re.compile(r"Signature=[0-9a-f]+")
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")
REDACTED = "<redacted>"


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
    headers: list[tuple[str, str]]
    signed_headers: tuple[str, ...]
    canonical_request: str
    string_to_sign: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class _Recording:
    """Keeps the canonical request and string to sign botocore computes (for mitmweb)."""

    def string_to_sign(self, request: AWSRequest, canonical_request: str) -> str:
        result = super().string_to_sign(request, canonical_request)  # type: ignore[misc]
        request.context[_RECORD_KEY] = (canonical_request, result)
        return result


class _SigV4Auth(_Recording, SigV4Auth):
    pass


class _S3Auth(_Recording, S3SigV4Auth):
    """botocore's S3 signer, with a payload hash chosen by the caller when one is given."""

    def payload(self, request: AWSRequest) -> str:
        return request.context.get(_PAYLOAD_KEY) or super().payload(request)


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
) -> SignedRequest:
    """Sign method + url + headers + body; `url` must hold the path and query exactly as sent.

    `payload_hash` (e.g. UNSIGNED-PAYLOAD) replaces the body's SHA-256, for bodies that stream.
    """
    request = AWSRequest(method=method, url=url, data=body)
    request.headers["Host"] = host_header
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders appends: repeated headers are kept
    if payload_hash is not None:
        request.context[_PAYLOAD_KEY] = payload_hash
        if not is_s3:  # SigV4Auth takes the payload hash from this header when present
            request.headers["X-Amz-Content-SHA256"] = payload_hash
    elif service in _CONTENT_SHA256_SERVICES:
        request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    if is_s3:
        request.context["client_config"] = _S3_SIGN_PAYLOAD
        _S3Auth(credentials, service, region).add_auth(request)
    else:
        _SigV4Auth(credentials, service, region).add_auth(request)
    authorization = request.headers["Authorization"]
    signed = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    canonical_request, string_to_sign = request.context[_RECORD_KEY]
    return SignedRequest(list(request.headers.items()), tuple(signed), canonical_request, string_to_sign)


def sign_upstream(
    upstream: Upstream,
    method: str,
    client_headers: list[tuple[str, str]],
    body: bytes | None,
    credentials: ReadOnlyCredentials,
    *,
    payload_hash: str | None = None,
    content_length: int | None = None,
) -> SignedRequest:
    """Filter the client's headers by the route's allowlist, frame the body, and sign.

    A streamed body (`body` None) is signed with `payload_hash` and the client's Content-Length.
    """
    route = upstream.route
    headers = filter_request_headers(route.request_headers, client_headers)
    if body is not None:
        content_length = len(body)
    if content_length or method.upper() in _BODY_METHODS:
        headers.append(("content-length", str(content_length or 0)))
    return sign_request(
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
    )
