"""Who may use the proxy: inbound bearer tokens, and the start-up rule for listen addresses.

Whoever reaches the proxy signs requests with the developer's AWS identity, so a proxy that
listens beyond loopback must authenticate its clients (or be told explicitly not to).
"""

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

TOKEN_PREFIX = "sha256:"
MIN_TOKEN_LENGTH = 16


class InboundError(ValueError):
    """A configuration that would expose the proxy; the message says how to fix it."""


def parse_token(value: object, where: str) -> bytes:
    """A token's SHA-256 digest: from `sha256:<hex>` or from the token itself (e.g. `${TOKEN}`)."""
    if not isinstance(value, str) or not value:
        raise InboundError(f"{where}: expected a token string or sha256:<64 hex digits>")
    if value.startswith(TOKEN_PREFIX):
        digest = value.removeprefix(TOKEN_PREFIX).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InboundError(f"{where}: a hashed token is sha256: followed by 64 hex digits")
        return bytes.fromhex(digest)
    if len(value) < MIN_TOKEN_LENGTH:
        raise InboundError(f"{where}: a bearer token must be at least {MIN_TOKEN_LENGTH} characters")
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True)
class BearerTokens:
    digests: tuple[bytes, ...]

    def accepts(self, authorization: str | None) -> bool:
        """Constant-time check of `Authorization: Bearer <token>` against every configured digest."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        presented = hashlib.sha256(token.strip().encode()).digest()
        ok = False
        for digest in self.digests:
            ok |= hmac.compare_digest(presented, digest)
        return ok and scheme.lower() == "bearer" and bool(token.strip())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # all interfaces ("") or a host name: not provably loopback


def require_auth(
    allow_unauthenticated: bool | None,
    listen_hosts: Iterable[str],
    has_proxyauth: bool,
    has_tokens: bool,
    source: str,
) -> bool:
    """Whether requests must authenticate; raises InboundError for an unsafe or impossible setup."""
    exposed = sorted({h or "0.0.0.0 (all interfaces)" for h in listen_hosts if not is_loopback(h)})
    can_authenticate = has_proxyauth or has_tokens
    if allow_unauthenticated is False and not can_authenticate:
        raise InboundError(
            f"{source}: allowUnauthenticatedRequests is false but no inbound authentication is "
            "configured; add bearerTokens: [...] under proxysigv4:, or start with --set "
            "proxyauth=user:pass (or an htpasswd file), or set allowUnauthenticatedRequests: true"
        )
    if allow_unauthenticated is None and exposed and not can_authenticate:
        raise InboundError(
            f"{source}: the proxy listens on {', '.join(exposed)}, where anyone who can reach it "
            "would sign requests with your AWS credentials; listen on 127.0.0.1 (--listen-host "
            "127.0.0.1), or configure inbound authentication (bearerTokens, or --set proxyauth=...), "
            "or set allowUnauthenticatedRequests: true to accept this explicitly"
        )
    if allow_unauthenticated is True:
        return False
    return can_authenticate
