"""Per-route AWS credentials: resolved in a worker thread, cached, renewed before expiry.

botocore does the work (credential chain: profiles, SSO, assume-role, web identity, container,
IMDS); this module decides when to renew (once per half lifetime at most), keeps botocore's
blocking calls off mitmproxy's event loop, and keeps valid credentials in use while a renewal fails.
"""

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config as BotocoreConfig
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)

from .config import Route
from .identity import Intended, intended_identity

log = logging.getLogger("proxysigv4.credentials")

# Renew this long before expiry (or at half the lifetime when shorter: refresh_margin).
REFRESH_BEFORE = 15 * 60
# Credentials are used until this close to their expiry: a request signed then still arrives in time.
EXPIRY_SAFETY = 5.0
# After a failure, no new attempt for this long (doubling up to the maximum while failures go on).
RETRY_AFTER_FAILURE = 2.0
MAX_RETRY_AFTER_FAILURE = 60.0
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
    _only_when_empty(base)  # the source of the role session is fetched once per renewal too
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


def intended_of(spec: CredentialSpec) -> Intended:
    """Blocking: who the spec's credentials are meant to be (its role, or its profile's role)."""
    if spec.role_arn:
        return intended_identity(spec.role_arn, spec.role_session_name, spec.profile, {})
    with _session_lock:
        try:
            config = botocore.session.Session(profile=spec.profile).get_scoped_config()
        except Exception:  # a profile that does not exist: the credentials failed already
            config = {}
    return intended_identity(None, "", spec.profile, config)


def _create_client(session: botocore.session.Session, service: str, **kwargs: Any) -> BaseClient:
    with _session_lock:
        return session.create_client(service, **kwargs)


def _describe_error(e: BaseException) -> str:
    return str(e) or type(e).__name__


def refresh_margin(lifetime: float) -> float:
    """How long before expiry credentials are renewed: 15 minutes, or half their lifetime when
    that is shorter (credentials of 15 minutes or less would otherwise be "about to expire" from
    birth and fetched again on every request). At most one refresh per half lifetime."""
    return min(REFRESH_BEFORE, lifetime / 2)


def _fetch_once(credentials: Credentials) -> ReadOnlyCredentials:
    """The credentials' values, fetching from their source at most once.

    botocore re-fetches refreshable credentials on every read while less than 15 minutes of their
    life is left: for a 15-minute role session or a 10-minute SSO one that is every read. This
    provider decides when to renew (refresh_margin) and builds a new object each time, so the
    object's own windows are set to zero: it fetches only when it holds nothing yet.
    Relies on: botocore's RefreshableCredentials reading `_advisory_refresh_timeout` and
    `_mandatory_refresh_timeout` from the instance (botocore 1.34 to 1.44)."""
    return _only_when_empty(credentials).get_frozen_credentials()


def _only_when_empty(credentials: Credentials) -> Credentials:
    if isinstance(credentials, RefreshableCredentials):
        # botocore sets both in RefreshableCredentials.__init__; botocore-stubs does not declare them
        credentials._advisory_refresh_timeout = 0  # type: ignore[attr-defined]
        credentials._mandatory_refresh_timeout = 0  # type: ignore[attr-defined]
    return credentials


@dataclass(frozen=True)
class CredentialState:
    """What a provider holds now, for readiness, metrics and the routes command (no secret)."""

    usable: bool  # valid credentials are held (maybe while a renewal fails)
    access_key_id: str | None
    method: str | None
    expires_at: float | None  # epoch seconds; None for credentials that do not expire
    last_error: str | None


