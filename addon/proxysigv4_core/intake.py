"""A request from its headers to a plan, or a refusal: header checks, the browser rules, inbound
authentication, routing and the body plan. Nothing here signs or forwards.

A request's stages are types of their own: Received -> Checked -> Routed -> Planned (or Preflight,
answered by the proxy); a Refusal holds the stage reached, whose answer names what was known (the
route once routed, the web origin allowed to read it)."""

import time
from dataclasses import dataclass
from typing import Final

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


# Immutable as mypy checks it (Final fields); not frozen=True, whose per-field object.__setattr__
# costs about 4 µs a request in-process (bench/hotpath.py: 133.4 -> 129.2 µs, best of 6).
@dataclass(slots=True)
class Received:
    """A request this addon handles, from its headers on: what any answer to it needs."""

    client_target: Final[str]
    started: Final[float]
    host_route: Final[Route | None]  # the host route of a request through a non-reverse listener
    cors_origin: Final[str | None]  # once the browser rules allow it: a web origin that may read the answer

    @property
    def route(self) -> Route | None:
        return None

    @property
    def route_prefix(self) -> str | None:
        route = self.route
        return route.prefix if route is not None else None


@dataclass(slots=True)
class Checked(Received):
    """Past the header checks and the browser rules that hold for every route."""

    host: Final[str | None]  # the request's Host, for the own-origin check once routed


@dataclass(slots=True)
class Routed(Received):
    """A request with its route and upstream URL."""

    upstream: Final[Upstream]

    @property
    def route(self) -> Route:
        return self.upstream.route


@dataclass(slots=True)
class Planned(Routed):
    """A routed request with its body plan: ready to sign."""

    plan: Final[RequestPlan]


