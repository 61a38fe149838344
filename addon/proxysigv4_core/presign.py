"""Presigned URLs for a route's target: a signed link to hand to a browser or a colleague.

The client path goes through the same routing and path hardening as a proxied request; botocore's
query-string signers (S3SigV4QueryAuth for S3, SigV4QueryAuth otherwise) sign the result.
"""

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.auth import S3SigV4QueryAuth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from .config import Route
from .routing import HostTable, RouteTable, Upstream, resolve, resolve_host
from .signers import RECORD_KEY, Recording

DEFAULT_EXPIRES = 3600
MAX_EXPIRES = 7 * 24 * 3600  # SigV4's limit for query-string authentication
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})


class PresignError(ValueError):
    """The request cannot be presigned; the message is safe to show."""


def _check(method: str, expires: int) -> str:
    method = method.upper()
    if method not in METHODS:
        raise PresignError(f"unknown HTTP method {method!r}")
    if not 1 <= expires <= MAX_EXPIRES:
        raise PresignError(f"expires must be between 1 and {MAX_EXPIRES} seconds (7 days), not {expires}")
    return method


def presign(
    table: RouteTable,
    method: str,
    client_target: str,
    credentials_for: Callable[[Route], ReadOnlyCredentials],
    expires: int = DEFAULT_EXPIRES,
    hosts: HostTable | None = None,
) -> tuple[Upstream, str]:
    """Route `client_target` (path and query, as a client would send it to the proxy; or a full
    URL, for a host route) and presign it, without a body (an empty payload's hash, or
    UNSIGNED-PAYLOAD for S3), with the credentials `credentials_for(route)` returns. Method and
    expiry are checked before anything is routed."""
    method = _check(method, expires)
    upstream = (
        _host_upstream(hosts, client_target) if "://" in client_target else resolve(table, client_target)
    )
    route = upstream.route
    if route.signing_algorithm != "sigv4":
        raise PresignError(
            f"route {route.prefix} signs with {route.signing_algorithm}: presigned URLs are SigV4 only"
        )
    credentials: ReadOnlyCredentials = credentials_for(route)
    signed = presign_url(method, upstream.url, credentials, route.service, route.region, route.is_s3, expires)
    return upstream, signed.url


class _QueryAuth(Recording, SigV4QueryAuth):
    pass


class _S3QueryAuth(Recording, S3SigV4QueryAuth):
    pass


@dataclass(frozen=True)
class PresignedRequest:
    url: str
    canonical_request: str
    string_to_sign: str


def presign_url(
    method: str,
    url: str,
    credentials: ReadOnlyCredentials,
    service: str,
    region: str,
    is_s3: bool,
    expires: int,
) -> PresignedRequest:
    """botocore's query-string signer (S3SigV4QueryAuth for S3, SigV4QueryAuth otherwise) on a
    request without body: the URL carries the signature, valid `expires` seconds."""
    request = AWSRequest(method=method, url=url)
    signer = _S3QueryAuth if is_s3 else _QueryAuth
    signer(credentials, service, region, expires=expires).add_auth(request)
    canonical_request, string_to_sign = request.context[RECORD_KEY]
    if request.url is None:  # AWSRequest's url is optional; the signer only rewrites the one given
        raise ValueError(f"botocore's query signer returned no URL for {url}")
    return PresignedRequest(request.url, canonical_request, string_to_sign)


def _host_upstream(hosts: HostTable | None, url: str) -> Upstream:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise PresignError(f"{url!r} is not a URL: {e}") from e
    target = parts.path or "/"
    route = hosts.match(parts.scheme, parts.hostname or "", port, target) if hosts else None
    if route is None:
        raise PresignError(f"no host route matches {url!r}")
    query = f"?{parts.query}" if parts.query else ""
    return resolve_host(route, parts.scheme, parts.hostname or "", port, target + query)
