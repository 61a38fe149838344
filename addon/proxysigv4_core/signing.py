"""Sign a rewritten request with AWS Signature Version 4, computed by botocore.

The caller hands over exactly what will be sent: the wire path and query, the headers that
survived the allowlist and the body bytes. What comes back is the complete header list to
send; nothing else may be added afterwards (it would not be signed).
"""

import calendar
import datetime
import functools
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

from botocore.auth import (
    EMPTY_SHA256_HASH,
    SIGNED_HEADERS_BLACKLIST,
    SIGV4_TIMESTAMP,
    S3SigV4Auth,
    S3SigV4QueryAuth,
    SigV4Auth,
    SigV4QueryAuth,
)
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.utils import normalize_url_path

from .headers import filter_request_headers
from .memo import memoised
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
# Signed headers that hold a secret: hidden in the flow once the request has left.
SECRET_HEADERS = frozenset({"authorization", "x-amz-security-token"})


def mask_key_id(access_key_id: str | None) -> str | None:
    """An access key id shown as AKIA…WXYZ: recognisable, not complete."""
    if not access_key_id:
        return None
    return f"{access_key_id[:4]}…{access_key_id[-4:]}" if len(access_key_id) > 8 else "…"


_AUTHORIZATION_HEAD = "AWS4-HMAC-SHA256 Credential="


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
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

    @property
    def scope(self) -> str:
        """The credential scope (day/region/service/aws4_request, or day/service/... for SigV4a)."""
        return self.string_to_sign.split("\n", 3)[2]

    @property
    def signature(self) -> str:
        return (self.header("authorization") or "").rsplit("Signature=", 1)[-1]

    def redacted_secrets(self) -> tuple[tuple[str, str], ...]:
        """The signed headers that hold a secret, hidden (see `redact`): what stays in the flow."""
        return tuple(redact([(k, v) for k, v in self.headers if k.lower() in SECRET_HEADERS]))


@dataclass(frozen=True)
class _SignedV4(SignedRequest):
    """What `sign_request` computed, with the parts the addon records kept instead of re-parsed."""

    _signature: str = ""
    _access_key: str = ""
    _token: bool = False

    @property
    def signature(self) -> str:
        return self._signature

    def redacted_secrets(self) -> tuple[tuple[str, str], ...]:
        # The same as the generic scan, built from what is known: Authorization is the last header,
        # "AWS4-HMAC-SHA256 Credential=<key>/<scope>, SignedHeaders=<names>, Signature=<signature>".
        name, authorization = self.headers[-1]
        key = self._access_key
        masked = (
            f"{_AUTHORIZATION_HEAD}{mask_key_id(key)}"
            f"{authorization[len(_AUTHORIZATION_HEAD) + len(key) : -len(self._signature)]}{REDACTED}"
        )
        if self._token:
            return (("X-Amz-Security-Token", REDACTED), (name, masked))
        return ((name, masked),)


