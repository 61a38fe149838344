"""Per-route AWS credentials: resolved in a worker thread, cached, refreshed before expiry.

botocore does the work (credential chain, profiles, SSO, assume-role with refresh); this
module only keeps its blocking calls off mitmproxy's event loop and remembers failures.
"""

import asyncio
import functools
import logging
import threading
import time
from dataclasses import dataclass

import botocore.session
from botocore.config import Config as BotocoreConfig
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
    ReadOnlyCredentials,
)

from .config import Route

log = logging.getLogger(__name__)

# Refresh in the background this long before expiry; block for a refresh only after that.
BACKGROUND_REFRESH_BEFORE = 15 * 60
BLOCKING_REFRESH_BEFORE = 5 * 60
# After a failure, answer from the remembered error for this long before trying again.
RETRY_AFTER_FAILURE = 2.0
STS_CLIENT_CONFIG = BotocoreConfig(
    connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"}
)
# botocore sessions are not safe to create clients from concurrently.
_session_lock = threading.Lock()


class CredentialError(Exception):
    """Credentials for a route could not be obtained; the message is safe to show."""


@dataclass(frozen=True)
class CredentialSpec:
    profile: str | None
    role_arn: str | None
    role_session_name: str
    external_id: str | None
    duration_seconds: int | None
    region: str

    @classmethod
    def of(cls, route: Route) -> "CredentialSpec":
        return cls(
            route.profile,
            route.role_arn,
            route.role_session_name,
            route.external_id,
            route.duration_seconds,
            _sts_region(route.region) if route.role_arn else "",  # only STS needs a region
        )

    def describe(self) -> str:
        base = f"profile {self.profile!r}" if self.profile else "default credential chain"
        return f"assume {self.role_arn} from {base}" if self.role_arn else base


def _sts_region(region: str) -> str:
    """STS's region for a route: its region, or for a SigV4a region set its first plain region."""
    plain = [r for r in region.split(",") if "*" not in r]
    return plain[0] if plain else "us-east-1"


def load_credentials(spec: CredentialSpec) -> Credentials:
    """Blocking: build botocore credentials for the spec (does not call STS for roles yet)."""
    with _session_lock:
        session = botocore.session.Session(profile=spec.profile)
        base = session.get_credentials()
    if base is None:
        raise CredentialError("no AWS credentials found")
    if not spec.role_arn:
        return base
    extra_args: dict = {"RoleSessionName": spec.role_session_name}
    if spec.external_id:
        extra_args["ExternalId"] = spec.external_id
    if spec.duration_seconds:
        extra_args["DurationSeconds"] = spec.duration_seconds
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=functools.partial(
            _create_client, session, region_name=spec.region, config=STS_CLIENT_CONFIG
        ),
        source_credentials=base,
        role_arn=spec.role_arn,
        extra_args=extra_args,
        cache={},
    )
    return DeferredRefreshableCredentials(method="assume-role", refresh_using=fetcher.fetch_credentials)


def _create_client(session: botocore.session.Session, service: str, **kwargs):
    with _session_lock:
        return session.create_client(service, **kwargs)


def _describe_error(e: BaseException) -> str:
    return str(e) or type(e).__name__


class CredentialProvider:
    """Credentials for one spec, safe to await from the event loop."""

    def __init__(self, spec: CredentialSpec) -> None:
        self.spec = spec
        self.last_error: str | None = None
        self.access_key_id: str | None = None
        self.method: str | None = None  # botocore's name for where they came from (env, sso, ...)
        self._credentials: Credentials | None = None
        self._frozen: ReadOnlyCredentials | None = None
        self._expiry = float("inf")
        self._failed_at = float("-inf")
        self._lock: asyncio.Lock | None = None
        self._background: asyncio.Task | None = None

    def _resolve(self) -> None:
        """Blocking (runs in a thread): load or refresh through botocore, then cache."""
        if self._credentials is None:
            self._credentials = load_credentials(self.spec)
        frozen = self._credentials.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise CredentialError("empty AWS credentials")
        expiry = getattr(self._credentials, "_expiry_time", None)
        self._expiry = expiry.timestamp() if expiry is not None else float("inf")
        self._frozen = frozen
        self.access_key_id = frozen.access_key
        self.method = getattr(self._credentials, "method", None)
        self.last_error = None

    async def _refresh(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._usable(BACKGROUND_REFRESH_BEFORE):
                return
            try:
                await asyncio.to_thread(self._resolve)
            except Exception as e:
                self.last_error = _describe_error(e)
                self._failed_at = time.monotonic()
                self._credentials = None  # rebuild from the chain next time (env fixed, SSO login)
                log.warning("proxysigv4: credentials (%s) failed: %s", self.spec.describe(), self.last_error)

    def _usable(self, margin: float) -> bool:
        return self._frozen is not None and time.time() < self._expiry - margin

    def start_background_refresh(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.get_running_loop().create_task(self._refresh())

    async def get(self) -> ReadOnlyCredentials:
        """Current credentials; raises CredentialError (safe message) when unavailable."""
        if self._usable(BACKGROUND_REFRESH_BEFORE):
            return self._frozen  # type: ignore[return-value]
        if self._usable(BLOCKING_REFRESH_BEFORE):
            self.start_background_refresh()
            return self._frozen  # type: ignore[return-value]
        if self.last_error and time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE:
            raise CredentialError(f"{self.spec.describe()}: {self.last_error}")
        await self._refresh()
        if not self._usable(0):
            raise CredentialError(f"{self.spec.describe()}: {self.last_error or 'credentials expired'}")
        return self._frozen  # type: ignore[return-value]

    def cached(self) -> ReadOnlyCredentials | None:
        """The credentials already loaded, unless about to expire; None otherwise (never blocks)."""
        return self._frozen if self._usable(BLOCKING_REFRESH_BEFORE) else None

    def reset(self) -> None:
        """Forget everything: the next `get` resolves from scratch (e.g. after `aws sso login`)."""
        self._credentials = None
        self._frozen = None
        self._expiry = float("inf")
        self.access_key_id = None
        self.method = None
        self.last_error = None
        self._failed_at = float("-inf")


class CredentialStore:
    """One provider per distinct credential spec; routes with the same spec share it."""

    def __init__(self) -> None:
        self._providers: dict[CredentialSpec, CredentialProvider] = {}
        # Per route object (the entry holds the route, so its id is not reused): asked once per
        # request, and a spec built and hashed field by field each time costs more than the rest.
        self._by_route: dict[int, tuple[Route, CredentialProvider]] = {}

    def provider(self, route: Route) -> CredentialProvider:
        entry = self._by_route.get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        spec = CredentialSpec.of(route)
        if spec not in self._providers:
            self._providers[spec] = CredentialProvider(spec)
        self._by_route[id(route)] = (route, self._providers[spec])
        return self._providers[spec]

    def known(self, access_key_id: str) -> ReadOnlyCredentials | None:
        """The loaded credentials of any route whose access key id is this one, or None."""
        for provider in self._providers.values():
            frozen = provider.cached()
            if frozen is not None and frozen.access_key == access_key_id:
                return frozen
        return None

    def retain(self, routes: tuple[Route, ...]) -> None:
        """Drop providers no route uses any more (after a config reload)."""
        keep = {CredentialSpec.of(r) for r in routes}
        self._providers = {s: p for s, p in self._providers.items() if s in keep}
        self._by_route = {}
