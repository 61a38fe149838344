"""Decide what streams: request bodies too large to hold (S3, unsigned payload) and responses
that arrive over time (event streams) or are large. Pure functions of headers and route."""

from dataclasses import dataclass

from .config import Route
from .headers import first_values
from .rejection import RequestRejected

# `auto` streams responses longer than this (bytes); smaller ones are buffered for mitmweb.
STREAM_THRESHOLD = 1024 * 1024
STREAMING_CONTENT_TYPES = frozenset(
    {"text/event-stream", "application/vnd.amazon.eventstream", "application/x-ndjson"}
)
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# S3 payload modes a client may choose that do not need a payload signature: passed through.
CLIENT_UNSIGNED_MODES = frozenset({UNSIGNED_PAYLOAD, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
# Per-chunk signatures chain from the client's own request signature: they cannot be re-signed.
CLIENT_SIGNED_CHUNK_MODES = frozenset(
    {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    }
)


@dataclass(frozen=True)
class RequestPlan:
    """How a request body is signed: `payload_hash` None means hash the buffered bytes."""

    stream: bool
    payload_hash: str | None = None


# The common plan (a body held and hashed), made once: plans are immutable.
HOLD_AND_HASH = RequestPlan(stream=False)


def content_length(first: dict[str, str]) -> int | None:
    """The Content-Length of a message's `first_values`, if it is a number."""
    value = first.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def plan_request(
    route: Route, fields: list[tuple[str, str]], first: dict[str, str] | None = None
) -> RequestPlan:
    """Choose buffering or streaming and the payload hash from the request headers (`first`:
    their `first_values`, if already at hand)."""
    headers = first if first is not None else first_values(fields)
    length = content_length(headers)
    too_large = length is not None and length > route.buffer_limit
    client_mode = headers.get("x-amz-content-sha256")
    if client_mode in CLIENT_SIGNED_CHUNK_MODES:
        raise RequestRejected(
            400,
            "unsupported_payload_mode",
            f"x-amz-content-sha256: {client_mode} carries per-chunk signatures made with the client's "
            "own credentials, which the proxy cannot re-sign; send the request unsigned (AWS CLI "
            "--no-sign-request, or an SDK with signing disabled) so the body is sent plain or as "
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        )
    if client_mode in CLIENT_UNSIGNED_MODES and route.is_s3:
        if client_mode != UNSIGNED_PAYLOAD and length is None:
            raise RequestRejected(411, "length_required", f"{client_mode} uploads need a Content-Length")
        return RequestPlan(stream=too_large or client_mode != UNSIGNED_PAYLOAD, payload_hash=client_mode)
    if route.unsigned_payload:
        return RequestPlan(stream=too_large, payload_hash=UNSIGNED_PAYLOAD)
    if too_large:
        if route.is_s3:
            return RequestPlan(stream=True, payload_hash=UNSIGNED_PAYLOAD)
        raise body_too_large(route, length)
    return HOLD_AND_HASH


def body_too_large(route: Route, length: int | None) -> RequestRejected:
    size = f"{length} bytes" if length is not None else "the body"
    return RequestRejected(
        413,
        "body_too_large",
        f"{size} exceeds bufferLimit {route.buffer_limit} bytes for route {route.prefix}: the body "
        "must be held to be hashed for the signature (service "
        f"{route.service}); raise bufferLimit for this route, or use unsignedPayload: true if the "
        "service accepts UNSIGNED-PAYLOAD",
    )


def streams_response(route: Route, method: str, first: dict[str, str]) -> bool | None:
    """True/False to force, None to leave mitmproxy's own decision (stream_large_bodies), from the
    response headers' `first_values`."""
    if route.stream == "never":
        return False
    if route.stream == "always":
        return True
    if method.upper() == "HEAD":
        return None
    content_type = first.get("content-type", "").split(";")[0].strip().lower()
    if content_type in STREAMING_CONTENT_TYPES:
        return True
    length = content_length(first)
    if length is None and "chunked" in first.get("transfer-encoding", "").lower():
        return True
    if length is not None and length > STREAM_THRESHOLD:
        return True
    return None
