"""AWS's authorization denials read: who AWS saw, which action on which resource, and which policy
type refused it (implicitly: nothing allows it; explicitly: a Deny).

The formats (quoted with their sources in tests/test_denials.py):
- IAM's, used by most services: `User: <principal> is not authorized to perform: <action>
  [on resource: <resource>] [because no <type> policy allows the <action> action |
  with an explicit deny in a <type> policy]`; S3 quotes the resource ARN, API Gateway's
  execute-api:Invoke masks the account id and may say only "with an explicit deny", KMS's Decrypt
  says "on the resource associated with this ciphertext because ...".
- OpenSearch fine-grained access control: `security_exception`, `no permissions for [<action>] and
  User [name=<principal>, backend_roles=[...], requestedTenant=...]`.
- short forms with no principal: S3's "Access Denied", API Gateway's Lambda authorizer "User is not
  authorized to access this resource", EC2's encoded authorization message.
"""

import re
from dataclasses import dataclass

from .diagnosis import AwsError
from .identity import Principal, parse_principal

DENIAL_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "AuthorizationErrorException",
        "UnauthorizedOperation",
        "security_exception",
    }
)
_IAM = re.compile(
    r"(?:User: (?P<principal>\S+) )?is not authorized to perform:? (?P<action>[\w-]+:[\w*-]+)"
    r"(?: on (?:resource: ?(?P<resource>\"[^\"]*\"|[^\s\"]+)"
    r"|(?P<ciphertext>the resource associated with this ciphertext)))?(?P<rest>.*)",
    re.DOTALL,
)
# The policy types AWS names, as it names them after "because no" / "an explicit deny in a".
_TYPES = (
    r"identity-based policy|identity-based policies|resource-based policy|resource-based policies|"
    r"permissions boundary|session policy|service control policy|resource control policy|VPC endpoint policy"
)
_IMPLICIT = re.compile(rf"because no (?P<type>{_TYPES}) allows?")
_EXPLICIT = re.compile(rf"with an explicit deny(?: in (?:an? |the )?(?P<type>{_TYPES}))?")
_OPENSEARCH = re.compile(
    r"no permissions for \[(?P<action>[^\]]*)\] and User \[name=(?P<name>[^,\]]*)"
    r"(?:, backend_roles=\[(?P<roles>[^\]]*)\])?"
)
_ENCODED = re.compile(r"Encoded authorization failure message: (?P<blob>\S+)")
_LAMBDA_AUTHORIZER = re.compile(r"User is not authorized to access this resource")


@dataclass(frozen=True)
class Denial:
    """What AWS said about a refusal: any part it did not say is None."""

    code: str
    message: str
    principal: Principal | None = None
    action: str | None = None
    resource: str | None = None  # as AWS printed it, unquoted
    policy: str | None = None  # identity-based, resource-based, permissions boundary, session, ...
    explicit: bool | None = None  # True: a Deny; False: no Allow; None: AWS did not say
    ciphertext: bool = False  # KMS: "the resource associated with this ciphertext"
    backend_roles: tuple[str, ...] | None = None  # OpenSearch fine-grained access control
    lambda_authorizer: bool = False
    encoded: str | None = None  # EC2's encoded authorization message

    @property
    def is_opensearch(self) -> bool:
        return self.backend_roles is not None

    @property
    def is_api_gateway(self) -> bool:
        return self.lambda_authorizer or (self.action or "").lower() == "execute-api:invoke"


def _policy_type(text: str) -> str:
    """ "identity-based policy" -> "identity-based"; "permissions boundary" stays as it is."""
    text = text.replace("policies", "policy")
    return text.removesuffix(" policy") if text != "permissions boundary" else text


def parse_denial(error: AwsError) -> Denial | None:
    """The denial in an AWS error, or None when the error is not an authorization denial."""
    message = error.message.strip()
    if m := _OPENSEARCH.search(message):
        roles = tuple(r.strip() for r in (m["roles"] or "").split(",") if r.strip())
        return Denial(error.code, message, parse_principal(m["name"]), m["action"], backend_roles=roles)
    if m := _IAM.search(message):
        rest = m["rest"] or ""
        implicit, explicit = _IMPLICIT.search(rest), _EXPLICIT.search(rest)
        policy = (implicit and implicit["type"]) or (explicit and explicit["type"]) or None
        resource = m["resource"].strip('"') if m["resource"] else None
        return Denial(
            error.code,
            message,
            parse_principal(m["principal"]) if m["principal"] else None,
            m["action"],
            resource,
            _policy_type(policy) if policy else None,
            True if explicit else (False if implicit else None),
            ciphertext=m["ciphertext"] is not None,
        )
    if error.code not in DENIAL_CODES and not _LAMBDA_AUTHORIZER.search(message):
        return None
    encoded = _ENCODED.search(message)
    return Denial(
        error.code,
        message,
        explicit=True if "explicit deny" in message else None,
        lambda_authorizer=_LAMBDA_AUTHORIZER.search(message) is not None,
        encoded=encoded["blob"] if encoded else None,
    )
