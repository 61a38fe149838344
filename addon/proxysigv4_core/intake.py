"""A request from its headers to a plan, or a refusal: header checks, the browser rules, inbound
authentication, routing and the body plan. Nothing here signs or forwards; every refusal is a
RequestRejected the hooks turn into the proxy's own answer."""

import time
from dataclasses import dataclass

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from . import browser
from .config import Route
from .flowrecord import record_of
from .headers import check_request_headers
from .rejection import RequestRejected
from .routing import Upstream, resolve, resolve_host, resolve_replay
from .state import State
from .streaming import RequestPlan, plan_request


@dataclass(slots=True)
class Pending:
    """A request between its headers and its body: routed and planned, not yet signed."""

    client_target: str
    started: float
    upstream: Upstream | None = None
    plan: RequestPlan | None = None
    cors_origin: str | None = None  # the request's allowed web origin (browser.check_origin)
    preflight: list[tuple[str, str]] | None = None  # a CORS preflight's answer, given by the proxy
    host_route: Route | None = None  # the host route of a request through a non-reverse listener

    @property
    def route_prefix(self) -> str | None:
        return self.upstream.route.prefix if self.upstream else None


def pending_for(state: State | None, flow: http.HTTPFlow) -> Pending | None:
    """A flow this addon handles, or None. Path routes are a reverse listener's; a flow from another
    kind of listener (regular, upstream, transparent, socks5, ...) names its own host, and only a
    host route for that host makes it ours: else it passes through as bare mitmproxy passes it,
    never rerouted, signed or refused."""
    host_route = None
    if not isinstance(flow.client_conn.proxy_mode, ReverseMode):
        r = flow.request
        host_route = state.hosts.match(r.scheme, r.host, r.port, r.path) if state and state.hosts else None
        if host_route is None:
            return None
    # A replayed flow keeps the client path it was first received with.
    target = record_of(flow).get("client_path", flow.request.path) if flow.is_replay else flow.request.path
    return Pending(target, time.monotonic(), host_route=host_route)


def header_fields(headers: http.Headers) -> list[tuple[str, str]]:
    """Header fields decoded as mitmproxy decodes them (names latin-1, values utf-8)."""
    return [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in headers.fields]


def prepare(state: State | None, flow: http.HTTPFlow, pending: Pending) -> None:
    """Check, authenticate, route and plan a request from its headers (raises to refuse it).
    A CORS preflight from an allowed origin only gets `pending.preflight`, its answer."""
    fields = header_fields(flow.request.headers)
    first = check_request_headers(fields)
    if pending.host_route is not None:
        _prepare_host_routed(state, flow, pending, fields, first)
        return
    # Browser rules (browser.py): not for replays, the operator's own from mitmweb or the console.
    rules = state is not None and flow.is_replay != "request"
    host = _check_browser(state, flow, pending, first) if rules else None
    if rules and flow.request.method == "OPTIONS" and "access-control-request-method" in first:
        if _plan_preflight(state, flow, pending, first, host):
            return
    authenticate(state, flow)
    pending.upstream = upstream_for(state, flow)
    route = pending.upstream.route
    if rules:
        site = first.get("sec-fetch-site")
        pending.cors_origin = browser.check_origin(first.get("origin"), site, host, route.cors_origins)
    pending.plan = plan_request(route, fields, first)


def _prepare_host_routed(state, flow: http.HTTPFlow, pending: Pending, fields, first: dict[str, str]) -> None:
    """A request through a forward listener to a host route's host: signed for that same host.
    A browser page may trigger one only from an origin in corsOrigins (no own-origin exception:
    the page is on the site the proxy signs for)."""
    route = pending.host_route
    if flow.is_replay != "request":
        site = first.get("sec-fetch-site")
        pending.cors_origin = browser.check_origin(first.get("origin"), site, None, route.cors_origins)
    r = flow.request
    pending.upstream = resolve_host(route, r.scheme, r.host, r.port, r.path)
    if pending.cors_origin and r.method == "OPTIONS" and "access-control-request-method" in first:
        pending.preflight = browser.preflight_headers(
            pending.cors_origin,
            first.get("access-control-request-headers", ""),
            route.request_headers.allows,
            False,
            first.get("access-control-request-private-network", "").lower() == "true",
        )
        return
    pending.plan = plan_request(route, fields, first)


def _check_browser(state, flow: http.HTTPFlow, pending: Pending, first: dict[str, str]) -> str | None:
    """The Host check, and the Origin check against every origin some route allows (the route's
    own list is checked once routed). Returns the request's Host for the own-origin check."""
    policy = state.browsers
    host = check_host(flow, policy)
    origin = browser.check_origin(
        first.get("origin"), first.get("sec-fetch-site"), host, policy.known_origins
    )
    if browser.origin_allowed(origin, host, policy.origins):
        pending.cors_origin = origin  # allowed everywhere: a refusal below is readable too
    return host


def check_host(flow: http.HTTPFlow, policy: browser.BrowserPolicy) -> str | None:
    """A reverse listener's request names the proxy itself in its Host: refuse names it is not
    known by (DNS rebinding). Returns the Host (or :authority) for the own-origin check."""
    request = flow.request
    hosts = request.headers.get_all("host")
    if request.data.authority:  # absolute-form on HTTP/1, :authority on HTTP/2; as sent, not IDNA-decoded
        hosts.append(request.data.authority.decode("utf-8", "surrogateescape"))
    policy.check_host(hosts)
    return hosts[0] if hosts else None


def _plan_preflight(state, flow: http.HTTPFlow, pending: Pending, first: dict[str, str], host) -> bool:
    """A CORS preflight from an origin the route allows gets the proxy's own answer
    (`pending.preflight`); one from another origin is refused. False: not a browser's preflight."""
    pending.upstream = upstream_for(state, flow)
    route = pending.upstream.route
    origin = browser.check_origin(first.get("origin"), None, host, route.cors_origins)
    if origin is None:
        return False
    pending.cors_origin = origin
    pending.preflight = browser.preflight_headers(
        origin,
        first.get("access-control-request-headers", ""),
        route.request_headers.allows,
        state.bearer is not None,
        first.get("access-control-request-private-network", "").lower() == "true",
    )
    return True


def authenticate(state: State | None, flow: http.HTTPFlow) -> None:
    if state is None or state.bearer is None or flow.is_replay == "request":
        return  # replays come from the operator's own mitmweb/console session
    if not state.bearer.accepts(flow.request.headers.get("authorization")):
        raise RequestRejected(
            401,
            "unauthorized",
            "this proxy requires Authorization: Bearer <token> (one of proxysigv4.bearerTokens)",
            {"www-authenticate": 'Bearer realm="proxysigv4"'},
        )


def upstream_for(state: State | None, flow: http.HTTPFlow) -> Upstream:
    """The route and upstream URL: by the path, or a replayed flow's own route and target."""
    if state is None:
        raise RequestRejected(503, "not_configured", "proxysigv4 has no route table loaded")
    previous = record_of(flow)
    if flow.is_replay == "request" and "route" in previous:
        route = state.table.route(previous["route"])
        if route is None:
            raise RequestRejected(
                409, "route_gone", f"route {previous['route']} of this replayed flow is no longer configured"
            )
        r = flow.request
        return resolve_replay(route, r.scheme, r.host, r.port, r.path)
    return resolve(state.table, flow.request.path)
