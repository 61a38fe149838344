"""CredentialProvider: cached, refreshed in the background before expiry, one refresh at a
time, failures remembered briefly and then retried."""

import asyncio
import datetime

import pytest
from botocore.credentials import ReadOnlyCredentials

from proxysigv4_core import credentials as cred_module
from proxysigv4_core.credentials import CredentialError, CredentialProvider, CredentialSpec

SPEC = CredentialSpec(None, "arn:aws:iam::123456789012:role/r", "s", None, None, "us-east-1")


class FakeRefreshable:
    """Stands in for botocore's refreshable credentials: counts fetches, expiry is settable."""

    def __init__(self, clock, lifetime):
        self.clock, self.lifetime, self.fetches, self.fail = clock, lifetime, 0, None
        self._expiry_time = None

    def get_frozen_credentials(self):
        if self._expiry_time is None or self._expiry_time.timestamp() - self.clock[0] < 15 * 60:
            if self.fail:
                raise self.fail
            self.fetches += 1
            self._expiry_time = datetime.datetime.fromtimestamp(self.clock[0] + self.lifetime, datetime.UTC)
        return ReadOnlyCredentials(f"ASIA{self.fetches:04d}", "secret", "token")


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(cred_module.time, "time", lambda: now[0])
    return now


def provider_with(fake, monkeypatch):
    monkeypatch.setattr(cred_module, "load_credentials", lambda spec: fake)
    return CredentialProvider(SPEC)


def test_cached_until_the_refresh_window_then_refreshed_once(clock, monkeypatch):
    fake = FakeRefreshable(clock, lifetime=3600)
    p = provider_with(fake, monkeypatch)

    async def main():
        results = await asyncio.gather(*(p.get() for _ in range(20)))
        assert {r.access_key for r in results} == {"ASIA0001"} and fake.fetches == 1
        clock[0] += 30 * 60  # 30 min left: still fresh
        assert (await p.get()).access_key == "ASIA0001" and fake.fetches == 1
        clock[0] += 20 * 60  # 10 min left: served from cache, refreshed in the background
        assert (await p.get()).access_key == "ASIA0001"
        await asyncio.sleep(0.1)
        assert fake.fetches == 2
        assert (await p.get()).access_key == "ASIA0002"

    asyncio.run(main())


def test_expired_credentials_wait_for_the_refresh(clock, monkeypatch):
    fake = FakeRefreshable(clock, lifetime=3600)
    p = provider_with(fake, monkeypatch)

    async def main():
        await p.get()
        clock[0] += 58 * 60  # 2 min left: below the blocking threshold
        assert (await p.get()).access_key == "ASIA0002"

    asyncio.run(main())


def test_failure_is_remembered_briefly_then_retried(clock, monkeypatch):
    fake = FakeRefreshable(clock, lifetime=3600)
    fake.fail = RuntimeError("AccessDenied: not allowed")
    p = provider_with(fake, monkeypatch)
    mono = [0.0]
    monkeypatch.setattr(cred_module.time, "monotonic", lambda: mono[0])

    async def main():
        with pytest.raises(CredentialError, match="AccessDenied"):
            await p.get()
        fake.fail = None
        with pytest.raises(CredentialError, match="AccessDenied"):
            await p.get()  # within the retry delay: the remembered error
        mono[0] += cred_module.RETRY_AFTER_FAILURE + 0.1
        assert (await p.get()).access_key == "ASIA0001"
        assert p.last_error is None

    asyncio.run(main())


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