class CredentialProvider:
    """Credentials for one spec, safe to await from the event loop.

    Renewed in the background `refresh_margin` before they expire; while a renewal fails, the
    credentials held are used until they really expire (a warning, and `last_error` set)."""

    def __init__(self, spec: CredentialSpec, on_refresh: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.on_refresh = on_refresh  # called with "success" or "failure" after each renewal
        self.last_error: str | None = None
        self.access_key_id: str | None = None
        self.method: str | None = None  # botocore's name for where they came from (env, sso, ...)
        self.intended: Intended = {}  # who they are meant to be (the denial diagnosis compares)
        self._frozen: ReadOnlyCredentials | None = None
        self._expiry = float("inf")
        self._margin: float = REFRESH_BEFORE
        self._safety = EXPIRY_SAFETY
        self._retry_at = float("-inf")  # monotonic: no new attempt before this after a failure
        self._backoff = RETRY_AFTER_FAILURE
        self._lock: asyncio.Lock | None = None
        self._background: asyncio.Task | None = None

    def _resolve(self) -> None:
        """Blocking (runs in a thread): resolve through botocore's chain afresh, then cache."""
        fetched_at = time.time()
        credentials = load_credentials(self.spec)
        frozen = _fetch_once(credentials)
        if not frozen.access_key or not frozen.secret_key:
            raise CredentialError("empty AWS credentials")
        expiry = getattr(credentials, "_expiry_time", None)  # botocore keeps it there (no accessor)
        self._expiry = expiry.timestamp() if expiry is not None else float("inf")
        lifetime = self._expiry - fetched_at
        self._margin = refresh_margin(lifetime)
        self._safety = min(EXPIRY_SAFETY, lifetime / 4)
        self._frozen = frozen
        self.access_key_id = frozen.access_key
        self.method = getattr(credentials, "method", None)
        self.intended = intended_of(self.spec)
        self.last_error = None
        self._backoff = RETRY_AFTER_FAILURE

    async def _refresh(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._fresh() or time.monotonic() < self._retry_at:
                return
            try:
                await asyncio.to_thread(self._resolve)
            except Exception as e:
                self._failed(e)
            else:
                self._notify("success")

    def _failed(self, e: BaseException) -> None:
        self.last_error = _describe_error(e)
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_RETRY_AFTER_FAILURE)
        held = " (the credentials held stay in use until they expire)" if self._valid() else ""
        log.warning("proxysigv4: credentials (%s) failed%s: %s", self.spec.describe(), held, self.last_error)
        self._notify("failure")

    def _notify(self, result: str) -> None:
        if self.on_refresh is not None:
            self.on_refresh(result)

    def _fresh(self) -> bool:
        return self._frozen is not None and time.time() < self._expiry - self._margin

    def _valid(self) -> bool:
        return self._frozen is not None and time.time() < self._expiry - self._safety

    def start_background_refresh(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.get_running_loop().create_task(self._refresh())

    def maintain(self) -> None:
        """Renew in the background when due (called periodically, so that credentials rotate and
        readiness is known even without requests)."""
        if not self._fresh() and time.monotonic() >= self._retry_at:
            self.start_background_refresh()

    async def get(self) -> ReadOnlyCredentials:
        """Current credentials; raises CredentialError (safe message) when unavailable."""
        frozen = self._frozen
        if frozen is not None and self._fresh():
            return frozen
        if frozen is not None and self._valid():
            self.maintain()
            return frozen
        if self.last_error and time.monotonic() < self._retry_at:
            raise CredentialError(f"{self.spec.describe()}: {self.last_error}")
        await self._refresh()
        frozen = self._frozen
        if frozen is None or not self._valid():
            raise CredentialError(f"{self.spec.describe()}: {self.last_error or 'credentials expired'}")
        return frozen

    def cached(self) -> ReadOnlyCredentials | None:
        """The credentials already loaded and still valid; None otherwise (never blocks)."""
        return self._frozen if self._valid() else None

    def state(self) -> CredentialState:
        expires = None if self._expiry == float("inf") else self._expiry
        return CredentialState(self._valid(), self.access_key_id, self.method, expires, self.last_error)

    def reset(self) -> None:
        """Forget everything: the next `get` resolves from scratch (e.g. after `aws sso login`)."""
        self._frozen = None
        self._expiry = float("inf")
        self.access_key_id = None
        self.method = None
        self.last_error = None
        self._retry_at = float("-inf")
        self._backoff = RETRY_AFTER_FAILURE


class CredentialStore:
    """One provider per distinct credential spec; routes with the same spec share it."""

    def __init__(self, on_refresh: Callable[[CredentialSpec, str], None] | None = None) -> None:
        self.on_refresh = on_refresh  # (spec, "success" | "failure") after each renewal
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
            self._providers[spec] = CredentialProvider(spec, functools.partial(self._refreshed, spec))
        self._by_route[id(route)] = (route, self._providers[spec])
        return self._providers[spec]

    def _refreshed(self, spec: CredentialSpec, result: str) -> None:
        if self.on_refresh is not None:
            self.on_refresh(spec, result)

    def providers(self) -> list[CredentialProvider]:
        return list(self._providers.values())

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
