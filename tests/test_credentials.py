"""CredentialProvider: cached, refreshed in the background before expiry, one refresh at a
time, failures remembered briefly and then retried."""

import asyncio
import datetime
import types

import pytest
from botocore.credentials import DeferredRefreshableCredentials

from proxysigv4_core import credentials as cred_module
from proxysigv4_core.credentials import CredentialError, CredentialProvider, CredentialSpec

SPEC = CredentialSpec(None, "arn:aws:iam::123456789012:role/r", "s", None, None, "us-east-1")


class Source:
    """A credential source as botocore's chain sees it: each load builds a new botocore
    DeferredRefreshableCredentials (what assume-role, SSO, web identity and credential_process
    give) whose fetches are counted here; `fail` makes fetches fail."""

    def __init__(self, clock, lifetime):
        self.clock, self.lifetime, self.fetches, self.fail = clock, lifetime, 0, None

    def _fetch(self):
        if self.fail:
            raise self.fail
        self.fetches += 1
        expiry = datetime.datetime.fromtimestamp(self.clock[0] + self.lifetime, datetime.UTC)
        return {
            "access_key": f"ASIA{self.fetches:04d}",
            "secret_key": "secret",
            "token": "token",
            "expiry_time": expiry.isoformat(),
        }

    def load(self, spec):
        return DeferredRefreshableCredentials(
            self._fetch,
            "assume-role",
            time_fetcher=lambda: datetime.datetime.fromtimestamp(self.clock[0], datetime.UTC),
        )


@pytest.fixture
def clock(monkeypatch):
    """The credentials module's clocks (wall and monotonic), moved by the test; asyncio keeps its own."""
    now = [1_000_000.0]
    monkeypatch.setattr(
        cred_module, "time", types.SimpleNamespace(time=lambda: now[0], monotonic=lambda: now[0])
    )
    return now


def provider_with(source, monkeypatch):
    monkeypatch.setattr(cred_module, "load_credentials", source.load)
    return CredentialProvider(SPEC)


async def settle(provider=None):
    """Let a background renewal (a thread) finish."""
    await asyncio.sleep(0)
    task = provider._background if provider is not None else None
    if task is not None:
        await task


def test_cached_until_the_refresh_window_then_refreshed_once(clock, monkeypatch):
    source = Source(clock, lifetime=3600)
    p = provider_with(source, monkeypatch)

    async def main():
        results = await asyncio.gather(*(p.get() for _ in range(20)))
        assert {r.access_key for r in results} == {"ASIA0001"} and source.fetches == 1
        clock[0] += 30 * 60  # 30 min left: still fresh
        assert (await p.get()).access_key == "ASIA0001" and source.fetches == 1
        clock[0] += 20 * 60  # 10 min left: served from cache, refreshed in the background
        assert (await p.get()).access_key == "ASIA0001"
        await settle(p)
        assert source.fetches == 2
        assert (await p.get()).access_key == "ASIA0002"

    asyncio.run(main())


@pytest.mark.parametrize("lifetime", [60, 600, 900, 1200, 3600])
def test_short_lived_credentials_are_renewed_once_per_half_lifetime(clock, monkeypatch, lifetime):
    """Before: botocore re-fetched anything with under 15 minutes left on every read (900 s role
    sessions: one AssumeRole per request). Now at most one renewal per half lifetime, always before
    expiry, and no request goes without credentials."""
    source = Source(clock, lifetime=lifetime)
    p = provider_with(source, monkeypatch)
    fetched_at = []

    async def main():
        step = lifetime / 200
        for _ in range(1000):  # five lifetimes, 200 requests per lifetime
            before = source.fetches
            credentials = await p.get()
            await settle(p)
            if source.fetches != before:
                fetched_at.append(clock[0])
            assert credentials.access_key == f"ASIA{source.fetches - (source.fetches != before):04d}" or (
                credentials.access_key == f"ASIA{source.fetches:04d}"
            )
            clock[0] += step

    asyncio.run(main())
    assert source.fetches <= 5 * 2 + 1
    assert source.fetches >= 5  # renewed before each expiry
    gaps = [b - a for a, b in zip(fetched_at, fetched_at[1:], strict=False)]
    assert all(g >= min(lifetime / 2, lifetime - 15 * 60) - 1 for g in gaps), gaps


