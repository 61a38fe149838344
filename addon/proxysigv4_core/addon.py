"""The mitmproxy addon: translates flows to and from the pure core, and fails closed.

Per request: resolve route (routing) -> credentials -> filter headers (headers) -> sign
(signing) -> forward; responses: filter headers; every failure becomes a JSON answer.
"""

import asyncio
import datetime
import gc
import logging
import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from mitmproxy import command, contentviews, ctx, exceptions, http
from mitmproxy import log as mitmproxy_log
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from . import browser, errors
from .config import Config, ConfigError, Route, load_config
from .contentview import SigV4
from .credentials import CredentialError, CredentialStore
from .diagnosis import DIAGNOSIS_HEADER, diagnose, parse_aws_error
from .headers import (
    check_request_headers,
    connection_management,
    connection_tokens,
    filter_response_fields,
    first_values,
    websocket_accept_fields,
    websocket_handshake,
)
from .inbound import BearerTokens, InboundError, require_auth
from .presign import DEFAULT_EXPIRES, PresignError, presign
from .routing import RequestRejected, RouteTable, Upstream, resolve, resolve_replay
from .signing import (
    REDACTED,
    SignedRequest,
    body_sha256,
    mask_key_id,
    presign_url,
    redact_canonical,
    redact_query,
    sign_upstream,
)
from .streaming import RequestPlan, body_too_large, content_length, plan_request, streams_response

log = logging.getLogger("proxysigv4")
# The one line per request, on its own logger: see skip_legacy_log_events.
request_log = logging.getLogger("proxysigv4.request")
OPTION = "proxysigv4_config"
VERBOSE_OPTION = "proxysigv4_verbose"
# Built-in addons that run after scripts and would change a request after it was signed.
_POST_SIGNING_MODIFIERS = frozenset({"map_remote", "modify_headers", "modify_body"})
# Options that decide whether inbound authentication is required.
_AUTH_OPTIONS = frozenset({"proxyauth", "listen_host", "mode"})
RELOAD_INTERVAL = 1.0
# A WebSocket upgrade signed in its URL must be used at once: a minute is plenty.
WEBSOCKET_PRESIGN_EXPIRES = 60
_SECRET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "awscrt")
# Refusals of what a web page tried (browser.py): logged as warnings, they may be an attack.
BROWSER_REFUSALS = frozenset({"host_not_allowed", "cross_origin_refused"})
# Bodies at least this large are hashed in a thread: on the event loop, SHA-256 of 2 MiB takes
# about 2 ms here (6 ms when the machine is slow), of the 32 MiB default bufferLimit 30-100 ms, in
# which no other request would be served. Below it, the thread hop is not worth it.
HASH_IN_THREAD_MIN = 2 * 1024 * 1024


@dataclass(slots=True)
class _InFlight:
    """A request this addon signed and forwarded, until its response or error."""

    route: Route
    started: float
    # The request line's first part, known once signed: "METHOD client-path -> target-url "
    log_head: str
    timer: asyncio.TimerHandle | None = None
    # What AWS may echo back in an error body (S3 does): scrubbed before the client sees it.
    secrets: tuple[bytes, ...] = ()
    # The signed headers with their secrets hidden, put back into the flow once it has left.
    redacted: tuple[tuple[str, str], ...] = ()
    # The header fields as sent and the same with `redacted` applied: swapped in one go if no
    # one changed the headers since.
    sent_fields: tuple | None = None
    redacted_fields: tuple | None = None
    # A presigned path with its signature hidden, likewise.
    flow_path: str | None = None
    cors_origin: str | None = None  # an allowed web origin: the answer carries its CORS headers


@dataclass(slots=True)
class _Pending:
    """A request between its headers and its body: routed and planned, not yet signed."""

    client_target: str
    started: float
    upstream: Upstream | None = None
    plan: RequestPlan | None = None
    # The request headers as read in requestheaders: reused if no addon replaced them since.
    raw_fields: tuple | None = None
    fields: list[tuple[str, str]] | None = None
    first: dict[str, str] | None = None  # the fields' first_values
    cors_origin: str | None = None  # the request's allowed web origin (browser.check_origin)
    preflight: list[tuple[str, str]] | None = None  # a CORS preflight's answer, given by the proxy

    @property
    def route_prefix(self) -> str | None:
        return self.upstream.route.prefix if self.upstream else None


@dataclass(frozen=True)
class _State:
    """Everything derived from one config file; replaced whole on reload."""

    config: Config
    table: RouteTable
    bearer: BearerTokens | None  # tokens every request must present, or None
    # (host, port) of https targets whose routes ask for HTTP/2 upstream
    h2_targets: frozenset[tuple[str, int]] = frozenset()
    # Host names and web origins browsers may use (browser.py)
    browsers: browser.BrowserPolicy = browser.BrowserPolicy(frozenset(browser.LOCAL_NAMES))
    # (host, port) of https targets: their TLS names the target, never the client's SNI
    tls_targets: frozenset[tuple[str, int]] = frozenset()


