"""Credential lifetimes and the credential sources of deployments, through a real mitmdump: each
source is a local stand-in that botocore's chain calls as it would call AWS, issuing fresh
credentials on every call; the upstream accepts only issued credentials that have not expired.

Before: anything living under 15 minutes was renewed on every request (a 900 s role session: one
AssumeRole per request; 10-minute SSO credentials: a portal call for most requests)."""

import hashlib
import json
import time
from pathlib import Path

import pytest
import requests

from helpers import ENV_CREDS, proxy_env, route
from peers.credsources import IMDS, ContainerEndpoint, SSOPortal, iso
from peers.fakests import FakeSTS

pytestmark = pytest.mark.e2e
ROLE = "arn:aws:iam::123456789012:role/r"


def env_without_keys(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = proxy_env(tmp_path)
    for name in ENV_CREDS:
        env.pop(name)
    return env | extra


def load(url: str, seconds: float) -> list[int]:
    """Requests one after another on a kept connection for `seconds`: their statuses."""
    statuses = []
    deadline = time.monotonic() + seconds
    with requests.Session() as session:
        while time.monotonic() < deadline:
            statuses.append(session.get(url, timeout=10).status_code)
            time.sleep(0.01)
    return statuses


def refused(statuses: list[int]) -> list[int]:
    return [s for s in statuses if s != 200]


@pytest.mark.parametrize("lifetime", [900, 60])
def test_role_sessions_of_15_minutes_or_less_are_not_renewed_per_request(start_proxy, tmp_path, lifetime):
    with FakeSTS(lifetime=lifetime) as sts, sts.verifier() as upstream:
        routes = {"/role": route(upstream.url, roleArn=ROLE, durationSeconds=900)}
        proxy = start_proxy(routes, proxy_env(tmp_path) | {"AWS_ENDPOINT_URL_STS": sts.url})
        statuses = load(f"{proxy.url}/role/x", 10)
        print(f"{lifetime} s role sessions: {len(statuses)} requests in 10 s, {sts.calls} AssumeRole calls")
        assert refused(statuses) == [] and len(statuses) > 100
        assert 1 <= sts.calls <= 2


def test_credentials_rotate_before_they_expire_with_no_request_refused(start_proxy, tmp_path):
    """8 s role sessions: renewed at half their life; the upstream refuses expired ones."""
    with FakeSTS(lifetime=8) as sts, sts.verifier() as upstream:
        routes = {"/role": route(upstream.url, roleArn=ROLE)}
        proxy = start_proxy(routes, proxy_env(tmp_path) | {"AWS_ENDPOINT_URL_STS": sts.url})
        statuses = load(f"{proxy.url}/role/x", 10)
        used = {
            dict(r.headers).get("Authorization", "").split("Credential=")[1][:16] for r in upstream.received
        }
        print(f"{len(statuses)} requests across {sts.calls} role sessions: {len(refused(statuses))} refused")
        assert refused(statuses) == []
        assert 3 <= sts.calls <= 5 and len(used) >= 3


def sso_profile(tmp_path: Path, portal: SSOPortal, token_valid_for: float = 3600) -> dict[str, str]:
    """A legacy SSO profile and its cached login (as `aws sso login` leaves it), the portal local."""
    start_url = "https://proxysigv4-test.awsapps.com/start"
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile dev]\n"
        f"sso_start_url = {start_url}\nsso_region = us-east-1\n"
        "sso_account_id = 123456789012\nsso_role_name = Developer\nregion = us-east-1\n"
    )
    cache = tmp_path / "home" / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    login = {
        "startUrl": start_url,
        "region": "us-east-1",
        "accessToken": portal.access_token,
        "expiresAt": iso(time.time() + token_valid_for),
    }
    (cache / (hashlib.sha1(start_url.encode()).hexdigest() + ".json")).write_text(json.dumps(login))
    return env_without_keys(
        tmp_path,
        AWS_CONFIG_FILE=str(config),
        HOME=str(tmp_path / "home"),
        AWS_ENDPOINT_URL_SSO=portal.url,
    )


def test_ten_minute_sso_credentials_are_fetched_once_for_200_requests(start_proxy, tmp_path):
    with SSOPortal(lifetime=600, access_token="sso-access-token") as portal, portal.verifier() as upstream:
        proxy = start_proxy({"/sso": route(upstream.url, profile="dev")}, sso_profile(tmp_path, portal))
        statuses = []
        with requests.Session() as session:
            for _ in range(200):
                statuses.append(session.get(f"{proxy.url}/sso/x", timeout=10).status_code)
        print(f"SSO, 10-minute credentials: 200 requests, {portal.calls} portal calls")
        assert refused(statuses) == []
        assert portal.calls == 1


