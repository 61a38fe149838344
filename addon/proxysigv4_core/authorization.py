"""An authorization denial explained for the route that signed the request: who AWS saw next to who
the route meant to be, what was refused under which policy type, whom to ask, and the fix where
it can be written (an IAM policy statement ready to paste)."""

import json
import textwrap
from dataclasses import dataclass

from .denials import Denial
from .diagnosis import Diagnosis
from .identity import Intended, Principal, mismatch

# Whom to ask, by the policy type that refused.
_OWNERS = {
    "identity-based": "whoever manages {who}'s IAM policies",
    "resource-based": "the owner of {resource} (its resource policy: bucket, key, queue or API policy)",
    "permissions boundary": "the account's IAM administrator (the permissions boundary set on {who})",
    "session": "whoever issued the session: a session policy passed when the role was assumed "
    "(proxysigv4 passes none; an SSO permission set or the source profile's may)",
    "service control": "the AWS Organizations administrator (service control policies)",
    "resource control": "the AWS Organizations administrator (resource control policies)",
    "VPC endpoint": "whoever manages the VPC endpoint's policy",
}


DETAIL_WIDTH = 76  # what mitmweb's content pane shows beside the flow list


def _row(label: str, text: str) -> str:
    """A labelled row of the detail, wrapped under its own column (JSON stays valid: only spaces break)."""
    lines: list[str] = []
    for n, paragraph in enumerate(text.split("\n")):
        lines += textwrap.wrap(
            paragraph,
            DETAIL_WIDTH,
            initial_indent=f"{label:<9}" if n == 0 else " " * 9,
            subsequent_indent=" " * 9,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class SignedAs:
    """What the proxy knows of a signed request's identity (nothing secret)."""

    route: str
    source: str  # the config file
    credentials: str  # the route's credential source, e.g. "role arn:... via profile dev"
    method: str | None  # botocore's name for where they came from (env, sso, assume-role, ...)
    access_key: str | None  # masked
    region: str
    intended: Intended


def statement(action: str, resource: str | None, principal: str | None = None) -> str:
    """An IAM policy statement as one line of JSON (in a resource policy it names the principal)."""
    body: dict[str, object] = {"Effect": "Allow"}
    if principal:
        body["Principal"] = {"AWS": principal}
    body.update({"Action": action, "Resource": resource or "*"})
    return json.dumps(body)


def explain_denial(denial: Denial, signed: SignedAs) -> Diagnosis:
    """The diagnosis of an authorization denial: one line (header, comment, log) and the detail."""
    who, mismatched = _who(denial.principal, signed)
    policy, ask, fix = _policy_and_fix(denial, signed)
    what = f"{denial.action} on {denial.resource}" if denial.resource else denial.action
    parts = [f"authorization denied ({'AWS saw ' + who if denial.principal else 'AWS named no principal'})"]
    if mismatched:
        parts.append(mismatched)
    if what:
        parts.append(f"refused {what}")
    parts += [p.replace("\n", " ") for p in (policy, f"ask {ask}" if ask else "", fix) if p]
    rows = [
        ("who", f"AWS saw {who}" if denial.principal else "AWS did not name the principal"),
        ("", f"route {signed.route} signs with {_signer(signed)}"),
        ("", mismatched or ""),
        ("what", denial.action or "(action not named)"),
        ("", f"on {denial.resource or '(resource not named by AWS)'}"),
        ("policy", policy),
        ("ask", ask),
        ("fix", fix),
    ]
    detail = ["AWS refused this request for authorization (not for its signature).", ""]
    detail += [_row(label, text) for label, text in rows if text]
    detail += ["", *textwrap.wrap(f"AWS's words: {denial.message}", DETAIL_WIDTH, break_on_hyphens=False)]
    return Diagnosis(denial.code or "AccessDenied", "; ".join(parts), "\n".join(detail))


def _signer(signed: SignedAs) -> str:
    how = ", ".join(
        p for p in (signed.method or "", f"key {signed.access_key}" if signed.access_key else "") if p
    )
    return f"{signed.credentials}" + (f" (resolved: {how})" if how else "")


def _who(principal: Principal | None, signed: SignedAs) -> tuple[str, str | None]:
    if principal is None:
        return "", None
    if principal.kind == "anonymous":
        return principal.label, (
            f"route {signed.route} signed this request, but the endpoint evaluated no signature"
        )
    return principal.label, mismatch(principal, signed.intended)


def _policy_and_fix(denial: Denial, signed: SignedAs) -> tuple[str, str, str]:
    """The policy sentence, whom to ask and the fix (each may be empty)."""
    if denial.is_opensearch:
        return _opensearch(denial)
    if denial.ciphertext:
        return _kms_ciphertext(denial, signed)
    if denial.is_api_gateway:
        return _api_gateway(denial, signed)
    if denial.action is None:
        return _unnamed(denial)
    if denial.principal is not None and denial.principal.kind == "anonymous":
        return _anonymous(denial)
    who = denial.principal.short if denial.principal and denial.principal.name else "the caller"
    resource = denial.resource or "the resource"
    kind, action = denial.policy, denial.action
    owner = _OWNERS.get(kind or "", "").format(who=who, resource=resource)
    if denial.explicit:
        where = f"a {kind} policy" if kind and kind != "permissions boundary" else f"a {kind or 'policy'}"
        return (
            f"explicit deny in {where}: a Deny statement matches {action}, and a Deny wins over any Allow",
            owner or "the account's IAM administrator",
            f"find the Deny for {action} in {where} and narrow it (its Action, Resource or Condition)",
        )
    if kind in (None, "identity-based"):
        said = "" if kind else " (AWS did not name the policy type; this is the usual one)"
        stmt = statement(action, denial.resource)
        note = "" if denial.resource else '\n(AWS named no resource: narrow "*" to it)'
        return (
            f"implicit deny: no identity-based policy allows {action}{said}",
            _OWNERS["identity-based"].format(who=who),
            f"add to {who}'s identity-based policy:\n{stmt}{note}",
        )
    if kind == "resource-based" and denial.principal is not None:
        stmt = statement(action, denial.resource, denial.principal.policy_arn(signed.intended))
        return (
            f"implicit deny: no resource-based policy allows {action}",
            owner,
            f"add to {resource}'s policy:\n{stmt}",
        )
    if kind == "permissions boundary":
        return (
            f"implicit deny: the permissions boundary on {who} does not allow {action}",
            owner,
            f"the boundary must allow it too:\n{statement(action, denial.resource)}",
        )
    return (f"implicit deny: no {kind} policy allows {action}", owner, "")


def _api_gateway(denial: Denial, signed: SignedAs) -> tuple[str, str, str]:
    masked = "\n(AWS masked the account id: put the API's account id in place of the asterisks)"
    account = (denial.resource or "").split(":")[4:5]
    masked = masked if account and "*" in account[0] else ""
    if denial.lambda_authorizer:
        return (
            "the API's Lambda authorizer returned a policy that does not allow this method "
            "(with authorizer caching, a policy cached for another method ARN is reused)",
            "the API's owner",
            "make the authorizer's policy cover this method ARN, or set its cache TTL to 0",
        )
    if denial.principal is not None and denial.principal.kind == "anonymous":
        kind = "denies it explicitly" if denial.explicit else "allows only named principals"
        return (
            f"API Gateway ignored the signature: this method's authorization is not AWS_IAM, and the "
            f"API's resource policy {kind}",
            "the API's owner",
            f"set the method's Authorization to AWS_IAM and redeploy the stage, or allow this caller in the "
            f"resource policy{masked}",
        )
    if denial.explicit:
        return (
            "explicit deny: the API's resource policy (or an identity policy) has a Deny for this caller, "
            "often a Condition on aws:SourceIp or aws:SourceVpce that the proxy's address does not meet",
            "the API's owner",
            "find the Deny for execute-api:Invoke and narrow it",
        )
    stmt = statement("execute-api:Invoke", denial.resource)
    return (
        "implicit deny: the method uses AWS_IAM authorization and nothing allows this caller to invoke it "
        "(same account: its identity policy or the API's resource policy; another account: both)",
        "whoever manages the caller's IAM policies, and the API's owner for its resource policy",
        f"add to the caller's identity-based policy:\n{stmt}{masked}",
    )


def _anonymous(denial: Denial) -> tuple[str, str, str]:
    return (
        "the endpoint treated the request as unsigned: only a resource policy that allows anonymous access "
        f"would let it {denial.action}",
        "the owner of the resource",
        "check that the endpoint expects SigV4 for this service and region (the route's service/region), "
        "and that nothing between the proxy and AWS removes the Authorization header",
    )


def _kms_ciphertext(denial: Denial, signed: SignedAs) -> tuple[str, str, str]:
    principal = denial.principal.policy_arn(signed.intended) if denial.principal else "the caller"
    return (
        f"KMS could not use the key that encrypted this ciphertext in region {signed.region}: "
        "it does not exist there, or its key policy does not allow the caller, or denies it",
        "the key's owner (its key policy)",
        f"check that the route's region ({signed.region}) is the key's, then add to the key policy:\n"
        f"{statement(denial.action or 'kms:Decrypt', '*', principal)}",
    )


def _opensearch(denial: Denial) -> tuple[str, str, str]:
    roles = ", ".join(denial.backend_roles or ()) or "none"
    user = denial.principal.text if denial.principal else "?"
    target = (denial.backend_roles or (user,))[0]
    field = "backend_roles" if denial.backend_roles else "users"
    return (
        f"OpenSearch fine-grained access control: user {user} (backend roles: {roles}) has no OpenSearch "
        f"role with the permission [{denial.action}] (IAM accepted the request)",
        "the domain's security administrator (OpenSearch Dashboards > Security > Roles)",
        f"map {target} to a role that grants [{denial.action}]: "
        "PUT _plugins/_security/api/rolesmapping/<role> "
        f'{{"{field}": ["{target}"]}}',
    )


def _unnamed(denial: Denial) -> tuple[str, str, str]:
    """A short form: AWS said neither the action nor the principal."""
    if denial.encoded:
        return (
            "AWS encoded the reason",
            "",
            "decode it: aws sts decode-authorization-message --encoded-message <the message's blob>",
        )
    kind = "explicit deny" if denial.explicit else "AWS did not say which policy refused it"
    return (
        f"{kind} (S3 gives the reason only to callers in the bucket's account or organization)",
        "the owner of the resource and whoever manages the caller's IAM policies",
        "check in order: the caller's identity-based policy, the resource's policy, a permissions boundary, "
        "service control policies, a VPC endpoint policy, and for S3 Block Public Access, object ownership "
        "and the KMS key of encrypted objects",
    )