class _SigningKey:
    """A SigV4 signing key with its HMAC-SHA256 pads hashed once: signing a string is then two hash
    copies (hmac.digest would set up OpenSSL's HMAC, key schedule included, on every call)."""

    __slots__ = ("key", "_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        self.key = key
        padded = key.ljust(64, b"\0")  # a SigV4 key is 32 bytes: shorter than SHA-256's block
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def sign(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


# Signing keys derived from (secret, day, region, service): valid for that whole UTC day.
_signing_keys: dict[tuple[str, str, str, str], _SigningKey] = {}
_SIGNING_KEYS_KEPT = 64
_NOT_SIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
# The headers botocore deletes before it signs, by (client sent Date, session token, S3).
_REMOVED = {
    (date, token, s3): frozenset(
        {"authorization", "x-amz-date"}
        | ({"date"} if date else set())
        | ({"x-amz-security-token"} if token else set())
        | ({"x-amz-content-sha256"} if s3 else set())
    )
    for date in (False, True)
    for token in (False, True)
    for s3 in (False, True)
}


class _Recording:
    """Keeps the canonical request and string to sign botocore computes."""

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
    now: datetime.datetime | None = None,
) -> SignedRequest:
    """Sign method + url + headers + body; `url` must hold the path and query exactly as sent.

    `payload_hash` (e.g. UNSIGNED-PAYLOAD) replaces the body's SHA-256, for bodies that stream.

    This is botocore's SigV4Auth / S3SigV4Auth `add_auth`, step for step (same header changes in
    the same order, same canonical request, same key derivation), without its per-request objects
    and with the signing key cached per day; `sign_request_botocore` runs botocore's own signer
    on the same input and the tests require both to agree, byte for byte.
    """
    parts = urlsplit(url)
    return _sign(
        method,
        parts.path,
        parts.query,
        host_header,
        headers,
        body,
        credentials,
        service,
        region,
        is_s3,
        payload_hash,
        now.strftime(SIGV4_TIMESTAMP) if now is not None else _timestamp_now(),
    )


def _sign(
    method: str,
    path: str,
    query: str,
    host_header: str,
    headers: list[tuple[str, str]],
    body: bytes,
    credentials: ReadOnlyCredentials,
    service: str,
    region: str,
    is_s3: bool,
    payload_hash: str | None,
    timestamp: str,
    body_digest: str | None = None,
) -> SignedRequest:
    """`sign_request` on a path and query already split (as `sign_upstream` has them);
    `body_digest`: the body's SHA-256 if already computed."""
    token = credentials.token
    # Names are compared lower-cased, as botocore's HTTPHeaders does.
    lnames = [k.lower() for k, _ in headers]
    has_date = "date" in lnames
    # _modify_request_before_signing and add_auth: botocore deletes these headers, then appends its
    # own in this order; none it appends is deleted after, so one pass removes them all first.
    removed = _REMOVED[has_date, bool(token), is_s3]
    out = [("Host", host_header)]
    lower = ["host"]
    for field, lname in zip(headers, lnames, strict=True):
        if lname not in removed:
            out.append(field)
            lower.append(lname)
    if payload_hash is not None and not is_s3:  # SigV4Auth takes the payload hash from this header
        out.append(("X-Amz-Content-SHA256", payload_hash))
        lower.append("x-amz-content-sha256")
    elif payload_hash is None and service in _CONTENT_SHA256_SERVICES:
        out.append(("X-Amz-Content-SHA256", body_digest or body_sha256(body)))
        lower.append("x-amz-content-sha256")
    if has_date:
        when = datetime.datetime.strptime(timestamp, SIGV4_TIMESTAMP)
        out.append(("Date", formatdate(int(calendar.timegm(when.timetuple())))))
        lower.append("date")
    else:
        out.append(("X-Amz-Date", timestamp))
        lower.append("x-amz-date")
    if token:
        out.append(("X-Amz-Security-Token", token))
        lower.append("x-amz-security-token")
    if is_s3:
        out.append(("X-Amz-Content-SHA256", payload_hash or body_digest or body_sha256(body)))
        lower.append("x-amz-content-sha256")
    canonical_request, names = _canonical_request(
        method, path, query, out, lower, body, is_s3, body_digest=body_digest
    )
    signed_headers = ";".join(names)
    day = timestamp[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = (
        f"AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n"
        + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    )
    signature = signing_key(credentials.secret_key, day, region, service).sign(string_to_sign.encode("utf-8"))
    out.append(
        (
            "Authorization",
            f"{_AUTHORIZATION_HEAD}{credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}",
        )
    )
    # Made without the frozen dataclass's __init__ (a guarded setattr for each of 8 fields, more
    # than half of this object's cost): the same fields, set at once.
    signed = object.__new__(_SignedV4)
    signed.__dict__.update(
        headers=out,
        signed_headers=tuple(names),
        canonical_request=canonical_request,
        string_to_sign=string_to_sign,
        _signature=signature,
        _access_key=credentials.access_key,
        _token=bool(token),
    )
    return signed


@memoised()
def _canonical_uri(path: str, is_s3: bool) -> str:
    """botocore's canonical URI: S3's path as it is; others normalised and encoded once more."""
    return path if is_s3 else quote(normalize_url_path(path), safe="/~")


@memoised()
def _canonical_query(query: str) -> str:
    """botocore's canonical query string for a query already encoded: its pairs sorted."""
    if not query:
        return ""
    return "&".join(f"{k}={v}" for k, v in sorted(q.partition("=")[::2] for q in query.split("&")))


def _canonical_request(
    method: str,
    path: str,
    query: str,
    fields: list[tuple[str, str]],
    lower: list[str],
    body: bytes,
    is_s3: bool,
    only: frozenset[str] | None = None,
    netloc: str = "",
    body_digest: str | None = None,
) -> tuple[str, list[str]]:
    """botocore's canonical_request: the headers not on its blocklist (or those in `only`);
    `lower` holds the fields' names lower-cased; `body_digest`: the body's SHA-256 if known."""
    to_sign: dict[str, list[str]] = {}
    body_hash = None
    for (_, value), lname in zip(fields, lower, strict=True):
        if (lname in only) if only is not None else (lname not in _NOT_SIGNED):
            values = to_sign.get(lname)
            if values is None:
                to_sign[lname] = [value]
            else:
                values.append(value)
        if body_hash is None and lname == "x-amz-content-sha256":
            body_hash = value
    if "host" not in to_sign:
        to_sign["host"] = [netloc]
    names = sorted(to_sign)
    canonical_headers = "\n".join(
        [f"{n}:{','.join([' '.join(v.split()) for v in to_sign[n]])}" for n in names]
    )
    if body_hash is None:
        body_hash = body_digest or body_sha256(body)
    canonical = "\n".join(
        (
            method.upper(),
            _canonical_uri(path, is_s3),
            _canonical_query(query),
            canonical_headers + "\n",
            ";".join(names),
            body_hash,
        )
    )
    return canonical, names


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

    The canonical request and string to sign are rebuilt from what was signed, for mitmweb (the
    CRT does not return them); the test suite verifies real signatures against them."""
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
    parts = urlsplit(url)
    lower = [k.lower() for k, _ in out]
    canonical_request, _ = _canonical_request(
        method, parts.path, parts.query, out, lower, body, is_s3, frozenset(signed), parts.netloc, body_digest
    )
    timestamp = next((v for (_, v), n in zip(out, lower, strict=True) if n == "x-amz-date"), "")
    string_to_sign = (
        f"AWS4-ECDSA-P256-SHA256\n{timestamp}\n{timestamp[:8]}/{service}/aws4_request\n"
        + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    )
    return SignedRequest(out, tuple(signed), canonical_request, string_to_sign)


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


_last_timestamp: tuple[int, str] = (-1, "")


def _timestamp_now() -> str:
    """The current UTC time as SigV4 writes it (whole seconds, as botocore's strftime gives),
    formatted once per second."""
    global _last_timestamp
    second = int(time.time())
    if _last_timestamp[0] != second:
        _last_timestamp = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
    return _last_timestamp[1]


def body_sha256(body: bytes) -> str:
    """The SHA-256 of a body, hex: what the signature covers (callers may compute it ahead, e.g.
    off the event loop, and pass it as `body_digest`)."""
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256_HASH


def signing_key(secret: str, day: str, region: str, service: str) -> _SigningKey:
    """botocore's key derivation (HMAC chain from "AWS4" + secret), cached: a key is valid for one
    UTC day, region and service. Its `sign(string_to_sign)` gives the hex signature."""
    cache_key = (secret, day, region, service)
    key = _signing_keys.get(cache_key)
    if key is None:
        derived = f"AWS4{secret}".encode()
        for part in (day, region, service, "aws4_request"):
            derived = hmac.digest(derived, part.encode("utf-8"), "sha256")
        if len(_signing_keys) >= _SIGNING_KEYS_KEPT:
            _signing_keys.clear()
        key = _signing_keys[cache_key] = _SigningKey(derived)
    return key


def sign_request_botocore(
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
    """The reference: botocore's own SigV4Auth / S3SigV4Auth on an AWSRequest (used by the tests and
    the benchmark to prove `sign_request` gives the same result)."""
    request = _aws_request(method, url, host_header, headers, body)
    if payload_hash is not None:
        request.context[_PAYLOAD_KEY] = payload_hash
        if not is_s3:
            request.headers["X-Amz-Content-SHA256"] = payload_hash
    elif service in _CONTENT_SHA256_SERVICES:
        request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    if is_s3:
        request.context["client_config"] = _S3_SIGN_PAYLOAD
        _S3Auth(credentials, service, region).add_auth(request)
    else:
        _SigV4Auth(credentials, service, region).add_auth(request)
    signed = _signed_header_names(request.headers["Authorization"])
    canonical_request, string_to_sign = request.context[_RECORD_KEY]
    return SignedRequest(list(request.headers.items()), tuple(signed), canonical_request, string_to_sign)


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
    if route.signing_algorithm == "sigv4a":
        return sign_request_sigv4a(
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
    return _sign(
        method,
        upstream.path,
        upstream.query,
        route.target.host_header,
        headers,
        body or b"",
        credentials,
        route.service,
        route.region,
        route.is_s3,
        payload_hash,
        _timestamp_now(),
        body_digest,
    )