@dataclass(slots=True)
class Preflight(Routed):
    """A CORS preflight from an allowed origin: the proxy answers it with `headers`."""

    headers: Final[list[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused (or failed) at `stage`, the furthest it got: its answer names what is known."""

    stage: Received
    error: Exception


Outcome = Planned | Preflight | Refusal


def received_for(state: State | None, flow: http.HTTPFlow) -> Received | None:
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
    return Received(target, time.monotonic(), host_route, None)


def header_fields(headers: http.Headers) -> list[tuple[str, str]]:
    """Header fields decoded as mitmproxy decodes them (names latin-1, values utf-8)."""
    return [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in headers.fields]


def prepare(state: State | None, flow: http.HTTPFlow, received: Received) -> Outcome:
    """Check, authenticate, route and plan a request from its headers; a CORS preflight from an
    allowed origin gets its answer. Any failure is a Refusal at the stage the request reached."""
    try:
        fields = header_fields(flow.request.headers)
        first = check_request_headers(fields)
    except Exception as e:
        return Refusal(received, e)
    if received.host_route is not None:
        return _prepare_host_routed(flow, received, received.host_route, fields, first)
    return _prepare_reverse(state, flow, received, fields, first)


def _prepare_reverse(
    state: State | None,
    flow: http.HTTPFlow,
    received: Received,
    fields: list[tuple[str, str]],
    first: dict[str, str],
) -> Outcome:
    """A reverse listener's request, routed by its path."""
    stage = received
    try:
        # Browser rules (browser.py): not for replays, the operator's own from mitmweb or the console.
        rules = state if state is not None and flow.is_replay != "request" else None
        stage = checked = (
            _checked(received) if rules is None else _check_browser(rules, flow, received, first)
        )
        routed: Routed | None = None
        if rules is not None and _is_preflight(flow, first):
            stage = routed = _routed(checked, upstream_for(rules, flow), checked.cors_origin)
            origin = browser.check_origin(first.get("origin"), None, checked.host, routed.route.cors_origins)
            if origin is not None:
                return _preflight(routed, origin, first, bearer=rules.bearer is not None)
        authenticate(state, flow)
        if routed is None:  # else routed above: not a preflight its route answers, a request like any other
            stage = routed = _routed(checked, upstream_for(state, flow), checked.cors_origin)
        upstream = routed.upstream
        if rules is not None:
            site = first.get("sec-fetch-site")
            origin = browser.check_origin(
                first.get("origin"), site, checked.host, upstream.route.cors_origins
            )
            if origin != routed.cors_origin:  # the route's own origins decide
                stage = routed = _routed(checked, upstream, origin)
        return _planned(routed, plan_request(upstream.route, fields, first))
    except Exception as e:
        return Refusal(stage, e)


def _prepare_host_routed(
    flow: http.HTTPFlow,
    received: Received,
    route: Route,
    fields: list[tuple[str, str]],
    first: dict[str, str],
) -> Outcome:
    """A request through a forward listener to a host route's host: signed for that same host.
    A browser page may trigger one only from an origin in corsOrigins (no own-origin exception:
    the page is on the site the proxy signs for)."""
    stage = received
    try:
        origin = None
        if flow.is_replay != "request":
            site = first.get("sec-fetch-site")
            origin = browser.check_origin(first.get("origin"), site, None, route.cors_origins)
        stage = checked = _checked(received, origin)
        r = flow.request
        stage = routed = _routed(checked, resolve_host(route, r.scheme, r.host, r.port, r.path), origin)
        if origin and _is_preflight(flow, first):
            return _preflight(routed, origin, first, bearer=False)
        return _planned(routed, plan_request(route, fields, first))
    except Exception as e:
        return Refusal(stage, e)


def _is_preflight(flow: http.HTTPFlow, first: dict[str, str]) -> bool:
    return flow.request.method == "OPTIONS" and "access-control-request-method" in first


def _checked(received: Received, cors_origin: str | None = None, host: str | None = None) -> Checked:
    return Checked(received.client_target, received.started, received.host_route, cors_origin, host)


def _routed(received: Received, upstream: Upstream, cors_origin: str | None) -> Routed:
    return Routed(received.client_target, received.started, received.host_route, cors_origin, upstream)


def _planned(routed: Routed, plan: RequestPlan) -> Planned:
    r = routed
    return Planned(r.client_target, r.started, r.host_route, r.cors_origin, r.upstream, plan)


def _preflight(routed: Routed, origin: str, first: dict[str, str], bearer: bool) -> Preflight:
    """The proxy's answer to a preflight from `origin`, which the route allows."""
    headers = browser.preflight_headers(
        origin,
        first.get("access-control-request-headers", ""),
        routed.route.request_headers.allows,
        bearer,
        first.get("access-control-request-private-network", "").lower() == "true",
    )
    r = routed
    return Preflight(r.client_target, r.started, r.host_route, origin, r.upstream, headers)


def _check_browser(state: State, flow: http.HTTPFlow, received: Received, first: dict[str, str]) -> Checked:
    """The Host check, and the Origin check against every origin some route allows (the route's
    own list is checked once routed). The Host is kept for the own-origin check."""
    policy = state.browsers
    host = check_host(flow, policy)
    origin = browser.check_origin(
        first.get("origin"), first.get("sec-fetch-site"), host, policy.known_origins
    )
    # allowed everywhere: a refusal below is readable too
    return _checked(received, origin if browser.origin_allowed(origin, host, policy.origins) else None, host)


def check_host(flow: http.HTTPFlow, policy: browser.BrowserPolicy) -> str | None:
    """A reverse listener's request names the proxy itself in its Host: refuse names it is not
    known by (DNS rebinding). Returns the Host (or :authority) for the own-origin check."""
    request = flow.request
    hosts = request.headers.get_all("host")
    if request.data.authority:  # absolute-form on HTTP/1, :authority on HTTP/2; as sent, not IDNA-decoded
        hosts.append(request.data.authority.decode("utf-8", "surrogateescape"))
    policy.check_host(hosts)
    return hosts[0] if hosts else None


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
