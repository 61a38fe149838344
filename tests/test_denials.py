"""AWS's authorization denials, in the formats AWS documents, parsed and explained.

Sources of the quoted formats:
- IAM User Guide, "Troubleshoot access denied error messages" (troubleshoot_access-denied.html):
  `User: <arn> is not authorized to perform: <action> [on resource: <arn>] because no <type> policy
  allows the <action> action` / `with an explicit deny in a <type> policy`.
- Amazon S3 User Guide, "Troubleshoot access denied (403 Forbidden) errors in Amazon S3"
  (troubleshoot-403-errors.html): the resource ARN in double quotes; "Access Denied" for requests
  from outside the bucket's account or organization.
- AWS re:Post knowledge center, "Troubleshoot HTTP 403 errors from API Gateway": the Invoke denial
  with `User: anonymous` and the account id masked with asterisks; the Lambda authorizer's
  "User is not authorized to access this resource with an explicit deny".
- AWS KMS Developer Guide, troubleshooting key access: Decrypt "on the resource associated with this
  ciphertext because the resource does not exist in this Region, no resource-based policies allow
  access, or a resource-based policy explicitly denies access".
- Amazon OpenSearch Service Developer Guide, fine-grained access control troubleshooting:
  security_exception "no permissions for [indices:data/read/search] and User [name=..., backend_roles=[...]]".
- Amazon EC2 API: UnauthorizedOperation with an encoded authorization failure message.
- moto (moto/core/exceptions.py AccessDeniedError): the short form with no resource and no reason.
"""

import json

import pytest

from proxysigv4_core.authorization import SignedAs, explain_denial, statement
from proxysigv4_core.denials import parse_denial
from proxysigv4_core.diagnosis import parse_aws_error
from proxysigv4_core.identity import intended_identity, mismatch, parse_principal

ROLE = "arn:aws:iam::123456789012:role/team/app-reader"
ROUTE_ROLE = intended_identity(ROLE, "proxysigv4", None, {})
KEYS_ONLY = intended_identity(None, "", None, {})


def signed_as(intended=KEYS_ONLY, **kw):
    base = dict(
        route="/api",
        source="routes.yaml",
        credentials="default credential chain",
        method="env",
        access_key="AKIA…WXYZ",
        region="us-east-1",
        intended=intended,
    )
    base.update(kw)
    return SignedAs(**base)


def explained(body: str, headers=None, intended=KEYS_ONLY, **kw):
    error = parse_aws_error(body.encode(), headers or {})
    assert error is not None
    denial = parse_denial(error)
    assert denial is not None
    return denial, explain_denial(denial, signed_as(intended, **kw))


def flat(text: str) -> str:
    """The text with its wrapping undone."""
    return " ".join(text.split())


def json_error(message: str, code="AccessDeniedException") -> str:
    return json.dumps({"__type": code, "message": message})


def s3_error(message: str) -> str:
    return f"<Error><Code>AccessDenied</Code><Message>{message}</Message><RequestId>R</RequestId></Error>"


IAM_IMPLICIT = (
    "User: arn:aws:iam::777788889999:user/MaryMajor is not authorized to perform: codecommit:ListRepositories "
    "because no identity-based policy allows the codecommit:ListRepositories action"
)


def test_implicit_identity_denial_names_who_what_and_pastes_a_statement():
    denial, d = explained(json_error(IAM_IMPLICIT))
    assert denial.principal.kind == "user" and denial.principal.name == "MaryMajor"
    assert (denial.action, denial.resource, denial.policy, denial.explicit) == (
        "codecommit:ListRepositories",
        None,
        "identity-based",
        False,
    )
    assert "AWS saw user MaryMajor (arn:aws:iam::777788889999:user/MaryMajor)" in d.summary
    assert "no identity-based policy allows codecommit:ListRepositories" in d.summary
    assert "ask whoever manages user MaryMajor's IAM policies" in d.summary
    stmt = d.summary.split("identity-based policy: ", 1)[1].split(" (AWS named no resource")[0]
    assert json.loads(stmt) == {"Effect": "Allow", "Action": "codecommit:ListRepositories", "Resource": "*"}
    assert "route /api signs with default credential chain (resolved: env, key AKIA…WXYZ)" in flat(d.detail)
    assert max(len(line) for line in d.detail.split("\n")[:-2]) <= 76  # rows fit mitmweb's pane
    assert d.code == "AccessDeniedException"


