"""No secret stays behind: what is hidden once a signed request has left (the flow's copy of its
headers and URL, saved flows, mitmweb, dump output), what is masked when shown (access key ids),
and what is scrubbed from AWS error bodies that echo it."""

import hashlib
import re
from urllib.parse import quote

from mitmproxy import http

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


_QUERY_SECRETS = re.compile(r"((?:^|&)X-Amz-(?:Signature|Security-Token)=)[^&\n]*", re.MULTILINE)


def redact_query(query: str) -> str:
    """A presigned query (or a canonical request holding one) with its signature and session
    token hidden."""
    return _QUERY_SECRETS.sub(lambda m: m[1] + quote(REDACTED), query)


def scrub_echoed_secrets(response: http.Response, secrets: tuple[bytes, ...]) -> None:
    """AWS error bodies can echo the session token and signature (S3's CanonicalRequest,
    SignatureProvided): the client never sees them."""
    content = response.content or b""
    if any(secret in content for secret in secrets):
        for secret in secrets:
            content = content.replace(secret, REDACTED.encode())
        response.content = content


def hide_sent_secrets(
    request: http.Request, redacted: tuple[tuple[str, str], ...], flow_path: str | None
) -> None:
    """Once the request has left: its signed headers' secrets hidden (`SignedRequest.redacted_secrets`)
    and a presigned path's signature, so the flow keeps no usable signature or session token."""
    for name, value in redacted:
        request.headers[name] = value
    if flow_path is not None:
        request.path = flow_path
