"""Principals: the one a route means AWS to see (its roleArn, or the role of the profile it uses),
and the one AWS names in a denial (`arn:aws:sts::111122223333:assumed-role/Name/session`, ...)."""

import re
from dataclasses import dataclass
from typing import TypedDict


class Intended(TypedDict, total=False):
    """Who a route's credentials are meant to be, as far as its config says (kept in the flow record)."""

    role_arn: str  # the role assumed: the route's roleArn, or role_arn in the profile
    session: str  # its role session name (the route's roleSessionName, or the profile's)
    sso_role: str  # an SSO profile's sso_role_name (AWS sees assumed-role/AWSReservedSSO_<name>_<id>)
    sso_account: str
    where: str  # how the config says so: "roleArn of route /x", "profile 'dev'"


def intended_identity(
    role_arn: str | None, session: str, profile: str | None, profile_config: dict[str, object]
) -> Intended:
    """The identity the route's config names; empty when its credentials are plain keys."""
    if role_arn:
        return {"role_arn": role_arn, "session": session, "where": "the route's roleArn"}
    where = f"profile {profile!r}" if profile else "the default profile"
    if isinstance(arn := profile_config.get("role_arn"), str):
        name = profile_config.get("role_session_name")
        return {
            "role_arn": arn,
            "session": name if isinstance(name, str) else "",
            "where": f"role_arn of {where}",
        }
    if isinstance(sso_role := profile_config.get("sso_role_name"), str):
        account = profile_config.get("sso_account_id")
        found: Intended = {"sso_role": sso_role, "where": f"sso_role_name of {where}"}
        if isinstance(account, str):
            found["sso_account"] = account
        return found
    return {}


_ARN = re.compile(
    r"arn:(?P<partition>[\w-]+):(?:iam|sts)::(?P<account>[\d*]+):"
    r"(?P<kind>user|role|assumed-role|federated-user|root)(?:/(?P<rest>.*))?$"
)
_KIND_WORDS = {"assumed-role": "assumed role", "federated-user": "federated user"}


def _word(kind: str) -> str:
    return _KIND_WORDS.get(kind, kind)


@dataclass(frozen=True)
class Principal:
    """A principal as AWS printed it (the account id too, masked or not)."""

    text: str
    kind: str  # user, role, assumed-role, federated-user, root, anonymous, or "" (not an IAM ARN)
    name: str = ""  # the user's or role's name (no path), the session's role name
    account: str = ""
    session: str = ""

    @property
    def label(self) -> str:
        if self.kind == "anonymous":
            return "an anonymous caller (no signature evaluated)"
        if not self.kind or self.kind == "root":
            return self.text
        return f"{_word(self.kind)} {self.name} ({self.text})"

    @property
    def short(self) -> str:
        """ "user Mary", "role app" (a session's role), or the text as printed."""
        if self.kind in ("user", "role", "assumed-role", "federated-user") and self.name:
            return f"{'role' if self.kind == 'assumed-role' else _word(self.kind)} {self.name}"
        return self.text

    @property
    def role_name(self) -> str | None:
        return self.name if self.kind in ("role", "assumed-role") else None

    def policy_arn(self, intended: Intended) -> str:
        """The ARN a resource policy names for this principal: a session's role (with the path the
        route's config gives, when it is that role), else the ARN as AWS printed it."""
        if self.kind != "assumed-role":
            return self.text
        arn = intended.get("role_arn", "")
        if arn and arn.rsplit("/", 1)[-1] == self.name and arn.split(":")[4:5] == [self.account]:
            return arn
        partition = self.text.split(":", 2)[1]
        return f"arn:{partition}:iam::{self.account}:role/{self.name}"


def parse_principal(text: str) -> Principal:
    text = text.strip().strip('"')
    if text.lower() == "anonymous":
        return Principal(text, "anonymous")
    m = _ARN.match(text)
    if m is None:
        return Principal(text, "")
    kind, rest = m["kind"], m["rest"] or ""
    if kind == "assumed-role":
        name, _, session = rest.partition("/")
        return Principal(text, kind, name, m["account"], session)
    return Principal(text, kind, rest.rsplit("/", 1)[-1], m["account"])


def mismatch(seen: Principal, intended: Intended) -> str | None:
    """Why the principal AWS saw is not the one the route's config names, or None (the same, or
    nothing to compare with: plain keys name no principal)."""
    if seen.kind in ("", "anonymous"):
        return None
    if role_arn := intended.get("role_arn"):
        want = role_arn.rsplit("/", 1)[-1]
        account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
        if seen.role_name == want and (not account or "*" in seen.account or seen.account == account):
            return None
        said = f"the route assumes role {role_arn} ({intended.get('where', '')})"
        if seen.role_name == want:
            return f"{said}, but AWS saw that name in account {seen.account}: another account's role"
        if seen.kind == "assumed-role":
            return f"{said}, but AWS saw assumed role {seen.name}: credentials from another role or profile"
        return f"{said}, but AWS saw {_word(seen.kind)} {seen.name}: the roleArn was not used"
    if sso_role := intended.get("sso_role"):
        if seen.kind == "assumed-role" and seen.name.startswith(f"AWSReservedSSO_{sso_role}_"):
            return None
        said = f"{intended.get('where', 'the profile')} names SSO role {sso_role}"
        return f"{said}, but AWS saw {_word(seen.kind)} {seen.name}: credentials from another profile"
    return None
