"""The proxy's own answers, never signed or forwarded: refusals as JSON (marked in mitmweb, so they
are not mistaken for AWS's) and CORS preflights."""

import logging

from mitmproxy import http
from mitmproxy.net.http import url

from . import browser, errors
from .credentials import CredentialError
from .flowrecord import FlowRecord, set_record
from .intake import Preflight, Received
from .rejection import RequestRejected
from .requestlog import RequestHead, log_request

log = logging.getLogger("proxysigv4")
# Refusals of what a web page tried (browser.py): logged as warnings, they may be an attack.
BROWSER_REFUSALS = frozenset({"host_not_allowed", "cross_origin_refused"})


def answer_error(flow: http.HTTPFlow, stage: Received, error: Exception, verbose: bool) -> None:
    """Turn every failure into the proxy's own JSON answer; nothing is forwarded unsigned. `stage`:
    as far as the request got (its route, once routed, is named)."""
    if isinstance(error, RequestRejected):
        refuse(flow, stage, error.status, error.error, error.message, error.headers)
    elif isinstance(error, CredentialError):
        message = f"credentials for route {stage.route_prefix}: {error}"
        refuse(flow, stage, 503, "credentials_unavailable", message)
    else:
        log.error(
            "proxysigv4: internal error for %s %s", flow.request.method, stage.client_target, exc_info=error
        )
        refuse(flow, stage, 500, "internal_error", "proxysigv4 failed to sign this request (see proxy log)")
    log_request(
        flow, RequestHead(flow.request.method, stage.client_target, "-"), stage.route, stage.started, verbose
    )


def refuse(
    flow: http.HTTPFlow,
    stage: Received,
    status: int,
    error: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    flow.response = errors.error_response(status, error, message, stage.route_prefix)
    flow.response.headers.update(headers or {})
    if stage.cors_origin is not None:  # the allowed page may read why
        for name, value in browser.response_cors_headers(stage.cors_origin, ()):
            flow.response.headers[name] = value
    if error in BROWSER_REFUSALS:
        log.warning("proxysigv4: refused %s %s: %s", flow.request.method, stage.client_target, message)
    record: FlowRecord = {
        "rejected": error,
        "status": status,
        "message": message,
        "client_path": stage.client_target,
    }
    if stage.route_prefix is not None:
        record["route"] = stage.route_prefix
    set_record(flow, record)
    flow.comment = f"proxysigv4 refused ({status} {error}): {message}"
    flow.marked = ":no_entry:"
    if stage.host_route is None:
        show_as_received(flow)


def answer_preflight(flow: http.HTTPFlow, preflight: Preflight, verbose: bool) -> None:
    """The proxy's own answer to a CORS preflight from an allowed origin."""
    flow.response = http.Response.make(204, b"", dict(preflight.headers))
    set_record(flow, {"preflight": preflight.cors_origin, "client_path": preflight.client_target})
    if preflight.host_route is None:
        show_as_received(flow)
    head = RequestHead("OPTIONS", preflight.client_target, "(CORS preflight)")
    log_request(flow, head, preflight.route, preflight.started, verbose)


def show_as_received(flow: http.HTTPFlow) -> None:
    """A reverse listener's request carries the --mode target in its URL (a placeholder when every
    path has a route): a flow the proxy answered itself shows what the client asked for instead,
    its scheme, Host and path, in mitmweb and mitmdump's flow list. Nothing is sent there."""
    request = flow.request
    scheme = "https" if flow.client_conn.tls_established else "http"
    host_header = request.host_header or ""
    host, port = url.parse_authority(host_header, check=False)
    if not host or (":" in host and not host_header.startswith("[")):  # none, or unparsable: the listener's
        sockname = flow.client_conn.sockname
        host, port = str(sockname[0]), int(sockname[1])
    data = request.data  # not the setters: they would rewrite the Host header the client sent
    data.scheme = scheme.encode()
    data.host = host
    data.port = port or url.default_port(scheme) or 80