@pytest.mark.parametrize(
    ("message", "policy", "explicit", "owner"),
    [
        (
            "User: arn:aws:iam::777788889999:user/MaryMajor is not authorized to perform: codecommit:ListRespositories "
            "with an explicit deny in a service control policy",
            "service control",
            True,
            "AWS Organizations administrator",
        ),
        (
            "User: arn:aws:iam::777788889999:user/MaryMajor is not authorized to perform: codecommit:ListRepositories "
            "because no session policy allows the codecommit:ListRepositories action",
            "session",
            False,
            "whoever issued the session",
        ),
        (
            "User: arn:aws:iam::777788889999:user/MaryMajor is not authorized to perform: codecommit:ListRepositories "
            "because no permissions boundary allows the codecommit:ListRepositories action",
            "permissions boundary",
            False,
            "the account's IAM administrator (the permissions boundary set on user MaryMajor)",
        ),
        (
            "User: arn:aws:iam::777788889999:user/MaryMajor is not authorized to perform: codecommit:ListRepositories "
            "with an explicit deny in a permissions boundary",
            "permissions boundary",
            True,
            "permissions boundary set on user MaryMajor",
        ),
        (
            "User: arn:aws:iam::777788889999:user/MaryMajor is not authorized to perform: codecommit:ListRepositories "
            "with an explicit deny in an identity-based policy",
            "identity-based",
            True,
            "whoever manages user MaryMajor's IAM policies",
        ),
        (
            "User: arn:aws:iam::777788889999:user/MaryMajor is not authorized to perform: s3:GetObject on resource: "
            '"arn:aws:s3:::amzn-s3-demo-bucket1/object-name" because no VPC endpoint policy allows the s3:GetObject action',
            "VPC endpoint",
            False,
            "VPC endpoint's policy",
        ),
        (
            "User: arn:aws:iam::777788889999:user/MaryMajor is not authorized to perform: s3:GetObject on resource: "
            '"arn:aws:s3:::amzn-s3-demo-bucket1/object-name" with an explicit deny in a resource control policy',
            "resource control",
            True,
            "resource control policies",
        ),
    ],
)
def test_policy_types_implicit_and_explicit_decide_whom_to_ask(message, policy, explicit, owner):
    denial, d = explained(json_error(message))
    assert (denial.policy, denial.explicit) == (policy, explicit)
    assert owner in d.summary
    if explicit:
        assert "explicit deny" in d.summary and "a Deny wins over any Allow" in d.summary
        assert '"Effect": "Allow"' not in d.summary  # an Allow cannot fix an explicit deny


def test_s3_quoted_resource_and_resource_policy_statement_names_the_principal():
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/app-reader/proxysigv4 is not authorized to perform: "
        's3:GetObject on resource: "arn:aws:s3:::amzn-s3-demo-bucket1/object-name" because no resource-based '
        "policy allows the s3:GetObject action"
    )
    denial, d = explained(s3_error(message), intended=ROUTE_ROLE)
    assert denial.resource == "arn:aws:s3:::amzn-s3-demo-bucket1/object-name"
    assert (
        "AWS saw assumed role app-reader" in d.summary and "the roleArn" not in d.summary
    )  # the route's role
    stmt = json.loads(d.summary.split("object-name's policy: ", 1)[1])
    # a resource policy names the role (with the path the route's roleArn gives), not the session
    assert stmt == {
        "Effect": "Allow",
        "Principal": {"AWS": ROLE},
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::amzn-s3-demo-bucket1/object-name",
    }


def test_identity_statement_resource_is_the_one_aws_named():
    message = (
        "User: arn:aws:iam::123456789012:user/reader is not authorized to perform: s3:PutObject on resource: "
        '"arn:aws:s3:::amzn-s3-demo-bucket1/k" because no identity-based policy allows the s3:PutObject action'
    )
    _, d = explained(s3_error(message))
    stmt = json.loads(d.summary.split("identity-based policy: ", 1)[1])
    assert stmt == {
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": "arn:aws:s3:::amzn-s3-demo-bucket1/k",
    }


