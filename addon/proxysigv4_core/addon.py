"""The mitmproxy addon: its hooks translate flows to and from the core, and fail closed.

Per request: intake (checks, browser rules, auth, route, plan) -> credentials -> forwarding (sign,
retarget, record) -> responses (filter, stream, explain); every failure becomes the proxy's own
JSON answer (answers). The state derived from the config file is swapped whole on reload (state).
"""

import asyncio
import gc
import logging
import weakref
from collections.abc import Sequence

from botocore.credentials import ReadOnlyCredentials
from mitmproxy import command, contentviews, ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.connection import Client
from mitmproxy.optmanager import OptManager
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from . import appsigned, commands, errors, internals, logformat
from .answers import answer_error, answer_preflight
from .config import Config, ConfigError, Route, load_config
from .contentview import SigV4
from .credentials import CredentialProvider, CredentialStore
from .drain import DEFAULT_TIMEOUT
from .flowrecord import record_of
from .forwarding import InFlight, forward
from .inbound import InboundError
from .intake import Outcome, Planned, Preflight, Refusal, prepare, received_for
from .presign import DEFAULT_EXPIRES
from .redaction import hide_sent_secrets
from .requestlog import log_request
from .responses import explain_app_refusal, explain_refusal, filter_response
from .service import Service
from .signers import body_sha256
from .state import ConfigWatcher, State, derive_state, describe, file_mark
from .streaming import body_too_large

log = logging.getLogger("proxysigv4")
OPTION = "proxysigv4_config"
VERBOSE_OPTION = "proxysigv4_verbose"
HEALTH_OPTIONS = frozenset({"proxysigv4_health_port", "proxysigv4_health_host"})
# Built-in addons that run after scripts and would change a request after it was signed.
_POST_SIGNING_MODIFIERS = frozenset({"map_remote", "modify_headers", "modify_body"})
# Options that decide whether inbound authentication is required.
_AUTH_OPTIONS = frozenset({"proxyauth", "listen_host", "mode"})
_SECRET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "awscrt")
# Bodies at least this large are hashed in a thread: on the event loop, SHA-256 of 2 MiB takes
# about 2 ms here (6 ms when the machine is slow), of the 32 MiB default bufferLimit 30-100 ms, in
# which no other request would be served. Below it, the thread hop is not worth it.
HASH_IN_THREAD_MIN = 2 * 1024 * 1024