class ProxySigV4:
    def __init__(self, config_path: str = "proxysigv4.yaml") -> None:
        self._default_config = config_path  # the option's default (embedders can pass their own)
        self.state: _State | None = None
        self.credentials = CredentialStore()
        self._in_flight: dict[str, _InFlight] = {}
        self._pending: dict[str, _Pending] = {}
        self._watcher: asyncio.Task | None = None
        self._config_mark: tuple[int, int] | None = None  # (mtime, size) of the file last read
        self._verbose = False
        # credential providers whose first load was followed by a gc.freeze()
        self._frozen_after: weakref.WeakSet = weakref.WeakSet()

    def load(self, loader) -> None:
        loader.add_option(
            OPTION,
            str,
            self._default_config,
            """
            YAML file with a `proxysigv4:` section: routes ('/prefix': target or
            {target, roleArn, service, region, ...}) whose requests are signed with AWS SigV4.
            """,
        )
        loader.add_option(
            VERBOSE_OPTION, bool, False, "Log the signed header names with each request (never secrets)."
        )
        errors.install_json_error_pages()
        contentviews.add(SigV4())
        # botocore logs canonical requests, signatures, credentials headers and STS response bodies
        # (secret keys) at DEBUG: keep those loggers at INFO whatever mitmproxy's verbosity.
        for name in _SECRET_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)

    # ---- configuration -------------------------------------------------------------------
    def configure(self, updated: set[str]) -> None:
        if VERBOSE_OPTION in updated:
            self._verbose = ctx.options.proxysigv4_verbose
        if OPTION in updated:
            try:
                self._config_mark = _file_mark(ctx.options.proxysigv4_config)
                config = load_config(ctx.options.proxysigv4_config)
                self._apply(config)
            except (ConfigError, InboundError) as e:
                raise exceptions.OptionsError(f"proxysigv4: {e}") from e
        elif _AUTH_OPTIONS & updated and self.state is not None:
            try:
                self._apply(self.state.config)
            except InboundError as e:
                raise exceptions.OptionsError(f"proxysigv4: {e}") from e
        if "connection_strategy" in updated and ctx.options.connection_strategy == "eager":
            # Eager mode connects to the --mode target before we reroute; each route has its own.
            ctx.options.connection_strategy = "lazy"
        if "keep_host_header" in updated and not ctx.options.keep_host_header:
            # The Host a client sent is checked against allowedHosts (browser.py); mitmproxy would
            # overwrite it with the --mode target first. Signed requests get the route's own Host.
            ctx.options.keep_host_header = True
        for name in _POST_SIGNING_MODIFIERS & updated:
            if getattr(ctx.options, name):
                log.warning(
                    "proxysigv4: option %s can change requests after they are signed (map_remote and "
                    "modify_body always run after signing, modify_headers for streamed uploads), which "
                    "invalidates the signature of the requests it changes",
                    name,
                )

    def _apply(self, config: Config) -> None:
        """Check the inbound-auth rule against the listen addresses, then swap in the new table."""
        options = ctx.options
        has_proxyauth = "proxyauth" in options and bool(options.proxyauth)
        # Without mitmproxy's proxyserver (embedded use) nothing listens.
        modes = options.mode if "mode" in options else []
        hosts = [ProxyMode.parse(m).listen_host(options.listen_host) for m in modes]
        required = require_auth(
            config.allow_unauthenticated_requests,
            hosts,
            has_proxyauth,
            bool(config.bearer_tokens.digests),
            config.source,
        )
        # With proxyauth set, mitmproxy itself demands it (Basic) before this addon runs.
        bearer = config.bearer_tokens if required and not has_proxyauth else None
        route_origins = [r.cors_origins for r in config.routes]
        browser.check_wildcards(
            config.cors_origins.union(*route_origins), config.allowed_hosts, required, config.source
        )
        policy = browser.BrowserPolicy.build(
            config.allowed_hosts, hosts + [options.listen_host], config.cors_origins, route_origins
        )
        h2 = frozenset((r.target.host, r.target.port) for r in config.routes if r.http2)
        tls = frozenset((r.target.host, r.target.port) for r in config.routes if r.target.scheme == "https")
        self.state = _State(config, RouteTable(config.routes), bearer, h2, policy, tls)
        self.credentials.retain(config.routes)
        log.info(
            "proxysigv4: %d routes from %s%s: %s",
            len(config.routes),
            config.source,
            "" if required else " (no inbound authentication)",
            ", ".join(f"{r.prefix} -> {r.target.url} ({r.service}/{r.region})" for r in config.routes),
        )
        self._prefetch_credentials()

    def running(self) -> None:
        skip_legacy_log_events()
        self._prefetch_credentials()
        if self._watcher is None:
            # Everything loaded so far (mitmproxy, botocore's modules and data) lives as long as the
            # process: take it out of the collector's view, so that a full collection no longer
            # walks it and stalls the event loop for tens of milliseconds.
            gc.freeze()
            loop = asyncio.get_running_loop()
            self._watcher = loop.create_task(self._watch_config())
            self._greeting = loop.create_task(self._announce())

    async def _announce(self) -> None:
        """Once mitmproxy listens: where, and a curl line to paste for the first route."""
        proxyserver = ctx.master.addons.get("proxyserver")
        for _ in range(100):
            addrs = proxyserver.listen_addrs() if proxyserver else []
            if addrs or proxyserver is None:
                break
            await asyncio.sleep(0.05)
        if not addrs or self.state is None:
            return
        host, port = addrs[0][0], addrs[0][1]
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        host = f"[{host}]" if ":" in host else host
        first = sorted(self.state.table.routes, key=lambda r: r.prefix)[0]
        auth = ' -H "Authorization: Bearer $PROXY_TOKEN"' if self.state.bearer else ""
        log.info(
            "proxysigv4 ready on http://%s:%s - try: curl -s%s http://%s:%s%s/",
            host,
            port,
            auth,
            host,
            port,
            first.prefix.rstrip("/"),
        )

    async def _watch_config(self) -> None:
        """Reload the route table when the file changes; a broken edit keeps the last good table."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            state = self.state
            if state is None:
                continue
            mark = _file_mark(state.config.source)
            if mark == self._config_mark:
                continue
            self._config_mark = mark
            try:
                config = await asyncio.to_thread(load_config, state.config.source)
                if self.state is state:  # not replaced meanwhile by a `configure`
                    self._apply(config)
                    log.info("proxysigv4: reloaded %s", state.config.source)
            except (ConfigError, InboundError) as e:
                log.error(
                    "proxysigv4: %s changed but cannot be used, keeping the previous routes: %s",
                    state.config.source,
                    e,
                )
            except Exception:
                log.exception(
                    "proxysigv4: reloading %s failed, keeping the previous routes", state.config.source
                )

    def _prefetch_credentials(self) -> None:
        if self.state is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not running yet; `running` will do it
        for route in self.state.config.routes:
            self.credentials.provider(route).start_background_refresh()

    # ---- commands (mitmweb's command bar, the console, POST /commands/<name>) -------------
    # mitmweb accepts only letters and dots in command names, hence "sigv." rather than "proxysigv4.".
    @command.command("sigv.routes")
    def routes(self) -> Sequence[str]:
        """The loaded routes: prefix -> target, service/region, credentials and their state."""
        if self.state is None:
            return ["proxysigv4: no route table loaded"]
        lines = []
        for route in sorted(self.state.table.routes, key=lambda r: r.prefix):
            provider = self.credentials.provider(route)
            if provider.last_error:
                status = f"error: {provider.last_error}"
            elif provider.access_key_id:
                status = f"ok: {mask_key_id(provider.access_key_id)} via {provider.method}"
            else:
                status = "not resolved yet"
            lines.append(
                f"{route.prefix} -> {route.target.url} ({route.service}/{route.region}); "
                f"{route.credential_source}; {status}"
            )
        return lines

    @command.command("sigv.refresh")
    def refresh(self, *prefixes: str) -> str:
        """Forget and re-resolve the credentials of the given routes (all routes when none is given),
        e.g. after `aws sso login`."""
        if self.state is None:
            return "proxysigv4: no route table loaded"
        routes = [r for r in self.state.table.routes if not prefixes or r.prefix in prefixes]
        unknown = sorted(set(prefixes) - {r.prefix for r in routes})
        if unknown:
            raise exceptions.CommandError(f"proxysigv4: no such route: {', '.join(unknown)}")
        for route in routes:
            provider = self.credentials.provider(route)
            provider.reset()
            provider.start_background_refresh()
        return f"proxysigv4: re-resolving credentials for {', '.join(r.prefix for r in routes)}"

    @command.command("sigv.presign")
    def presign(self, method: str, path: str, expires: int = DEFAULT_EXPIRES) -> str:
        """A presigned URL for the route that `path` (a client path, e.g. /s3/bucket/key) matches:
        valid `expires` seconds (default 3600), for `method` without a body."""
        if self.state is None:
            raise exceptions.CommandError("proxysigv4: no route table loaded")

        def credentials_for(route: Route):
            provider = self.credentials.provider(route)
            frozen = provider.cached()
            if frozen is None:
                provider.start_background_refresh()
                raise exceptions.CommandError(
                    f"proxysigv4: credentials for route {route.prefix} are not loaded yet"
                    + (f" ({provider.last_error})" if provider.last_error else "")
                    + "; try again in a moment"
                )
            return frozen

        try:
            _, url = presign(self.state.table, method, path, credentials_for, expires)
        except (RequestRejected, PresignError) as e:
            raise exceptions.CommandError(f"proxysigv4: {e}") from e
        return url

    # ---- requests --------------------------------------------------------------------------
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Route and plan before the body is read: reject early, or sign now and stream the body."""
        if flow.response or flow.error or not flow.live:
            return
        pending = _Pending(self._client_target(flow), time.monotonic())
        try:
            self._prepare(flow, pending)
            if pending.preflight is not None:
                self._answer_preflight(flow, pending)
                return
            assert pending.upstream is not None and pending.plan is not None
            if pending.plan.stream:
                credentials, provider = await self._credentials(pending.upstream.route)
                self._forward(flow, pending, credentials, provider, body=None)
                flow.request.stream = True
            else:
                # The body is hashed into the signature, so it is held, not streamed past us.
                flow.request.stream = False
                self._pending[flow.id] = pending
        except Exception as e:
            self._answer_error(flow, pending, e)

    async def request(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.pop(flow.id, None)
        if flow.response or flow.error or not flow.live or flow.id in self._in_flight:
            return
        if pending is None:  # requestheaders did not see this flow (e.g. injected by an addon)
            pending = _Pending(self._client_target(flow), time.monotonic())
        try:
            if flow.request.stream:
                # Another addon made the body stream after requestheaders: it cannot be signed.
                flow.kill()
                return
            if pending.upstream is None:
                self._prepare(flow, pending)
            assert pending.upstream is not None and pending.plan is not None
            body = flow.request.raw_content or b""
            route = pending.upstream.route
            if len(body) > route.buffer_limit and pending.plan.payload_hash is None:
                raise body_too_large(route, len(body))
            digest = None
            if len(body) >= HASH_IN_THREAD_MIN and pending.plan.payload_hash is None:
                # The signature covers the body's SHA-256: a large body is hashed in a thread (hashlib
                # lets go of the GIL), so that the event loop goes on serving the other requests.
                digest = await asyncio.to_thread(body_sha256, body)
            credentials, provider = await self._credentials(route)
            self._forward(flow, pending, credentials, provider, body=body, body_digest=digest)
        except Exception as e:
            self._answer_error(flow, pending, e)

    def _prepare(self, flow: http.HTTPFlow, pending: "_Pending") -> None:
        """Check, authenticate, route and plan a request from its headers (raises to refuse it).
        A CORS preflight from an allowed origin only gets `pending.preflight`, its answer."""
        pending.raw_fields = flow.request.headers.fields
        pending.fields = fields = _fields(flow.request.headers)
        pending.first = first = check_request_headers(fields)
        # Browser rules (browser.py): not for replays, the operator's own from mitmweb or the console.
        browsers = self.state.browsers if self.state is not None and flow.is_replay != "request" else None
        host = self._check_browser(flow, pending, browsers) if browsers is not None else None
        if (
            browsers is not None
            and flow.request.method == "OPTIONS"
            and "access-control-request-method" in first
        ):
            if self._plan_preflight(flow, pending, host):
                return
        self._authenticate(flow)
        pending.upstream = self._upstream(flow)
        route = pending.upstream.route
        if browsers is not None:
            site = first.get("sec-fetch-site")
            pending.cors_origin = browser.check_origin(first.get("origin"), site, host, route.cors_origins)
        pending.plan = plan_request(route, fields, first)

    def _check_browser(self, flow: http.HTTPFlow, pending: "_Pending", policy: browser.BrowserPolicy):
        """The Host check, and the Origin check against every origin some route allows (the route's
        own list is checked once routed). Returns the request's Host for the own-origin check."""
        first = pending.first or {}
        host = self._check_host(flow, policy)
        origin = browser.check_origin(
            first.get("origin"), first.get("sec-fetch-site"), host, policy.known_origins
        )
        if browser.origin_allowed(origin, host, policy.origins):
            pending.cors_origin = origin  # allowed everywhere: a refusal below is readable too
        return host

    def _plan_preflight(self, flow: http.HTTPFlow, pending: "_Pending", host: str | None) -> bool:
        """A CORS preflight from an origin the route allows gets the proxy's own answer
        (`pending.preflight`); one from another origin is refused. False: not a browser's preflight."""
        first = pending.first or {}
        pending.upstream = self._upstream(flow)
        route = pending.upstream.route
        origin = browser.check_origin(first.get("origin"), None, host, route.cors_origins)
        if origin is None:
            return False
        pending.cors_origin = origin
        pending.preflight = browser.preflight_headers(
            origin,
            first.get("access-control-request-headers", ""),
            route.request_headers.allows,
            self.state is not None and self.state.bearer is not None,
            first.get("access-control-request-private-network", "").lower() == "true",
        )
        return True

    @staticmethod
    def _check_host(flow: http.HTTPFlow, policy: browser.BrowserPolicy) -> str | None:
        """On a reverse listener, where a request's Host names the proxy itself: refuse names it is
        not known by (DNS rebinding). Returns the Host (or :authority) for the own-origin check."""
        request = flow.request
        hosts = request.headers.get_all("host")
        if request.data.authority:  # absolute-form on HTTP/1, :authority on HTTP/2
            hosts.append(request.data.authority.decode("utf-8", "surrogateescape"))
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            policy.check_host(hosts)
        return hosts[0] if hosts else None

    def _answer_preflight(self, flow: http.HTTPFlow, pending: "_Pending") -> None:
        """The proxy's own answer to a CORS preflight: never signed, never forwarded."""
        flow.response = http.Response.make(204, b"", dict(pending.preflight or ()))
        flow.metadata["proxysigv4"] = {"preflight": pending.cors_origin, "client_path": pending.client_target}
        route = pending.upstream.route if pending.upstream else None
        self._log(flow, f"OPTIONS {pending.client_target} -> (CORS preflight) ", route, pending.started)

    def _client_target(self, flow: http.HTTPFlow) -> str:
        # A replayed flow keeps the client path it was first received with.
        if flow.is_replay:
            return flow.metadata.get("proxysigv4", {}).get("client_path", flow.request.path)
        return flow.request.path

    async def _credentials(self, route: Route):
        provider = self.credentials.provider(route)
        credentials = await provider.get()
        if provider not in self._frozen_after:
            # The first load built botocore clients and read service models (assume-role, SSO):
            # long-lived too, so out of the collector's view as well (see `running`).
            self._frozen_after.add(provider)
            gc.freeze()
        return credentials, provider

    def _answer_error(self, flow: http.HTTPFlow, pending: "_Pending", error: Exception) -> None:
        """Turn every failure into the proxy's own JSON answer; nothing is forwarded unsigned."""
        if isinstance(error, RequestRejected):
            self._refuse(flow, pending, error.status, error.error, error.message, error.headers)
        elif isinstance(error, CredentialError):
            prefix = pending.route_prefix
            self._refuse(
                flow, pending, 503, "credentials_unavailable", f"credentials for route {prefix}: {error}"
            )
        else:
            log.error(
                "proxysigv4: internal error for %s %s",
                flow.request.method,
                pending.client_target,
                exc_info=error,
            )
            message = "proxysigv4 failed to sign this request (see proxy log)"
            self._refuse(flow, pending, 500, "internal_error", message)
        route = pending.upstream.route if pending.upstream else None
        self._log(flow, f"{flow.request.method} {pending.client_target} -> - ", route, pending.started)

    def _refuse(self, flow, pending: "_Pending", status: int, error: str, message: str, headers=None) -> None:
        """The proxy's own answer, marked in mitmweb so it is not mistaken for AWS's."""
        flow.response = errors.error_response(status, error, message, pending.route_prefix)
        flow.response.headers.update(headers or {})
        if pending.cors_origin is not None:  # the allowed page may read why
            for name, value in browser.response_cors_headers(pending.cors_origin, ()):
                flow.response.headers[name] = value
        if error in BROWSER_REFUSALS:
            log.warning("proxysigv4: refused %s %s: %s", flow.request.method, pending.client_target, message)
        flow.metadata["proxysigv4"] = {
            "rejected": error,
            "status": status,
            "message": message,
            "client_path": pending.client_target,
        }
        flow.comment = f"proxysigv4 refused ({status} {error}): {message}"
        flow.marked = ":no_entry:"

    def _authenticate(self, flow: http.HTTPFlow) -> None:
        state = self.state
        if state is None or state.bearer is None or flow.is_replay == "request":
            return  # replays come from the operator's own mitmweb/console session
        if not state.bearer.accepts(flow.request.headers.get("authorization")):
            raise RequestRejected(
                401,
                "unauthorized",
                "this proxy requires Authorization: Bearer <token> (one of proxysigv4.bearerTokens)",
                {"www-authenticate": 'Bearer realm="proxysigv4"'},
            )

    def _upstream(self, flow: http.HTTPFlow) -> Upstream:
        if self.state is None:
            raise RequestRejected(503, "not_configured", "proxysigv4 has no route table loaded")
        previous = flow.metadata.get("proxysigv4", {})
        if flow.is_replay == "request" and "route" in previous:
            route = self.state.table.route(previous["route"])
            if route is None:
                raise RequestRejected(
                    409,
                    "route_gone",
                    f"route {previous['route']} of this replayed flow is no longer configured",
                )
            r = flow.request
            return resolve_replay(route, r.scheme, r.host, r.port, r.path)
        return resolve(self.state.table, flow.request.path)

    def _forward(
        self, flow: http.HTTPFlow, pending: "_Pending", credentials, provider, body, body_digest=None
    ) -> None:
        upstream, plan = pending.upstream, pending.plan
        assert upstream is not None and plan is not None
        route = upstream.route
        request = flow.request
        fields, first = pending.fields, pending.first
        if fields is None or first is None or request.headers.fields is not pending.raw_fields:
            fields = _fields(request.headers)
            first = first_values(fields)
        method = request.method  # decoded by mitmproxy on every read
        handshake = websocket_handshake(method, fields, first)
        tokens = connection_tokens(fields, first)
        path = upstream.path + (f"?{upstream.query}" if upstream.query else "")
        flow_path = path  # what stays in the flow once the request has left
        if handshake is not None and route.websocket_auth == "query":
            # The upgrade is signed in its URL (X-Amz-Signature, ...), for upstreams that want that.
            presigned = presign_url(
                "GET",
                upstream.url,
                credentials,
                route.service,
                route.region,
                route.is_s3,
                WEBSOCKET_PRESIGN_EXPIRES,
            )
            parts = urlsplit(presigned.url)
            path, flow_path = f"{parts.path}?{parts.query}", f"{parts.path}?{redact_query(parts.query)}"
            params = dict(parse_qsl(parts.query))
            scope, signed_at = params["X-Amz-Credential"].split("/", 1)[1], params["X-Amz-Date"]
            signed = SignedRequest(
                [("Host", route.target.host_header)],
                ("host",),
                redact_query(presigned.canonical_request),  # the token is in its query
                presigned.string_to_sign,
                signed_at,
            )
            signature = params["X-Amz-Signature"]
        else:
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
            signed_at, scope, signature = signed.signed_at, signed.scope, signed.signature
        # mitmproxy keeps or closes both connections by the request's Connection token (see
        # headers' "Connection management"), and answers `Expect: 100-continue` itself (then drops
        # the header) if it is still there.
        manage = connection_management(tokens) if handshake is None else None
        expect = first.get("expect")
        target = route.target
        # Set the target on the request's data directly: the public setters also rewrite the Host
        # header, which the signed headers below replace anyway.
        data = request.data
        data.scheme = target.scheme.encode()
        data.host = target.host
        data.port = target.port
        data.path = path.encode()
        # Origin-form on HTTP/1 (a client's absolute-form target is not passed on); :authority on h2/h3.
        data.authority = target.host_header.encode() if (request.is_http2 or request.is_http3) else b""
        sent = list(signed.headers)
        if manage:
            sent.append(("connection", manage))  # hop-by-hop: never signed
        if expect:
            sent.append(("expect", expect))  # never signed; mitmproxy removes it before sending
        if handshake:
            sent += handshake  # the WebSocket handshake's own headers, not signed
        request.headers.fields = sent_fields = _encoded(sent)
        target_url = upstream.url
        payload = plan.payload_hash or f"hashed, sha256 {signed.canonical_request.rsplit(chr(10), 1)[-1]}"
        flow.metadata["proxysigv4"] = {
            "route": route.prefix,
            "client_path": pending.client_target,
            "target_url": target_url,
            "service": route.service,
            "region": route.region,
            "credential_source": route.credential_source,
            "credential_method": provider.method,
            "access_key_id": mask_key_id(provider.access_key_id),
            "signed_at": signed_at,
            "credential_scope": scope,
            "signed_headers": list(signed.signed_headers),
            "payload": payload + (" (streamed)" if body is None else ""),
            "canonical_request": (
                redact_canonical(signed.canonical_request) if credentials.token else signed.canonical_request
            ),
            "string_to_sign": signed.string_to_sign,
            "replayed": flow.is_replay == "request",
        }
        echoed = (signature.encode(),) if signature else ()
        if credentials.token:
            echoed += (credentials.token.encode(),)
        redacted = signed.redacted_secrets()
        hidden = {k.encode("latin-1"): v.encode() for k, v in redacted}  # by the names as sent
        in_flight = _InFlight(
            route,
            pending.started,
            f"{method} {pending.client_target} -> {target_url} ",
            secrets=echoed,
            redacted=redacted,
            flow_path=flow_path if flow_path != path else None,
            sent_fields=sent_fields,
            redacted_fields=tuple([(k, hidden.get(k, v)) for k, v in sent_fields]) if hidden else sent_fields,
            cors_origin=pending.cors_origin,
        )
        if route.timeout:
            in_flight.timer = asyncio.get_running_loop().call_later(
                route.timeout, self._on_timeout, flow, route.timeout
            )
        self._in_flight[flow.id] = in_flight

    def server_connect(self, data) -> None:
        """Offer h2 by ALPN to targets whose route says `http2: true`, also for HTTP/1 clients
        (mitmproxy otherwise offers nothing to a plain-HTTP client's upstream: HTTP/1.1)."""
        state = self.state
        server = data.server
        if state is None or server.address is None:
            return
        address = (server.address[0], server.address[1])
        if address in state.tls_targets:
            # keep_host_header (see configure) would let a TLS client's SNI reach a target that is
            # also the --mode target: the route's target names its own TLS server.
            server.sni = server.address[0]
        if address in state.h2_targets and not server.alpn_offers:
            server.alpn_offers = (b"h2", b"http/1.1")

    # ---- responses -------------------------------------------------------------------------
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        in_flight = self._in_flight.get(flow.id)
        response = flow.response
        if in_flight is None or response is None:
            return
        route = in_flight.route
        fields = response.headers.fields
        kept, first = filter_response_fields(route.response_headers, fields)
        if response.status_code == 101 and websocket_handshake(
            flow.request.method, _fields(flow.request.headers)
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
        # the decision reads only the first values it is given
        stream = streams_response(route, (), flow.request.method, first)
        if stream is not None:
            response.stream = stream

    def response(self, flow: http.HTTPFlow) -> None:
        in_flight = self._in_flight.get(flow.id)
        response = flow.response
        if (
            in_flight is not None
            and response is not None
            and response.status_code >= 400
            and not response.stream
        ):
            self._diagnose(flow, in_flight.route)
            self._scrub_echoed_secrets(response, in_flight.secrets)
        self._finish(flow)

    @staticmethod
    def _scrub_echoed_secrets(response: http.Response, secrets: tuple[bytes, ...]) -> None:
        """AWS error bodies can echo the session token and signature (S3's CanonicalRequest,
        SignatureProvided): the client never sees them."""
        content = response.content or b""
        if any(secret in content for secret in secrets):
            for secret in secrets:
                content = content.replace(secret, REDACTED.encode())
            response.content = content

    def _diagnose(self, flow: http.HTTPFlow, route: Route) -> None:
        """Attach an explanation when AWS rejected the signature (shown in mitmweb, sent as a header)."""
        response = flow.response
        assert response is not None and self.state is not None
        error = parse_aws_error(response.content or b"", {k.lower(): v for k, v in response.headers.items()})
        meta = flow.metadata.get("proxysigv4", {})
        if error is None:
            return
        found = diagnose(
            error,
            route=route.prefix,
            source=self.state.config.source,
            service=route.service,
            region=route.region,
            canonical_request=meta.get("canonical_request"),
            string_to_sign=meta.get("string_to_sign"),
            access_key=meta.get("access_key_id"),
            now=_now(),
        )
        if found is None:
            return
        meta["diagnosis"] = {"code": found.code, "summary": found.summary, "detail": found.detail}
        response.headers[DIAGNOSIS_HEADER] = found.summary.encode("ascii", "replace").decode()
        flow.comment = f"proxysigv4 diagnosis ({found.code}): {found.summary}"
        flow.marked = ":warning:"
        log.warning(
            "proxysigv4: %s %s -> %s: %s",
            flow.request.method,
            meta.get("client_path"),
            found.code,
            found.summary,
        )

    def error(self, flow: http.HTTPFlow) -> None:
        self._pending.pop(flow.id, None)
        in_flight = self._in_flight.get(flow.id)
        if in_flight is not None:  # the error page mitmproxy sends next names the route
            errors.failed_routes[flow.client_conn.id] = in_flight.route.prefix
        self._finish(flow)

    def client_disconnected(self, client) -> None:
        errors.forget(client.id)

    def _finish(self, flow: http.HTTPFlow) -> None:
        in_flight = self._in_flight.pop(flow.id, None)
        if in_flight is None:
            return
        # The request has left: keep no usable signature or session token in the flow.
        headers = flow.request.headers
        if headers.fields is in_flight.sent_fields:
            headers.fields = in_flight.redacted_fields
        else:  # changed since (mitmproxy drops Expect, another addon): each secret header by name
            for name, value in in_flight.redacted:
                headers[name] = value
        if in_flight.flow_path is not None:
            flow.request.data.path = in_flight.flow_path.encode()
        if in_flight.timer is not None:
            in_flight.timer.cancel()
        self._log(flow, in_flight.log_head, in_flight.route, in_flight.started)

    # ---- timeouts --------------------------------------------------------------------------
    def _on_timeout(self, flow: http.HTTPFlow, seconds: float) -> None:
        in_flight = self._in_flight.get(flow.id)
        if in_flight is None or flow.error or not flow.live:
            return
        prefix = in_flight.route.prefix
        errors.timed_out_connections[flow.client_conn.id] = (
            f"upstream {flow.request.host} did not answer within {seconds:g}s (route {prefix} timeout)"
        )
        proxyserver = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
        if handler is not None and flow.server_conn in handler.transports:
            handler.close_connection(flow.server_conn)
        else:
            errors.timed_out_connections.pop(flow.client_conn.id, None)

    # ---- logging ---------------------------------------------------------------------------
    def _log(self, flow, head: str, route: Route | None, started: float) -> None:
        """The request's line: `head` ("METHOD client-path -> target-url "), then status, duration,
        size, route and service/region."""
        if not request_log.isEnabledFor(logging.INFO):
            return
        response = flow.response
        if response is not None:
            status = response.status_code
            size = content_length_header(response.headers.fields) or (
                "streamed" if response.stream else str(len(response.raw_content or b""))
            )
        else:
            status, size = f"error({flow.error.msg if flow.error else '?'})", "-"
        line = (
            f"{head}{status} {(time.monotonic() - started) * 1000:.1f}ms {size}B "
            f"{route.log_label if route else 'route=- -'}"
        )
        if self._verbose and "signed_headers" in flow.metadata.get("proxysigv4", {}):
            line += " signed=" + ";".join(flow.metadata["proxysigv4"]["signed_headers"])
        log_request_line(line)


_record_template: dict | None = None


def log_request_line(line: str) -> None:
    """Log one request's line on the `proxysigv4.request` logger, at info: on the event loop's next
    turn when one is running, i.e. once mitmproxy has sent what the hook was about to let go (the
    response to the client, or the proxy's own refusal). A request's line is written when its
    answer is on the way, as access logs are; the log handlers' work (mitmproxy's formats a time
    stamp and writes the terminal line: as much as the rest of this addon's work on a response)
    then does not delay the answer."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a tool, a test calling a hook directly): now
        _emit_request_line(line)
    else:
        loop.call_soon(_emit_request_line, line)


def _emit_request_line(line: str) -> None:
    request_log.handle(_request_record(line))


def _request_record(line: str) -> logging.LogRecord:
    """The request line's record, made cheaply. Logger.info would walk the stack for the caller's
    file and line, and LogRecord() looks up the thread, process and task names: all the same for
    every request line (made on the event loop's thread), so they are copied from a template and
    only the message and times are new."""
    global _record_template
    if _record_template is None:
        template = request_log.makeRecord(request_log.name, logging.INFO, __file__, 0, "", None, None)
        template.taskName = None
        _record_template = template.__dict__
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = _record_template.copy()  # a copy given whole: cheaper than filling the record's own
    now = time.time()
    fields["relativeCreated"] += (now - fields["created"]) * 1000
    fields["created"] = now
    fields["msecs"] = int((now - int(now)) * 1000) + 0.0  # as LogRecord computes them
    fields["msg"] = line
    record.__dict__ = fields
    return record


def _not_request_line(record: logging.LogRecord) -> bool:
    return record.name != request_log.name


def skip_legacy_log_events() -> None:
    """mitmproxy hands every log record to its deprecated `add_log` event as well, which wakes the
    event loop and calls every addon (about 0.1 ms a record, as much as the rest of this addon's
    work on a request): the per-request lines skip that path. Terminal, mitmweb's event log and
    other handlers still get them."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, mitmproxy_log.LegacyLogEvents) and _not_request_line not in handler.filters:
            handler.addFilter(_not_request_line)


def _file_mark(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def content_length_header(fields: tuple[tuple[bytes, bytes], ...]) -> str | None:
    """The first Content-Length value, or None: `Headers.get` for a message with at most one (read
    from the raw fields: the generic multidict lookup costs several times more, per request line)."""
    for name, value in fields:
        if len(name) == 14 and name.lower() == b"content-length":
            return value.decode("utf-8", "surrogateescape")  # as mitmproxy decodes values
    return None


def _fields(headers: http.Headers) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in headers.fields]


def _encoded(fields: list[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    """Header fields as mitmproxy holds them: set on the message's own Headers (a new Headers
    object would check and convert every field again)."""
    return tuple([(k.encode("latin-1"), v.encode("utf-8", "surrogateescape")) for k, v in fields])
