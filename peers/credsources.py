"""Local stand-ins for the credential sources of deployments, as botocore's chain calls them: the
IAM Identity Center (SSO) portal, the ECS / EKS Pod Identity container endpoint and EC2's instance
metadata service (IMDSv2). Each issues fresh credentials of a set lifetime on every call; an
upstream from `verifier()` accepts requests signed with any issued set that has not expired."""

import json
import threading
import time
from collections.abc import Mapping
from typing import Self
from urllib.parse import urlsplit

from .sigv4_verify import Secrets
from .upstream import Answer, Received, Upstream, verify_then_answer


class Issuer:
    """Issues credentials (`lifetime` seconds) and remembers them for the verifier."""

    def __init__(self, lifetime: float, prefix: str) -> None:
        self.lifetime, self.prefix = lifetime, prefix
        self.issued: dict[str, tuple[str, str, float]] = {}  # key -> (secret, token, expiry)
        self.fail = False  # answer every call with the source's refusal
        self._lock = threading.Lock()
        self.upstream = Upstream(self._answer)

    @property
    def url(self) -> str:
        return self.upstream.url

    def __enter__(self) -> Self:
        self.upstream.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.upstream.__exit__(*exc)

    def issue(self) -> tuple[str, str, str, float]:
        with self._lock:
            n = len(self.issued) + 1
            key, secret, token = (
                f"{self.prefix}{n:05d}",
                f"{self.prefix}/secret/{n}",
                f"{self.prefix}-token-{n}",
            )
            expiry = time.time() + self.lifetime
            self.issued[key] = (secret, token, expiry)
        return key, secret, token, expiry

    def secrets(self) -> Secrets:
        now = time.time()
        return {k: (s, t) for k, (s, t, exp) in self.issued.items() if exp > now}

    def verifier(self) -> Upstream:
        return Upstream(verify_then_answer(secrets=self.secrets))

    def _answer(self, received: Received) -> Answer:
        raise NotImplementedError


def _json(status: int, body: Mapping[str, object], *headers: tuple[str, str]) -> Answer:
    return status, [("content-type", "application/json"), *headers], json.dumps(body).encode()


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class SSOPortal(Issuer):
    """GetRoleCredentials (GET /federation/credentials) for the bearer token of a cached SSO login."""

    def __init__(self, lifetime: float, access_token: str) -> None:
        super().__init__(lifetime, "ASIASSO")
        self.access_token = access_token
        self.calls = 0

    def _answer(self, received: Received) -> Answer:
        self.calls += 1
        headers = {k.lower(): v for k, v in received.headers}
        if self.fail or headers.get("x-amz-sso_bearer_token") != self.access_token:
            error = ("x-amzn-errortype", "UnauthorizedException")
            return _json(401, {"message": "Session token not found or invalid"}, error)
        key, secret, token, expiry = self.issue()
        credentials = {
            "accessKeyId": key,
            "secretAccessKey": secret,
            "sessionToken": token,
            "expiration": int(expiry * 1000),
        }
        return _json(200, {"roleCredentials": credentials})


class ContainerEndpoint(Issuer):
    """The ECS / EKS Pod Identity agent: credentials for the Authorization token it expects."""

    def __init__(self, lifetime: float, token: str) -> None:
        super().__init__(lifetime, "ASIACONT")
        self.token = token
        self.authorizations: list[str] = []

    def _answer(self, received: Received) -> Answer:
        authorization = next((v for k, v in received.headers if k.lower() == "authorization"), "")
        self.authorizations.append(authorization)
        if self.fail or authorization != self.token:
            return _json(401, {"message": "invalid authorization token"})
        key, secret, token, expiry = self.issue()
        return _json(
            200, {"AccessKeyId": key, "SecretAccessKey": secret, "Token": token, "Expiration": iso(expiry)}
        )


class IMDS(Issuer):
    """EC2's instance metadata service, IMDSv2 only: a session token from PUT /latest/api/token,
    then the role's name and credentials, each asked with that token (401 without)."""

    ROLE = "proxysigv4-instance-role"

    def __init__(self, lifetime: float) -> None:
        super().__init__(lifetime, "ASIAIMDS")
        self.calls: list[tuple[str, str, bool]] = []  # (method, path, with a valid token)
        self._tokens: set[str] = set()

    def _answer(self, received: Received) -> Answer:
        headers = {k.lower(): v for k, v in received.headers}
        path = urlsplit(received.target).path
        with_token = headers.get("x-aws-ec2-metadata-token") in self._tokens
        self.calls.append((received.method, path, with_token))
        if received.method == "PUT" and path == "/latest/api/token":
            if "x-aws-ec2-metadata-token-ttl-seconds" not in headers:
                return 400, [], b""
            token = f"imds-session-{len(self._tokens) + 1}"
            self._tokens.add(token)
            return 200, [("content-type", "text/plain")], token.encode()
        if not with_token:
            return 401, [], b""
        base = "/latest/meta-data/iam/security-credentials/"
        if path == base:
            return 200, [("content-type", "text/plain")], self.ROLE.encode()
        if path == base + self.ROLE and not self.fail:
            key, secret, token, expiry = self.issue()
            body = {
                "Code": "Success",
                "Type": "AWS-HMAC",
                "AccessKeyId": key,
                "SecretAccessKey": secret,
                "Token": token,
                "Expiration": iso(expiry),
                "LastUpdated": iso(time.time()),
            }
            return _json(200, body)
        return 404, [], b""