def test_valid_sso_credentials_stay_in_use_when_the_portal_refuses_renewal(start_proxy, tmp_path):
    """The SSO session ended while the role credentials still have life: renewals fail (401), and
    every request is still signed with the held credentials; the health listener says so."""
    with SSOPortal(lifetime=16, access_token="sso-access-token") as portal, portal.verifier() as upstream:
        env = sso_profile(tmp_path, portal)
        health = f"http://127.0.0.1:{(port := free_health_port())}"
        proxy = start_proxy(
            {"/sso": route(upstream.url, profile="dev")},
            env,
            args=("--set", f"proxysigv4_health_port={port}"),
        )
        assert load(f"{proxy.url}/sso/x", 0.5) and portal.calls == 1
        portal.fail = True  # renewal is due at 8 s of the 16 s life
        statuses = load(f"{proxy.url}/sso/x", 9)
        ready = requests.get(f"{health}/readyz", timeout=5)
        print(
            f"portal refusing: {len(statuses)} requests, {len(refused(statuses))} refused, {portal.calls} calls"
        )
        assert refused(statuses) == []
        assert 2 <= portal.calls <= 5  # retried with back-off, not per request
        assert ready.status_code == 200
        assert (
            "SSO session associated with this profile has expired"
            in ready.json()["routes"]["/sso"]["renewal_failing"]
        )
        assert "credentials (profile 'dev') failed (the credentials held stay in use" in proxy.log()


def free_health_port() -> int:
    from peers.processes import free_port

    return free_port()


def test_irsa_web_identity_token_file_is_reread_at_each_renewal(start_proxy, tmp_path):
    """EKS IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE -> AssumeRoleWithWebIdentity; the
    kubelet replaces the token file, and each renewal sends the file's current token."""
    token_file = tmp_path / "token"
    token_file.write_text("projected-token-1")
    with FakeSTS(lifetime=6) as sts, sts.verifier() as upstream:
        env = env_without_keys(
            tmp_path,
            AWS_ROLE_ARN=ROLE,
            AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
            AWS_ROLE_SESSION_NAME="proxysigv4",
            AWS_ENDPOINT_URL_STS=sts.url,
        )
        proxy = start_proxy({"/irsa": route(upstream.url)}, env)
        first = load(f"{proxy.url}/irsa/x", 1)
        token_file.write_text("projected-token-2")
        statuses = first + load(f"{proxy.url}/irsa/x", 8)
        print(
            f"IRSA: {len(statuses)} requests across {sts.calls} web identity sessions: {sts.web_identity_tokens}"
        )
        assert refused(statuses) == []
        assert set(sts.actions) == {"AssumeRoleWithWebIdentity"}
        assert sts.web_identity_tokens[0] == "projected-token-1"
        assert sts.web_identity_tokens[-1] == "projected-token-2" and 3 <= sts.calls <= 6


def test_container_credentials_with_an_authorization_token_file(start_proxy, tmp_path):
    """ECS / EKS Pod Identity: AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
    (re-read at each renewal, as the agent's token rotates)."""
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-token-1")
    with ContainerEndpoint(lifetime=6, token="pod-token-1") as agent, agent.verifier() as upstream:
        env = env_without_keys(
            tmp_path,
            AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{agent.url}/v1/credentials",
            AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file),
        )
        proxy = start_proxy({"/pod": route(upstream.url)}, env)
        first = load(f"{proxy.url}/pod/x", 1)
        token_file.write_text("pod-token-2")
        agent.token = "pod-token-2"
        statuses = first + load(f"{proxy.url}/pod/x", 8)
        print(
            f"container: {len(statuses)} requests, {len(agent.issued)} credential sets: {agent.authorizations}"
        )
        assert refused(statuses) == []
        assert agent.authorizations[0] == "pod-token-1" and agent.authorizations[-1] == "pod-token-2"
        assert 3 <= len(agent.issued) <= 6 and set(agent.authorizations) == {"pod-token-1", "pod-token-2"}


def test_ec2_instance_metadata_imdsv2(start_proxy, tmp_path):
    """EC2 IMDSv2: a session token first (PUT), then the role and its credentials with it."""
    with IMDS(lifetime=6 * 3600) as imds, imds.verifier() as upstream:
        env = env_without_keys(tmp_path, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url + "/")
        env.pop("AWS_EC2_METADATA_DISABLED")
        proxy = start_proxy({"/ec2": route(upstream.url)}, env)
        statuses = load(f"{proxy.url}/ec2/x", 3)
        print(f"IMDSv2: {len(statuses)} requests, calls {imds.calls}")
        assert refused(statuses) == [] and len(imds.issued) == 1
        assert imds.calls[0][:2] == ("PUT", "/latest/api/token")
        assert all(with_token for method, _, with_token in imds.calls if method == "GET")
