"""A local STS stand-in for fault tests: AssumeRole answers that can be slow, denied, or
short-lived, each call issuing fresh credentials; and an upstream that verifies requests
signed with any credentials it issued (and are not yet expired)."""

import threading
import time
from typing import Self
from urllib.parse import parse_qsl

from .sigv4_verify import Secrets
from .upstream import Answer, Received, Upstream, verify_then_answer


class FakeSTS:
    def __init__(self, delay: float = 0.0, deny: bool = False, lifetime: float = 3600.0) -> None:
        self.delay, self.deny, self.lifetime = delay, deny, lifetime
        self.deny_code, self.deny_message = (
            "AccessDenied",
            "User is not authorized to perform: sts:AssumeRole",
        )
        self.issued: dict[str, tuple[str, str, float]] = {}  # key -> (secret, token, expiry)
        self.issued_at: dict[str, float] = {}
        self.actions: list[str] = []  # the Action of each call
        self.web_identity_tokens: list[str] = []  # AssumeRoleWithWebIdentity's tokens, as sent
        self.deny_roles: set[str] = set()  # role ARNs denied even when `deny` is off
        self.accept_for: float | None = None  # the verifier's own, shorter validity
        self._lock = threading.Lock()
        self.upstream = Upstream(self._answer)

    @property
    def url(self) -> str:
        return self.upstream.url

    @property
    def calls(self) -> int:
        return len(self.upstream.received)

    def __enter__(self) -> Self:
        self.upstream.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.upstream.__exit__(*exc)

    def _answer(self, received: Received) -> Answer:
        time.sleep(self.delay)
        form = dict(parse_qsl(received.body.decode()))
        action = form.get("Action", "AssumeRole")
        self.actions.append(action)
        if "WebIdentityToken" in form:
            self.web_identity_tokens.append(form["WebIdentityToken"])
        if self.deny or form.get("RoleArn") in self.deny_roles:
            body = (
                f"<ErrorResponse><Error><Type>Sender</Type><Code>{self.deny_code}</Code>"
                f"<Message>{self.deny_message}</Message></Error><RequestId>1</RequestId></ErrorResponse>"
            )
            return 403, [("content-type", "text/xml")], body.encode()
        with self._lock:
            n = len(self.issued) + 1
            key, secret, token = f"ASIAFAKESTS{n:05d}", f"fake/secret/{n}", f"fake-session-token-{n}"
            expiry = time.time() + self.lifetime
            self.issued[key] = (secret, token, expiry)
            self.issued_at[key] = time.time()
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
        body = f"""<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><{action}Result>
<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>
<SessionToken>{token}</SessionToken><Expiration>{expiration}</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/proxysigv4</Arn>
<AssumedRoleId>AROA1:proxysigv4</AssumedRoleId></AssumedRoleUser>
</{action}Result><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></{action}Response>"""
        return 200, [("content-type", "text/xml")], body.encode()

    def verifier(self, static: Secrets | None = None) -> Upstream:
        """An upstream accepting signatures by static keys or by issued, unexpired credentials."""

        def secrets() -> Secrets:
            now = time.time()
            known: Secrets = dict(static or {})
            for k, (s, t, exp) in self.issued.items():
                if exp > now and (self.accept_for is None or now < self.issued_at[k] + self.accept_for):
                    known[k] = (s, t)
            return known

        return Upstream(verify_then_answer(secrets=secrets))