@pytest.mark.parametrize(
    ("principal", "intended", "expected"),
    [
        (
            "arn:aws:iam::123456789012:user/ci",
            ROUTE_ROLE,
            f"the route assumes role {ROLE} (the route's roleArn), but AWS saw user ci: the roleArn was not used",
        ),
        (
            "arn:aws:sts::123456789012:assumed-role/admin/botocore-session-1",
            ROUTE_ROLE,
            "but AWS saw assumed role admin: credentials from another role or profile",
        ),
        (
            "arn:aws:sts::999988887777:assumed-role/app-reader/proxysigv4",
            ROUTE_ROLE,
            "but AWS saw that name in account 999988887777: another account's role",
        ),
        (
            "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123abcd/me",
            intended_identity(
                None, "", "dev", {"sso_role_name": "ReadOnly", "sso_account_id": "123456789012"}
            ),
            "sso_role_name of profile 'dev' names SSO role ReadOnly, but AWS saw assumed role "
            "AWSReservedSSO_Admin_0123abcd: credentials from another profile",
        ),
        (
            "arn:aws:sts::123456789012:assumed-role/deployer/s",
            intended_identity(None, "", "ci", {"role_arn": "arn:aws:iam::123456789012:role/builder"}),
            "the route assumes role arn:aws:iam::123456789012:role/builder (role_arn of profile 'ci')",
        ),
    ],
)
def test_a_principal_other_than_the_routes_is_named(principal, intended, expected):
    message = f"User: {principal} is not authorized to perform: sqs:SendMessage"
    _, d = explained(json_error(message), intended=intended)
    assert expected in d.summary


@pytest.mark.parametrize(
    ("principal", "intended"),
    [
        ("arn:aws:sts::123456789012:assumed-role/app-reader/proxysigv4", ROUTE_ROLE),
        (
            "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_ReadOnly_0123abcd/me",
            intended_identity(None, "", "dev", {"sso_role_name": "ReadOnly"}),
        ),
        ("arn:aws:iam::123456789012:user/anyone", KEYS_ONLY),  # plain keys name no principal to compare
    ],
)
def test_the_routes_own_principal_is_no_mismatch(principal, intended):
    assert mismatch(parse_principal(principal), intended) is None


def test_api_gateway_invoke_anonymous_points_at_the_methods_authorization():
    body = json.dumps(
        {
            "Message": "User: anonymous is not authorized to perform: execute-api:Invoke on resource: "
            "arn:aws:execute-api:us-east-1:********1234:abcd1234/dev/GET/"
        }
    )
    denial, d = explained(body, {"x-amzn-errortype": "AccessDeniedException"}, intended=ROUTE_ROLE)
    assert denial.principal.kind == "anonymous" and denial.is_api_gateway
    assert "route /api signed this request, but the endpoint evaluated no signature" in d.summary
    assert (
        "authorization is not AWS_IAM" in d.summary
        and "set the method's Authorization to AWS_IAM" in d.summary
    )
    assert "********1234" in d.summary  # the account id as AWS printed it
    assert "put the API's account id in place of the asterisks" in d.summary


def test_api_gateway_invoke_denied_for_a_named_principal():
    message = (
        "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: execute-api:Invoke on resource: "
        "arn:aws:execute-api:us-east-1:********9012:abcd1234/prod/POST/orders"
    )
    _, d = explained(json.dumps({"Message": message}), intended=ROUTE_ROLE)
    assert "the roleArn was not used" in d.summary
    assert "the method uses AWS_IAM authorization" in d.summary and "resource policy" in d.summary
    stmt = json.loads(d.summary.split("identity-based policy: ", 1)[1].split(" (AWS masked")[0])
    assert stmt["Resource"] == "arn:aws:execute-api:us-east-1:********9012:abcd1234/prod/POST/orders"
    explicit = message.replace("orders", "orders with an explicit deny")
    _, d = explained(json.dumps({"Message": explicit}), intended=ROUTE_ROLE)
    assert "aws:SourceIp or aws:SourceVpce" in d.summary