class ProxySigV4:
    def __init__(self, config_path: str = "proxysigv4.yaml") -> None:
        self._default_config = config_path  # the option's default (embedders can pass their own)
        self.state: State | None = None
        self.credentials = CredentialStore()
        self.service = Service(self.credentials, lambda: self.state)
        self._in_flight: dict[str, InFlight] = {}
        self._pending: dict[str, Planned] = {}
        self._watcher = ConfigWatcher(lambda: self.state, self._apply)
        self._tasks: list[asyncio.Task] = []
        self._verbose = False
        # credential providers whose first load was followed by a gc.freeze()
        self._frozen_after: weakref.WeakSet = weakref.WeakSet()

    def load(self, loader: Loader) -> None:
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
        _load_service_options(loader)
        internals.install_json_error_pages()
        contentviews.add(SigV4())
        # botocore logs canonical requests, signatures, credentials headers and STS response bodies
        # (secret keys) at DEBUG: keep those loggers at INFO whatever mitmproxy's verbosity.
        for name in _SECRET_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)

    def configure(self, updated: set[str]) -> None:
        options = ctx.options
        if VERBOSE_OPTION in updated:
            self._verbose = options.proxysigv4_verbose
        if "proxysigv4_log_format" in updated:
            logformat.use(options.proxysigv4_log_format)
        if HEALTH_OPTIONS & updated:
            try:
                self.service.listen(options.proxysigv4_health_host, options.proxysigv4_health_port)
            except OSError as e:
                raise exceptions.OptionsError(f"proxysigv4: cannot listen for health checks: {e}") from e
        try:
            if OPTION in updated:
                self._watcher.mark = file_mark(options.proxysigv4_config)
                self._apply(load_config(options.proxysigv4_config))
            elif _AUTH_OPTIONS & updated and self.state is not None:
                self._apply(self.state.config)
        except (ConfigError, InboundError) as e:
            raise exceptions.OptionsError(f"proxysigv4: {e}") from e
        _fit_mitmproxy_options(options, updated)

    def _apply(self, config: Config) -> None:
        """Check the inbound-auth and browser rules against the listen options; swap in the state."""
        self.state = derive_state(config, ctx.options)
        self.credentials.retain(config.routes)
        log.info(describe(self.state))

    def running(self) -> None:
        internals.skip_legacy_log_events()
        # the service's periodic turn resolves every route's credentials at once, and renews them
        self.service.start(ctx.options.proxysigv4_drain_timeout)
        if not self._tasks:
            # Everything loaded so far (mitmproxy, botocore's modules and data) lives as long as the
            # process: take it out of the collector's view, so that a full collection no longer
            # walks it and stalls the event loop for tens of milliseconds.
            gc.freeze()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._watcher.run()), loop.create_task(self.service.announce())]

    # ---- commands (mitmweb's command bar, the console, POST /commands/<name>) -------------
    # mitmweb accepts only letters and dots in command names, hence "sigv." rather than "proxysigv4.".
    @command.command("sigv.routes")
    def routes(self) -> Sequence[str]:
        """The loaded routes: prefix -> target, service/region, credentials and their state."""
        return commands.route_lines(self.state, self.credentials)

    @command.command("sigv.refresh")
    def refresh(self, *prefixes: str) -> str:
        """Forget and re-resolve the credentials of the given routes (all routes when none is given),
        e.g. after `aws sso login`."""
        return commands.refresh(self.state, self.credentials, prefixes)

    @command.command("sigv.presign")
    def presign(self, method: str, path: str, expires: int = DEFAULT_EXPIRES) -> str:
        """A presigned URL for the route that `path` (a client path, e.g. /s3/bucket/key) matches:
        valid `expires` seconds (default 3600), for `method` without a body."""
        return commands.presigned_url(self.state, self.credentials, method, path, expires)

    # ---- requests --------------------------------------------------------------------------
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Route and plan before the body is read: refuse early, or sign now and stream the body."""
        self.service.received(flow)
        received = received_for(self.state, flow)
        if flow.response or flow.error or not flow.live or received is None:
            return
        outcome = prepare(self.state, flow, received)
        if isinstance(outcome, Planned) and not outcome.plan.stream:
            # The body is hashed into the signature, so it is held, not streamed past us.
            flow.request.stream = False
            self._pending[flow.id] = outcome
        else:
            await self._settle(flow, outcome, held=False)

    async def request(self, flow: http.HTTPFlow) -> None:
        planned = self._pending.pop(flow.id, None)
        # requestheaders did not see a flow injected by an addon: it is received here
        received = planned or received_for(self.state, flow)
        if received is None and not (flow.response or flow.error):
            appsigned.record_explanation(flow, self.credentials.known)
        if flow.response or flow.error or not flow.live or flow.id in self._in_flight or received is None:
            return
        if flow.request.stream:
            flow.kill()  # another addon made the body stream after requestheaders: unsignable
            return
        await self._settle(flow, planned or prepare(self.state, flow, received), held=True)

    async def _settle(self, flow: http.HTTPFlow, outcome: Outcome, held: bool) -> None:
        """Answer a refusal or a preflight, or sign a planned request and send it on: with its body
        held (and hashed), or streaming past us."""
        if isinstance(outcome, Refusal):
            answer_error(flow, outcome.stage, outcome.error, self._verbose)
            return
        try:
            if isinstance(outcome, Preflight):
                answer_preflight(flow, outcome, self._verbose)
                return
            body = digest = None
            if held:
                body = flow.request.raw_content or b""
                hashed = outcome.plan.payload_hash is None
                if hashed and len(body) > outcome.route.buffer_limit:
                    raise body_too_large(outcome.route, len(body))
                if hashed and len(body) >= HASH_IN_THREAD_MIN:
                    # hashlib lets go of the GIL: the event loop goes on serving the other requests.
                    digest = await asyncio.to_thread(body_sha256, body)
            credentials, provider = await self._credentials(outcome.route)
            in_flight = forward(flow, outcome, credentials, provider, body, digest)
            if seconds := in_flight.route.timeout:
                loop = asyncio.get_running_loop()
                in_flight.timer = loop.call_later(seconds, self._on_timeout, flow, seconds)
            self._in_flight[flow.id] = in_flight
            if not held:
                flow.request.stream = True
        except Exception as e:
            answer_error(flow, outcome, e, self._verbose)

    async def _credentials(self, route: Route) -> tuple[ReadOnlyCredentials, CredentialProvider]:
        provider = self.credentials.provider(route)
        credentials = await provider.get()
        if provider not in self._frozen_after:
            # The first load built botocore clients and read service models (assume-role, SSO):
            # long-lived too, so out of the collector's view as well (see `running`).
            self._frozen_after.add(provider)
            gc.freeze()
        return credentials, provider

    def server_connect(self, data: ServerConnectionHookData) -> None:
        """A route target's TLS names the target itself, and h2 is offered (ALPN) to targets whose
        route says `http2: true`, also for HTTP/1 clients (mitmproxy would offer HTTP/1.1 only)."""
        server = data.server
        if self.state is None or server.address is None:
            return
        address = (server.address[0], server.address[1])
        if address in self.state.tls_targets:
            # keep_host_header (see configure) would let a TLS client's SNI reach a target that is
            # also the --mode target.
            server.sni = server.address[0]
        if address in self.state.h2_targets and not server.alpn_offers:
            server.alpn_offers = (b"h2", b"http/1.1")

    # ---- responses -------------------------------------------------------------------------
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        in_flight = self._in_flight.get(flow.id)
        if in_flight is not None and flow.response is not None:
            filter_response(flow, flow.response, in_flight)
        self.service.closing(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        in_flight = self._in_flight.get(flow.id)
        response = flow.response
        if response is not None and response.status_code >= 400 and not response.stream:  # refused
            source = self.state.config.source if self.state else ""
            if in_flight is not None:
                explain_refusal(flow, response, in_flight, source)
            elif record_of(flow).get("app_signed"):
                explain_app_refusal(flow, response, source)
        if not (response is not None and response.stream):
            self.service.closing(flow)
        self.service.answered(flow, in_flight.route.prefix if in_flight else None)
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._pending.pop(flow.id, None)
        in_flight = self._in_flight.get(flow.id)
        if in_flight is not None:  # the error page mitmproxy sends next names the route
            errors.failed_routes[flow.client_conn.id] = in_flight.route.prefix
        self.service.answered(flow, in_flight.route.prefix if in_flight else None)
        self._finish(flow)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self.service.websockets.add(flow.id)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self.service.websockets.discard(flow.id)

    def done(self) -> None:
        self.service.stop()

    def client_disconnected(self, client: Client) -> None:
        errors.forget(client.id)

    def _finish(self, flow: http.HTTPFlow) -> None:
        in_flight = self._in_flight.pop(flow.id, None)
        if in_flight is None:
            return
        # The request has left: keep no usable signature or session token in the flow.
        hide_sent_secrets(flow.request, in_flight.redacted, in_flight.flow_path)
        if in_flight.timer is not None:
            in_flight.timer.cancel()
        log_request(flow, in_flight.log_head, in_flight.route, in_flight.started, self._verbose)

    def _on_timeout(self, flow: http.HTTPFlow, seconds: float) -> None:
        in_flight = self._in_flight.get(flow.id)
        if in_flight is None or flow.error or not flow.live:
            return
        errors.timed_out_connections[flow.client_conn.id] = (
            f"upstream {flow.request.host} did not answer within {seconds:g}s "
            f"(route {in_flight.route.prefix} timeout)"
        )
        if not internals.close_upstream(flow.client_conn.id, flow.server_conn):
            errors.timed_out_connections.pop(flow.client_conn.id, None)


def _fit_mitmproxy_options(options: OptManager, updated: set[str]) -> None:
    """Set the mitmproxy options signing needs, and warn of those that break signatures."""
    if "connection_strategy" in updated and options.connection_strategy == "eager":
        # Eager mode connects to the --mode target before we reroute; each route has its own.
        options.connection_strategy = "lazy"
    if "keep_host_header" in updated and not options.keep_host_header:
        # The Host a client sent is checked against allowedHosts (browser.py); mitmproxy would
        # overwrite it with the --mode target first. Signed requests get the route's own Host.
        options.keep_host_header = True
    for name in _POST_SIGNING_MODIFIERS & updated:
        if getattr(options, name):
            log.warning(
                "proxysigv4: option %s can change requests after they are signed (map_remote and "
                "modify_body always run after signing, modify_headers for streamed uploads), which "
                "invalidates the signature of the requests it changes",
                name,
            )


def _load_service_options(loader: Loader) -> None:
    loader.add_option(
        "proxysigv4_health_port",
        int,
        0,
        "Port of the health and metrics listener (GET /livez, /readyz, /metrics); 0: off.",
    )
    loader.add_option(
        "proxysigv4_health_host", str, "127.0.0.1", "Address of the health listener (a pod sets 0.0.0.0)."
    )
    loader.add_option(
        "proxysigv4_drain_timeout",
        int,
        DEFAULT_TIMEOUT,
        "On SIGTERM or the first SIGINT: seconds to let requests in flight finish before exiting "
        "(readiness 503, listeners closed at once); 0: exit at once as mitmproxy does.",
    )
    loader.add_option(
        "proxysigv4_log_format",
        str,
        "text",
        "The proxy's own log lines: text, or json (one object per line, for log aggregators).",
        choices=("text", "json"),
    )
