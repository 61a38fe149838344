"""What the addon's commands do (mitmweb's command bar, the console, POST /commands/<name>):
list the routes with their credentials' state, re-resolve credentials, presign a URL."""

from collections.abc import Sequence

from botocore.credentials import ReadOnlyCredentials
from mitmproxy import exceptions

from .config import Route
from .credentials import CredentialStore
from .presign import PresignError, presign
from .redaction import mask_key_id
from .rejection import RequestRejected
from .state import State


def route_lines(state: State | None, credentials: CredentialStore) -> Sequence[str]:
    """The loaded routes: prefix -> target, service/region, credentials and their state."""
    if state is None:
        return ["proxysigv4: no route table loaded"]
    lines = []
    for route in sorted(state.config.routes, key=lambda r: r.prefix):
        provider = credentials.provider(route)
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


def refresh(state: State | None, credentials: CredentialStore, prefixes: Sequence[str]) -> str:
    """Forget and re-resolve the credentials of the given routes (all when none is given)."""
    if state is None:
        return "proxysigv4: no route table loaded"
    routes = [r for r in state.config.routes if not prefixes or r.prefix in prefixes]
    unknown = sorted(set(prefixes) - {r.prefix for r in routes})
    if unknown:
        raise exceptions.CommandError(f"proxysigv4: no such route: {', '.join(unknown)}")
    for route in routes:
        provider = credentials.provider(route)
        provider.reset()
        provider.start_background_refresh()
    return f"proxysigv4: re-resolving credentials for {', '.join(r.prefix for r in routes)}"


def presigned_url(
    state: State | None, credentials: CredentialStore, method: str, path: str, expires: int
) -> str:
    """A presigned URL for the route `path` matches, with the route's cached credentials (a command
    must not wait on STS: not loaded yet is an error that says to try again)."""
    if state is None:
        raise exceptions.CommandError("proxysigv4: no route table loaded")

    def credentials_for(route: Route) -> ReadOnlyCredentials:
        provider = credentials.provider(route)
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
        _, url = presign(state.table, method, path, credentials_for, expires, state.hosts)
    except (RequestRejected, PresignError) as e:
        raise exceptions.CommandError(f"proxysigv4: {e}") from e
    return url
