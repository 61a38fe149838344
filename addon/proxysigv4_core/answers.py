"""The proxy's own answers, never signed or forwarded: refusals as JSON (marked in mitmweb, so they
are not mistaken for AWS's) and CORS preflights."""

import logging

from mitmproxy import http
from mitmproxy.net.http import url

from . import browser, errors
from .credentials import CredentialError
from .flowrecord import FlowRecord, set_record
from .intake import Pending
from .rejection import RequestRejected
from .requestlog import RequestHead, log_request

log = logging.getLogger("proxysigv4")
# Refusals of what a web page tried (browser.py): logged as warnings, they may be an attack.
BROWSER_REFUSALS = frozenset({"host_not_allowed", "cross_origin_refused"})


def answer_error(flow: http.HTTPFlow, pending: Pending, error: Exception, verbose: bool) -> None:
    """Turn every failure into the proxy's own JSON answer; nothing is forwarded unsigned."""
    if isinstance(error, RequestRejected):
        refuse(flow, pending, error.status, error.error, error.message, error.headers)
    elif isinstance(error, CredentialError):
        message = f"credentials for route {pending.route_prefix}: {error}"
        refuse(flow, pending, 503, "credentials_unavailable", message)
    else:
        log.error(
            "proxysigv4: internal error for %s %s", flow.request.method, pending.client_target, exc_info=error
        )
        refuse(flow, pending, 500, "internal_error", "proxysigv4 failed to sign this request (see proxy log)")
    route = pending.upstream.route if pending.upstream else None
    log_request(
        flow, RequestHead(flow.request.method, pending.client_target, "-"), route, pending.started, verbose
    )


def refuse(
    flow: http.HTTPFlow, pending: Pending, status: int, error: str, message: str, headers=None
) -> None:
    flow.response = errors.error_response(status, error, message, pending.route_prefix)
    flow.response.headers.update(headers or {})
    if pending.cors_origin is not None:  # the allowed page may read why
        for name, value in browser.response_cors_headers(pending.cors_origin, ()):
            flow.response.headers[name] = value
    if error in BROWSER_REFUSALS:
        log.warning("proxysigv4: refused %s %s: %s", flow.request.method, pending.client_target, message)
    record: FlowRecord = {
        "rejected": error,
        "status": status,
        "message": message,
        "client_path": pending.client_target,
    }
    if pending.route_prefix is not None:
        record["route"] = pending.route_prefix
    set_record(flow, record)
    flow.comment = f"proxysigv4 refused ({status} {error}): {message}"
    flow.marked = ":no_entry:"
    if pending.host_route is None:
        show_as_received(flow)


def answer_preflight(flow: http.HTTPFlow, pending: Pending, verbose: bool) -> None:
    """The proxy's own answer to a CORS preflight from an allowed origin."""
    flow.response = http.Response.make(204, b"", dict(pending.preflight or ()))
    set_record(flow, {"preflight": pending.cors_origin, "client_path": pending.client_target})
    if pending.host_route is None:
        show_as_received(flow)
    route = pending.upstream.route if pending.upstream else None
    log_request(
        flow,
        RequestHead("OPTIONS", pending.client_target, "(CORS preflight)"),
        route,
        pending.started,
        verbose,
    )


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
