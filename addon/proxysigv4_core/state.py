"""Everything derived from one config file and mitmproxy's listen options, replaced whole on every
(re)load; and the watcher that reloads the file when it changes."""

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mitmproxy.optmanager import OptManager
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from . import browser
from .config import Config, ConfigError, load_config
from .inbound import BearerTokens, InboundError, is_loopback, require_auth
from .routing import HostTable, RouteTable

log = logging.getLogger("proxysigv4")
RELOAD_INTERVAL = 1.0


@dataclass(frozen=True)
class State:
    """The route table and what the request path needs of the config, derived once per load."""

    config: Config
    table: RouteTable  # path routes ('/prefix'), for reverse listeners
    bearer: BearerTokens | None  # tokens every request must present, or None
    required_auth: bool  # inbound authentication required (bearer tokens or proxyauth)
    # (host, port) of https targets whose routes ask for HTTP/2 upstream
    h2_targets: frozenset[tuple[str, int]] = frozenset()
    # Host names and web origins browsers may use (browser.py)
    browsers: browser.BrowserPolicy = browser.BrowserPolicy(frozenset(browser.LOCAL_NAMES))
    # (host, port) of https targets: their TLS names the target, never the client's SNI
    tls_targets: frozenset[tuple[str, int]] = frozenset()
    hosts: HostTable = HostTable(())  # host routes (origin URLs), for mitmproxy's other listeners


def derive_state(config: Config, options: OptManager) -> State:
    """Check the inbound-auth rule and the browser settings against mitmproxy's listen options
    (raises InboundError), and derive the state the hooks read."""
    has_proxyauth = "proxyauth" in options and bool(options.proxyauth)
    # Without mitmproxy's proxyserver (embedded use) nothing listens.
    modes = options.mode if "mode" in options else []
    specs = [ProxyMode.parse(m) for m in modes]
    listen_hosts = [spec.listen_host(options.listen_host) for spec in specs]
    forward_hosts = [
        spec.listen_host(options.listen_host) for spec in specs if not isinstance(spec, ReverseMode)
    ]
    _check_forward_exposure(config, forward_hosts, has_proxyauth)
    required = require_auth(
        config.allow_unauthenticated_requests,
        listen_hosts,
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
    listen = [*listen_hosts, options.listen_host] if "listen_host" in options else listen_hosts
    policy = browser.BrowserPolicy.build(config.allowed_hosts, listen, config.cors_origins, route_origins)
    paths = tuple(r for r in config.routes if r.prefix.startswith("/"))
    h2 = frozenset((r.target.host, r.target.port) for r in paths if r.http2)
    tls = frozenset((r.target.host, r.target.port) for r in paths if r.target.scheme == "https")
    host_routes = HostTable(tuple(r for r in config.routes if not r.prefix.startswith("/")))
    return State(config, RouteTable(paths), bearer, required, h2, policy, tls, host_routes)


def _check_forward_exposure(config: Config, forward_hosts: list[str], has_proxyauth: bool) -> None:
    """Host routes sign what a forward listener receives, where bearer tokens do not apply (the
    app's own Authorization is its own): beyond loopback, mitmproxy's proxyauth must guard it."""
    if has_proxyauth or config.allow_unauthenticated_requests is True:
        return
    if not any(not r.prefix.startswith("/") for r in config.routes):
        return
    exposed = sorted({h or "0.0.0.0 (all interfaces)" for h in forward_hosts if not is_loopback(h)})
    if exposed:
        raise InboundError(
            f"{config.source}: host routes sign requests that a forward listener on {', '.join(exposed)} "
            "receives, from anyone who reaches it; listen on 127.0.0.1, or require mitmproxy's proxy "
            "authentication (--set proxyauth=user:pass), or set allowUnauthenticatedRequests: true"
        )


def describe(state: State) -> str:
    """The start-up and reload line: routes, targets, service/region, inbound authentication."""
    config = state.config
    auth = "" if state.required_auth else " (no inbound authentication)"
    routes = ", ".join(f"{r.prefix} -> {r.target.url} ({r.service}/{r.region})" for r in config.routes)
    return f"proxysigv4: {len(config.routes)} routes from {config.source}{auth}: {routes}"


def file_mark(path: str) -> tuple[int, int] | None:
    """(mtime, size) of a file, or None: what tells the watcher the file changed."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class ConfigWatcher:
    """Reloads the config file when its (mtime, size) changes; a broken edit keeps the last good
    table. `current()` gives the state in force, `apply(config)` swaps a new one in."""

    def __init__(self, current: Callable[[], State | None], apply: Callable[[Config], None]) -> None:
        self.current, self.apply = current, apply
        self.mark: tuple[int, int] | None = None  # of the file last read

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        while True:
            await sleep(RELOAD_INTERVAL)
            await self.check()

    async def check(self) -> None:
        state = self.current()
        if state is None:
            return
        source = state.config.source
        mark = file_mark(source)
        if mark == self.mark:
            return
        self.mark = mark
        try:
            config = await asyncio.to_thread(load_config, source)  # file I/O off the event loop
            if self.current() is state:  # not replaced meanwhile by a `configure`
                self.apply(config)
                log.info("proxysigv4: reloaded %s", source)
        except (ConfigError, InboundError) as e:
            log.error("proxysigv4: %s changed but cannot be used, keeping the previous routes: %s", source, e)
        except Exception:
            log.exception("proxysigv4: reloading %s failed, keeping the previous routes", source)


def ready_line(state: State, host: str, port: int) -> str:
    """Once mitmproxy listens: where, and a curl line to paste for the first route."""
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    host = f"[{host}]" if ":" in host else host
    if not state.table.routes:
        names = ", ".join(r.prefix for r in state.hosts.routes)
        return f"proxysigv4 ready on http://{host}:{port} (host routes only, for a forward proxy: {names})"
    first = sorted(state.table.routes, key=lambda r: r.prefix)[0]
    auth = ' -H "Authorization: Bearer $PROXY_TOKEN"' if state.bearer else ""
    return (
        f"proxysigv4 ready on http://{host}:{port} - try: curl -s{auth} "
        f"http://{host}:{port}{first.prefix.rstrip('/')}/"
    )