def test_api_gateway_lambda_authorizer_deny():
    body = json.dumps({"Message": "User is not authorized to access this resource with an explicit deny"})
    denial, d = explained(body, {"x-amzn-errortype": "AccessDeniedException"})
    assert denial.lambda_authorizer and denial.explicit
    assert "Lambda authorizer" in d.summary and "cache" in d.summary


def test_kms_ciphertext_denial_names_the_region_and_the_key_policy():
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/app-reader/proxysigv4 is not authorized to perform: "
        "kms:Decrypt on the resource associated with this ciphertext because the resource does not exist in this "
        "Region, no resource-based policies allow access, or a resource-based policy explicitly denies access"
    )
    denial, d = explained(json_error(message), intended=ROUTE_ROLE, region="eu-west-1")
    assert denial.ciphertext and denial.resource is None
    assert "in region eu-west-1" in d.summary and "key's owner" in d.summary
    stmt = json.loads(d.summary.split("to the key policy: ", 1)[1])
    assert stmt == {"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt", "Resource": "*"}


def test_opensearch_fine_grained_access_control_names_the_backend_role_mapping():
    reason = (
        "no permissions for [indices:data/read/search] and User [name=arn:aws:iam::123456789012:role/team/app-reader, "
        "backend_roles=[arn:aws:iam::123456789012:role/team/app-reader], requestedTenant=null]"
    )
    body = json.dumps(
        {
            "error": {
                "root_cause": [{"type": "security_exception", "reason": reason}],
                "type": "security_exception",
                "reason": reason,
            },
            "status": 403,
        }
    )
    denial, d = explained(body, intended=ROUTE_ROLE)
    assert denial.action == "indices:data/read/search" and denial.backend_roles == (ROLE,)
    assert "OpenSearch fine-grained access control" in d.summary
    assert f'rolesmapping/<role> {{"backend_roles": ["{ROLE}"]}}' in d.summary
    assert "the roleArn was not used" not in d.summary  # the same role the route assumes


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (s3_error("Access Denied"), "S3 gives the reason only to callers in the bucket's account"),
        (
            "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform "
            "this operation. Encoded authorization failure message: AbC123-_x</Message></Error></Errors></Response>",
            "aws sts decode-authorization-message",
        ),
    ],
)
def test_short_forms_without_a_principal(body, expected):
    denial, d = explained(body)
    assert denial.principal is None and denial.action is None
    assert "AWS named no principal" in d.summary and expected in d.summary


def test_moto_short_form_without_resource_or_reason():
    message = "User: arn:aws:iam::123456789012:user/demo-reader is not authorized to perform: sqs:CreateQueue"
    body = (
        "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>"
        f"{message}</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"
    )
    denial, d = explained(body)
    assert (denial.policy, denial.explicit, denial.resource) == (None, None, None)
    assert "no identity-based policy allows sqs:CreateQueue (AWS did not name the policy type" in d.summary
    assert (
        '{"Effect": "Allow", "Action": "sqs:CreateQueue", "Resource": "*"} (AWS named no resource'
        in d.summary
    )


def test_sns_authorization_error_code_and_capitalised_action():
    message = (
        "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: SNS:Publish on resource: "
        "arn:aws:sns:us-east-1:123456789012:alerts because no identity-based policy allows the SNS:Publish action"
    )
    body = f"<ErrorResponse><Error><Type>Sender</Type><Code>AuthorizationError</Code><Message>{message}</Message></Error></ErrorResponse>"
    denial, _ = explained(body)
    assert (denial.code, denial.action, denial.resource) == (
        "AuthorizationError",
        "SNS:Publish",
        "arn:aws:sns:us-east-1:123456789012:alerts",
    )


@pytest.mark.parametrize(
    "body",
    [
        '{"__type":"ResourceNotFoundException","message":"Requested resource not found"}',
        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
        '{"message":"Forbidden"}',
    ],
)
def test_other_errors_are_not_denials(body):
    error = parse_aws_error(body.encode(), {})
    assert error is not None and parse_denial(error) is None


def test_statement_is_json_for_a_policy():
    assert json.loads(statement("s3:GetObject", None)) == {
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "*",
    }
