"""A signed request's answer on its way back: response headers filtered (allowlist, the WebSocket
handshake, CORS), the streaming decision, and AWS's refusals explained (diagnosis) with any
echoed secret scrubbed."""

import datetime
import logging
from urllib.parse import urlsplit

from mitmproxy import http

from . import browser
from .appsigned import MATCHES
from .authorization import SignedAs, explain_denial
from .config import Route
from .denials import parse_denial
from .diagnosis import DIAGNOSIS_HEADER, AwsError, Diagnosis, diagnose, parse_aws_error
from .flowrecord import FlowRecord, record_of
from .forwarding import InFlight
from .headers import filter_response_fields, websocket_accept_fields, websocket_handshake
from .intake import header_fields
from .redaction import scrub_echoed_secrets
from .streaming import streams_response

log = logging.getLogger("proxysigv4")


def filter_response(flow: http.HTTPFlow, response: http.Response, in_flight: InFlight) -> None:
    """The response headers the client gets, and whether the body streams."""
    route = in_flight.route
    fields = response.headers.fields
    kept, first = filter_response_fields(route.response_headers, fields)
    if response.status_code == 101 and websocket_handshake(
        flow.request.method, header_fields(flow.request.headers)
    ):
        kept = kept if kept is not None else fields
        kept += tuple([h for h in websocket_accept_fields(fields) if h not in kept])
    if in_flight.cors_origin is not None:
        kept = kept if kept is not None else fields
        names = [name.decode("latin-1") for name, _ in kept]
        cors = browser.response_cors_headers(in_flight.cors_origin, names)
        kept += tuple([(k.encode(), v.encode()) for k, v in cors])
    if kept is not None and kept != fields:
        response.headers.fields = kept
    stream = streams_response(route, flow.request.method, first)
    if stream is not None:
        response.stream = stream


def explain_refusal(flow: http.HTTPFlow, response: http.Response, in_flight: InFlight, source: str) -> None:
    """For an error answer that was held: attach an explanation when AWS rejected the signature
    (shown in mitmweb, sent as a header), and scrub what AWS echoed of the secrets."""
    _diagnose(flow, response, in_flight, source)
    scrub_echoed_secrets(response, in_flight.secrets)


def _diagnose(flow: http.HTTPFlow, response: http.Response, in_flight: InFlight, source: str) -> None:
    error = parse_aws_error(response.content or b"", {k.lower(): v for k, v in response.headers.items()})
    if error is None:
        return
    meta = record_of(flow)
    route = in_flight.route
    found = diagnose(
        error,
        route=route.prefix,
        source=source,
        service=route.service,
        region=route.region,
        canonical_request=meta.get("canonical_request"),
        string_to_sign=meta.get("string_to_sign"),
        access_key=meta.get("access_key_id"),
        now=datetime.datetime.now(datetime.UTC),
        changed=changed_after_signing(flow.request, meta.get("target_url")),
    )
    kind = None
    if found is None and (found := _authorization(error, _route_signer(route, meta, source))) is not None:
        kind = "authorization"
    if found is None:
        return
    _mark(flow, meta, found, kind)
    response.headers[DIAGNOSIS_HEADER] = found.summary.encode("ascii", "replace").decode()
    log.warning(
        "proxysigv4: %s %s -> %s: %s", flow.request.method, meta.get("client_path"), found.code, found.summary
    )


def changed_after_signing(request: http.Request, signed_url: str | None) -> str | None:
    """How the request sent differs from the one signed (an addon after this one, such as
    map_remote, rewrote its URL), or None."""
    if not signed_url:
        return None
    signed = urlsplit(signed_url)
    default = 443 if signed.scheme == "https" else 80
    was = (
        signed.scheme,
        signed.hostname,
        signed.port or default,
        signed.path + (f"?{signed.query}" if signed.query else ""),
    )
    now = (request.scheme, request.host.lower(), request.port, request.path)
    if was == now:
        return None
    return f"signed for {signed_url}, sent to {request.url}"


def _authorization(error: AwsError, signed: SignedAs) -> Diagnosis | None:
    """An authorization denial explained with what the proxy knows of the signer's identity."""
    denial = parse_denial(error)
    return explain_denial(denial, signed) if denial is not None else None


def _route_signer(route: Route, meta: FlowRecord, source: str) -> SignedAs:
    return SignedAs(
        route.prefix,
        source,
        route.credential_source,
        meta.get("credential_method"),
        meta.get("access_key_id"),
        route.region,
        meta.get("intended", {}),
    )


def _app_signer(meta: FlowRecord, source: str) -> SignedAs:
    """An app-signed request's signer: the app's own credentials, whose identity the proxy does not know."""
    app = "the app's own credentials"
    return SignedAs(
        "(signed by the app)", source, app, None, meta.get("access_key_id"), meta.get("region", ""), {}
    )


def _mark(flow: http.HTTPFlow, meta: FlowRecord, found: Diagnosis, kind: str | None = None) -> None:
    """The diagnosis on record (the SigV4 view), as the flow's comment and its ⚠ marker."""
    meta["diagnosis"] = {"code": found.code, "summary": found.summary, "detail": found.detail}
    if kind:
        meta["diagnosis"]["kind"] = kind
    flow.comment = f"proxysigv4 diagnosis ({found.code}): {found.summary}"
    flow.marked = ":warning:"


def explain_app_refusal(flow: http.HTTPFlow, response: http.Response, source: str) -> None:
    """An app-signed request AWS refused: the diagnosis, with whether botocore's own signature over
    what was sent matches the app's (the answer itself is not changed)."""
    meta = record_of(flow)
    error = parse_aws_error(response.content or b"", {k.lower(): v for k, v in response.headers.items()})
    found = (
        diagnose(
            error,
            route="(signed by the app)",
            source=source,
            service=meta.get("service", ""),
            region=meta.get("region", ""),
            canonical_request=meta.get("canonical_request"),
            string_to_sign=meta.get("string_to_sign"),
            access_key=meta.get("access_key_id"),
            now=datetime.datetime.now(datetime.UTC),
        )
        if error is not None
        else None
    )
    if found is None and error is not None and (denied := _authorization(error, _app_signer(meta, source))):
        # AWS accepted the signature: whether botocore's recomputation matches says nothing here
        _mark(flow, meta, denied, "authorization")
        return
    recomputed = meta.get("recomputed")
    if found is None and recomputed is None:
        return
    summary = found.summary if found else f"AWS answered {response.status_code}"
    if recomputed == MATCHES:
        summary = f"{MATCHES}; AWS disagrees: {summary}"
    elif recomputed is not None:
        summary = recomputed
    code = found.code if found else str(response.status_code)
    _mark(flow, meta, Diagnosis(code, summary, found.detail if found else ""))
