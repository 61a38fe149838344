"""Browsers are clients too: which Host names the proxy answers to, which web origins may make it
sign, and the CORS answers for those allowed.

Any page the developer opens can make the browser send requests to 127.0.0.1. A cross-site form
POST or `text/plain` fetch needs no preflight, and the query-protocol APIs (STS, SQS, SNS, IAM,
...) take exactly those bodies; a DNS-rebinding page reaches the proxy under its own name and reads
the answers as same-origin. So: a request must name the proxy by a Host it is known by (rebinding
fails), and a request a browser marks as coming from another origin is refused unless that origin
is listed in `corsOrigins` (the Vite / webpack-dev-server / Ollama fixes). Clients that send
neither `Origin` nor `Sec-Fetch-Site` (curl, SDKs, the AWS CLI) are not affected.
"""

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .configerror import ConfigError
from .inbound import InboundError
from .rejection import RequestRejected

# A DNS name (letters, digits, '-', '_' in dot-separated labels) or an IPv4 address.
_HOST_NAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$")

# Names a loopback listener is always known by (any port).
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
# Origins that allow any page: only with inbound authentication (see check_wildcards).
ANY_ORIGIN, NULL_ORIGIN = "*", "null"
PREFLIGHT_MAX_AGE = "600"
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
# Response headers JavaScript may read without being told (the CORS-safelisted ones).
_SAFELISTED_RESPONSE = frozenset(
    {"cache-control", "content-language", "content-length", "content-type", "expires", "last-modified"}
    | {"pragma"}
)


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host / :authority value (`name[:port]`, `[v6]:port`) as (name, port): the name lower-cased,
    without a trailing dot or IPv6 brackets; None if it is not one."""
    value = value.strip()
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if not bracket or (rest and port is None):
            return None
        try:
            name = str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    else:
        name, colon, port = value.partition(":")
        port = port if colon else None
        name = name.lower().rstrip(".")
        if not _HOST_NAME.match(name):
            return None
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return None
    return name, int(port) if port is not None else None


def host_name(value: str) -> str | None:
    """The name in a Host value (see split_host), or None."""
    parts = split_host(value)
    return parts[0] if parts else None


def parse_host_pattern(value: object, where: str) -> str:
    """An `allowedHosts` entry: a name, an IP, a glob over leftmost labels (`*.corp.example`), or
    `*` (any: see check_wildcards)."""

    text = value.strip().lower().rstrip(".") if isinstance(value, str) else ""
    if text == ANY_ORIGIN:
        return text
    glob = text.startswith("*.")
    bare = text[2:] if glob else text
    try:
        name = str(ipaddress.ip_address(bare.strip("[]")))
        glob_ok = not glob
    except ValueError:
        name, glob_ok = bare, bool(_HOST_NAME.match(bare))
    if not text or not glob_ok:
        raise ConfigError(
            f"{where}: {value!r} is not a host name, an IP address or a glob of leftmost labels "
            "(*.internal.example.com); give names without scheme, port or path"
        )
    return ("*." if glob else "") + name


def parse_origin(value: object, where: str) -> str:
    """A `corsOrigins` entry: `scheme://host[:port]` (normalised), `null` or `*`."""

    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected an origin such as http://localhost:3000")
    text = value.strip()
    if text in (ANY_ORIGIN, NULL_ORIGIN):
        return text
    origin = normalise_origin(text)
    if origin is None:
        hint = ""
        if "*" in text:
            hint = (
                "; globs are not accepted: a glob over ports of localhost would trust any local "
                "program that serves a page, so list each origin"
            )
        elif text.rstrip("/") != text:
            hint = f"; write it without the trailing slash: {text.rstrip('/')!r}"
        raise ConfigError(f"{where}: {value!r} is not an origin (scheme://host[:port]){hint}")
    return origin


def normalise_origin(value: str) -> str | None:
    """An Origin header value in one spelling (scheme and host lower-cased, default port and a
    trailing dot dropped), `null` as is; None if it is not an origin."""
    value = value.strip()
    if value.lower() == NULL_ORIGIN:
        return NULL_ORIGIN
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or "*" in value
    ):
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower().rstrip(".")
    host = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class BrowserPolicy:
    """Who may reach the proxy from a browser: Host names (exact or `*.` globs, `*`: any) and the
    origins allowed anywhere (each route adds its own)."""

    hosts: frozenset[str]
    host_globs: tuple[str, ...] = ()
    any_host: bool = False
    origins: frozenset[str] = frozenset()  # global corsOrigins
    known_origins: frozenset[str] = frozenset()  # global and every route's: the first, cheap check

    @classmethod
    def build(
        cls,
        allowed_hosts: Iterable[str],
        listen_hosts: Iterable[str],
        origins: Iterable[str],
        route_origins: Iterable[frozenset[str]],
    ) -> "BrowserPolicy":
        names = set(LOCAL_NAMES)
        names |= {n for n in (_listen_name(h) for h in listen_hosts if h) if n}
        globs = []
        for pattern in allowed_hosts:
            if pattern.startswith("*."):
                globs.append(pattern)
            elif pattern != ANY_ORIGIN:
                names.add(pattern)
        known = frozenset(origins).union(*route_origins)
        return cls(frozenset(names), tuple(globs), ANY_ORIGIN in allowed_hosts, frozenset(origins), known)

    def host_allowed(self, value: str) -> bool:
        name = host_name(value)
        if name is None:
            return False
        if self.any_host or name in self.hosts:
            return True
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.host_globs)

    def check_host(self, values: Iterable[str]) -> None:
        """Refuse a request whose Host (or :authority, or absolute-form authority) is not a name the
        proxy is known by: a DNS-rebinding page's requests name the attacker's host."""
        values = list(values)
        bad = next((v for v in values if not self.host_allowed(v)), None) if values else ""
        if bad is not None:
            shown = bad[:100] if bad else "(none)"
            raise RequestRejected(
                403,
                "host_not_allowed",
                f"Host {shown!r} is not a name this proxy is known by (localhost, 127.0.0.1, [::1], "
                "the listen address); if clients reach it under that name (an ingress, Backstage), "
                "add it to allowedHosts under proxysigv4:",
            )


def _listen_name(host: str) -> str | None:
    """A listen address as a Host names it (an IPv6 one in brackets there, bare here)."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host_name(host)


