"""A planned request on its way: signed (by botocore), retargeted to its route's upstream, recorded
for mitmweb, and tracked until its answer (what to hide again, what AWS may echo)."""

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from botocore.credentials import ReadOnlyCredentials
from mitmproxy import http

from .config import Route, Target
from .credentials import CredentialProvider
from .flowrecord import FlowRecord, set_record
from .headers import connection_management, connection_tokens, first_values, websocket_handshake
from .intake import Planned, header_fields
from .presign import presign_url
from .redaction import mask_key_id, redact_canonical, redact_query
from .requestlog import RequestHead
from .routing import Upstream
from .signers import SignedRequest
from .signing import sign_upstream
from .streaming import content_length

# A WebSocket upgrade signed in its URL must be used at once: a minute is plenty.
WEBSOCKET_PRESIGN_EXPIRES = 60


@dataclass(slots=True)
class InFlight:
    """A request this addon signed and forwarded, until its response or error."""

    route: Route
    started: float
    log_head: RequestHead  # the request line's first part: method, client path, target URL
    timer: asyncio.TimerHandle | None = None  # the route timeout's handle
    # What AWS may echo back in an error body (S3 does): scrubbed before the client sees it.
    secrets: tuple[bytes, ...] = ()
    # The signed headers with their secrets hidden, put back into the flow once it has left.
    redacted: tuple[tuple[str, str], ...] = ()
    flow_path: str | None = None  # a presigned path with its signature hidden, likewise
    cors_origin: str | None = None  # an allowed web origin: the answer carries its CORS headers


def forward(
    flow: http.HTTPFlow,
    planned: Planned,
    credentials: ReadOnlyCredentials,
    provider: CredentialProvider,
    body: bytes | None,
    body_digest: str | None = None,
) -> InFlight:
    """Sign the request for its route, send it to the route's target, record it; `body` None: the
    body streams (signed with the plan's payload hash and the client's Content-Length)."""
    request = flow.request
    fields = header_fields(request.headers)
    first = first_values(fields)
    handshake = websocket_handshake(request.method, fields, first)
    tokens = connection_tokens(fields, first)
    signed, path, flow_path = sign(
        planned, request.method, fields, first, handshake, tokens, credentials, body, body_digest
    )
    extra: list[tuple[str, str]] = []
    if handshake is None and (manage := connection_management(tokens)):
        # mitmproxy keeps or closes both connections by this token (headers' "Connection management")
        extra.append(("connection", manage))  # hop-by-hop: never signed
    if expect := first.get("expect"):
        extra.append(("expect", expect))  # never signed; mitmproxy answers it and drops it
    if handshake:
        extra += handshake  # the WebSocket handshake's own headers, not signed
    retarget(request, planned.upstream.target, path, signed.headers + extra)
    set_record(flow, record(flow, planned, signed, provider, credentials, streamed=body is None))
    echoed: tuple[bytes, ...] = (signed.signature.encode(),) if signed.signature else ()
    if credentials.token:
        echoed += (credentials.token.encode(),)
    return InFlight(
        planned.route,
        planned.started,
        RequestHead(request.method, planned.client_target, planned.upstream.url),
        secrets=echoed,
        redacted=signed.redacted_secrets(),
        flow_path=flow_path if flow_path != path else None,
        cors_origin=planned.cors_origin,
    )


def sign(
    planned: Planned,
    method: str,
    fields: list[tuple[str, str]],
    first: dict[str, str],
    handshake: list[tuple[str, str]] | None,
    tokens: set[str],
    credentials: ReadOnlyCredentials,
    body: bytes | None,
    body_digest: str | None,
) -> tuple[SignedRequest, str, str]:
    """The signed request, the path to send, and the path to keep in the flow once it has left
    (a WebSocket upgrade signed in its URL keeps it with the signature hidden)."""
    upstream, plan, route = planned.upstream, planned.plan, planned.route
    path = upstream.path + (f"?{upstream.query}" if upstream.query else "")
    if handshake is not None and route.websocket_auth == "query":
        return _presigned_upgrade(route, upstream, credentials)
    signed = sign_upstream(
        upstream,
        method,
        fields,
        body,
        credentials,
        payload_hash=plan.payload_hash,
        # a held body's own length is used; a streamed one's comes from the client's header
        content_length=content_length(first) if body is None else None,
        connection=tokens,
        body_digest=body_digest,
    )
    return signed, path, path


def _presigned_upgrade(
    route: Route, upstream: Upstream, credentials: ReadOnlyCredentials
) -> tuple[SignedRequest, str, str]:
    """A WebSocket upgrade signed in its URL (X-Amz-Signature, ...), for upstreams that want that."""
    presigned = presign_url(
        "GET", upstream.url, credentials, route.service, route.region, route.is_s3, WEBSOCKET_PRESIGN_EXPIRES
    )
    parts = urlsplit(presigned.url)
    params = dict(parse_qsl(parts.query))
    signed = SignedRequest(
        [("Host", upstream.target.host_header)],
        ("host",),
        redact_query(presigned.canonical_request),  # the token is in its query
        presigned.string_to_sign,
        params["X-Amz-Date"],
        params["X-Amz-Credential"].split("/", 1)[1],
        params["X-Amz-Signature"],
    )
    return signed, f"{parts.path}?{parts.query}", f"{parts.path}?{redact_query(parts.query)}"


def retarget(request: http.Request, target: Target, path: str, headers: list[tuple[str, str]]) -> None:
    """Send the request to `target` with exactly `headers` (Host is among them)."""
    # Set on the request's data directly: the public setters also rewrite the Host header (and
    # IDNA-encode), which `headers` replace anyway (6.4 -> 0.1 µs; test_forwarding's
    # test_retarget_equals_the_public_setters).
    data = request.data
    data.scheme = target.scheme.encode()
    data.host = target.host
    data.port = target.port
    data.path = path.encode()
    # Origin-form on HTTP/1 (a client's absolute-form target is not passed on); :authority on h2/h3.
    data.authority = target.host_header.encode() if (request.is_http2 or request.is_http3) else b""
    # set as mitmproxy holds them, whole (a new Headers object would check every field again)
    request.headers.fields = tuple(
        [(k.encode("latin-1"), v.encode("utf-8", "surrogateescape")) for k, v in headers]
    )


def record(
    flow: http.HTTPFlow,
    planned: Planned,
    signed: SignedRequest,
    provider: CredentialProvider,
    credentials: ReadOnlyCredentials,
    streamed: bool,
) -> FlowRecord:
    """What mitmweb's SigV4 view, replay and the diagnosis read (no secret in it)."""
    route = planned.route
    payload = planned.plan.payload_hash or f"hashed, sha256 {signed.canonical_request.rsplit(chr(10), 1)[-1]}"
    return {
        "route": route.prefix,
        "client_path": planned.client_target,
        "target_url": planned.upstream.url,
        "service": route.service,
        "region": route.region,
        "credential_source": route.credential_source,
        "credential_method": provider.method,
        "access_key_id": mask_key_id(provider.access_key_id),
        "intended": provider.intended,
        "signed_at": signed.signed_at,
        "credential_scope": signed.scope,
        "signed_headers": list(signed.signed_headers),
        "payload": payload + (" (streamed)" if streamed else ""),
        "canonical_request": (
            redact_canonical(signed.canonical_request) if credentials.token else signed.canonical_request
        ),
        "string_to_sign": signed.string_to_sign,
        "replayed": flow.is_replay == "request",
    }