def test_expired_credentials_wait_for_the_refresh(clock, monkeypatch):
    source = Source(clock, lifetime=3600)
    p = provider_with(source, monkeypatch)

    async def main():
        await p.get()
        clock[0] += 3600 - 2  # 2 s left: within the expiry safety, a renewal is awaited
        assert (await p.get()).access_key == "ASIA0002"

    asyncio.run(main())


def test_valid_credentials_stay_in_use_while_a_renewal_fails(clock, monkeypatch):
    """4 minutes of validity left and the source failing (an SSO session ended): every request is
    signed with the held credentials until they expire; attempts back off; then the error."""
    source = Source(clock, lifetime=600)
    p = provider_with(source, monkeypatch)
    results = []
    p.on_refresh = results.append

    async def main():
        await p.get()
        source.fail = RuntimeError("Token has expired and refresh failed")
        clock[0] += 600 - 240
        attempts = 0
        while clock[0] < 1_000_000 + 600 - cred_module.EXPIRY_SAFETY - 1:
            assert (await p.get()).access_key == "ASIA0001"
            await settle(p)
            clock[0] += 0.5
        attempts = results.count("failure")
        assert 3 <= attempts <= 12, attempts  # backed off: 2, 4, 8, ... 60 s, not every request
        assert "Token has expired" in p.last_error and p.state().usable
        clock[0] += 2
        assert not p.state().usable
        with pytest.raises(CredentialError, match="Token has expired"):
            await p.get()
        source.fail = None
        clock[0] += cred_module.MAX_RETRY_AFTER_FAILURE
        assert (await p.get()).access_key == "ASIA0002"
        assert results[-1] == "success" and p.last_error is None

    asyncio.run(main())


def test_failure_is_remembered_briefly_then_retried(clock, monkeypatch):
    source = Source(clock, lifetime=3600)
    source.fail = RuntimeError("AccessDenied: not allowed")
    p = provider_with(source, monkeypatch)

    async def main():
        with pytest.raises(CredentialError, match="AccessDenied"):
            await p.get()
        source.fail = None
        with pytest.raises(CredentialError, match="AccessDenied"):
            await p.get()  # within the retry delay: the remembered error
        clock[0] += cred_module.RETRY_AFTER_FAILURE + 0.1
        assert (await p.get()).access_key == "ASIA0001"
        assert p.last_error is None

    asyncio.run(main())


@pytest.mark.parametrize(
    ("lifetime", "margin"), [(60, 30), (600, 300), (900, 450), (1800, 900), (43200, 900)]
)
def test_refresh_margin_fits_the_lifetime(lifetime, margin):
    assert cred_module.refresh_margin(lifetime) == margin


def _routes(spec: dict) -> tuple:
    from proxysigv4_core.config import parse_config

    return parse_config({"proxysigv4": spec}, "test.yaml").routes


def test_store_shares_a_provider_between_routes_with_the_same_credentials_and_across_reloads():
    from proxysigv4_core.credentials import CredentialStore

    role = "arn:aws:iam::123456789012:role/r"
    first = _routes(
        {
            "/a": "https://a.execute-api.us-east-1.amazonaws.com",
            "/b": "https://b.execute-api.us-east-1.amazonaws.com",
            "/r": {"target": "https://r.execute-api.us-east-1.amazonaws.com", "roleArn": role},
        }
    )
    store = CredentialStore()
    a, b, r = (store.provider(route) for route in first)
    assert a is b and a is not r
    assert store.provider(first[2]) is r  # asked again (per request): the same provider
    # A reload builds new route objects: same credentials, same provider (its credentials kept).
    second = _routes({"/r2": {"target": "https://x.execute-api.us-east-1.amazonaws.com", "roleArn": role}})
    store.retain(second)
    assert store.provider(second[0]) is r
    # The default chain is no longer used by any route: dropped, and rebuilt when needed again.
    assert store.provider(first[0]) is not a
    # Another role is another provider.
    other = _routes(
        {"/o": {"target": "https://o.execute-api.us-east-1.amazonaws.com", "roleArn": role + "2"}}
    )
    assert store.provider(other[0]) is not r