def origin_allowed(origin: str | None, host: str | None, origins: frozenset[str]) -> bool:
    """Whether a request's normalised Origin may make the proxy sign: listed, or the proxy's own
    origin (the request's Host names the same host and port: a front end behind the same name,
    whatever the scheme a TLS-terminating ingress saw)."""
    if origin is None:
        return False
    if ANY_ORIGIN in origins or origin in origins:
        return True
    if origin == NULL_ORIGIN or host is None:
        return False
    own = split_host(host)
    scheme, _, authority = origin.partition("://")
    theirs = split_host(authority)
    if own is None or theirs is None:
        return False
    default = 443 if scheme == "https" else 80
    return own[0] == theirs[0] and (own[1] or default) == (theirs[1] or default)


def check_origin(
    origin_header: str | None, fetch_site: str | None, host: str | None, origins: frozenset[str]
) -> str | None:
    """Refuse what a browser marks as coming from another origin, unless that origin is allowed.
    Returns the normalised allowed Origin (for the CORS answer), or None when the request carries
    no Origin."""
    site = (fetch_site or "").strip().lower()
    if origin_header is None:
        if site in ("cross-site", "same-site"):
            raise RequestRejected(
                403,
                "cross_origin_refused",
                f"a {site} browser request without Origin (Sec-Fetch-Site: {site}) may not use this "
                "proxy: web pages cannot act with your AWS identity",
            )
        return None
    origin = normalise_origin(origin_header)
    if not origin_allowed(origin, host, origins):
        raise RequestRejected(
            403,
            "cross_origin_refused",
            f"Origin {origin_header[:100]!r} may not use this proxy (web pages cannot act with your "
            "AWS identity); if this is your own front end, add it to corsOrigins under proxysigv4: "
            "or under its route",
        )
    return origin


def preflight_headers(
    origin: str,
    requested_headers: str,
    allows_header: Callable[[str], bool],
    bearer: bool,
    private_network: bool,
) -> list[tuple[str, str]]:
    """The proxy's own answer to a CORS preflight from an allowed origin: the requested headers
    that the route's request allowlist passes (and `authorization` when bearer tokens are on)."""
    asked = [h.strip().lower() for h in requested_headers.split(",") if h.strip()]
    allowed = [h for h in dict.fromkeys(asked) if allows_header(h) or (bearer and h == "authorization")]
    headers = [
        ("access-control-allow-origin", origin),
        ("access-control-allow-methods", ALLOWED_METHODS),
        ("access-control-max-age", PREFLIGHT_MAX_AGE),
        ("vary", "Origin"),
    ]
    if allowed:
        headers.insert(2, ("access-control-allow-headers", ", ".join(allowed)))
    if private_network:
        headers.append(("access-control-allow-private-network", "true"))
    return headers


def response_cors_headers(origin: str, names: Iterable[str]) -> list[tuple[str, str]]:
    """What an allowed origin's actual response carries: the origin, Vary, and the response headers
    present that JavaScript may then read (etag, x-amz-*, ...)."""
    exposed = [n for n in dict.fromkeys(n.lower() for n in names) if n not in _SAFELISTED_RESPONSE]
    headers = [("access-control-allow-origin", origin), ("vary", "Origin")]
    if exposed:
        headers.append(("access-control-expose-headers", ", ".join(exposed)))
    return headers


def check_wildcards(origins: Iterable[str], hosts: Iterable[str], authenticated: bool, source: str) -> None:
    """`*` or `null` in corsOrigins, and `*` in allowedHosts, let any page use the proxy: only when
    every request must authenticate."""
    wild = sorted({o for o in origins if o in (ANY_ORIGIN, NULL_ORIGIN)} | ({"*"} & set(hosts)))
    if wild and not authenticated:
        raise InboundError(
            f"{source}: {', '.join(repr(w) for w in wild)} in corsOrigins/allowedHosts would let any web "
            "page (or a sandboxed one, for 'null') make the proxy sign with your AWS identity; list your "
            "front end's origins instead, or require inbound authentication (bearerTokens, or --set "
            "proxyauth=...) so a page cannot use the proxy without a token"
        )
