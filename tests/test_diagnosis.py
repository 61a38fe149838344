"""AWS error bodies as AWS documents them, parsed and explained."""

import datetime

import pytest
from mitmproxy.test import tutils

from proxysigv4_core.diagnosis import compare_canonical, diagnose, parse_aws_error
from proxysigv4_core.responses import changed_after_signing

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)
OURS = (
    "PUT\n/bucket/key\n\nhost:s3.us-east-1.amazonaws.com\nx-amz-content-sha256:abc\nx-amz-date:20261126T120000Z\n"
    "x-amz-meta-color:blue\n\nhost;x-amz-content-sha256;x-amz-date;x-amz-meta-color\nabc"
)
OURS_STS = "AWS4-HMAC-SHA256\n20261126T120000Z\n20261126/us-east-1/s3/aws4_request\n" + "1" * 64


def s3_signature_error(canonical: str, string_to_sign: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request '
        "signature we calculated does not match the signature you provided. Check your key and signing method."
        "</Message><AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId><StringToSign>"
        f"{string_to_sign}</StringToSign><SignatureProvided>abc</SignatureProvided><StringToSignBytes>41 57"
        f"</StringToSignBytes><CanonicalRequest>{canonical}</CanonicalRequest><CanonicalRequestBytes>50 55"
        "</CanonicalRequestBytes><RequestId>4442587FB7D0A2F9</RequestId><HostId>abc=</HostId></Error>"
    ).encode()


def explain(body: bytes, headers=None, **kw):
    error = parse_aws_error(body, headers or {})
    assert error is not None
    args = dict(
        route="/s3",
        source="routes.yaml",
        service="s3",
        region="us-east-1",
        canonical_request=OURS,
        string_to_sign=OURS_STS,
        access_key="AKIA…MPLE",
        now=NOW,
    )
    args.update(kw)
    return error, diagnose(error, **args)


def test_s3_xml_with_canonical_request_names_the_header_changed_after_signing():
    theirs = OURS.replace("x-amz-meta-color:blue", "x-amz-meta-color:red")
    error, d = explain(s3_signature_error(theirs, OURS_STS))
    assert error.code == "SignatureDoesNotMatch" and error.canonical_request == theirs
    assert "header x-amz-meta-color: we signed 'blue', AWS received 'red'" in d.summary
    assert "-x-amz-meta-color:blue" in d.detail and "+x-amz-meta-color:red" in d.detail


def test_path_query_and_payload_differences_are_named():
    theirs = OURS.replace("/bucket/key", "/bucket/key%20x").replace("\n\nhost:", "\na=1\nhost:", 1)
    theirs = theirs[: theirs.rindex("\n") + 1] + "def"
    findings = compare_canonical(OURS, theirs)
    assert any(f.startswith("canonical URI (path): we signed '/bucket/key'") for f in findings)
    assert any(f.startswith("canonical query string") for f in findings)
    assert any(f.startswith("payload hash: we signed 'abc', AWS computed 'def'") for f in findings)


def test_same_canonical_request_means_wrong_secret_key():
    _, d = explain(s3_signature_error(OURS, OURS_STS))
    assert "secret key does not belong to access key AKIA…MPLE" in d.summary


def test_same_canonical_request_different_string_to_sign_points_at_scope():
    _, d = explain(s3_signature_error(OURS, OURS_STS.replace("us-east-1", "eu-west-1")))
    assert "different string to sign" in d.summary and "+20261126/eu-west-1/s3/aws4_request" in d.detail


JSON_BODY = (
    b'{"__type":"com.amazon.coral.service#InvalidSignatureException","message":"The request signature we '
    b"calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. "
    b"Consult the service documentation for details.\\n\\nThe Canonical String for this request should have been\\n"
    b"'POST\\n/model/a.b-v1%253A0/invoke\\n\\nhost:bedrock-runtime.us-east-1.amazonaws.com\\nx-amz-date:"
    b"20261126T120000Z\\n\\nhost;x-amz-date\\nabc'\\n\\nThe String-to-Sign should have been\\n'AWS4-HMAC-SHA256\\n"
    b"20261126T120000Z\\n20261126/us-east-1/bedrock/aws4_request\\n123'\\n\"}"
)


def test_json_protocol_error_with_canonical_string_in_the_message():
    ours = "POST\n/model/a.b-v1%3A0/invoke\n\nhost:bedrock-runtime.us-east-1.amazonaws.com\nx-amz-date:20261126T120000Z\n\nhost;x-amz-date\nabc"
    error, d = explain(JSON_BODY, canonical_request=ours, service="bedrock")
    assert error.code == "InvalidSignatureException"
    assert error.canonical_request.startswith("POST\n/model/a.b-v1%253A0/invoke")
    assert (
        "canonical URI (path): we signed '/model/a.b-v1%3A0/invoke', AWS computed '/model/a.b-v1%253A0/invoke'"
        in d.summary
    )


def test_query_protocol_xml_error():
    body = (
        b'<ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><Error><Type>Sender</Type>'
        b"<Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the "
        b"signature you provided.</Message><Detail/></Error><RequestId>b5a</RequestId></ErrorResponse>"
    )
    error, d = explain(body, service="sqs")
    assert (error.code, error.canonical_request) == ("SignatureDoesNotMatch", None)
    assert "did not return its canonical request" in d.summary


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (
            b'{"message":"Credential should be scoped to a valid region. "}',
            {"x-amzn-errortype": "InvalidSignatureException:http://internal"},
            "AWS rejects region 'us-east-1' in the credential scope: set the right `region:` on route /s3 in routes.yaml",
        ),
        (
            b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region "
            b"'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>",
            {},
            "AWS expects region 'eu-west-1', we signed for 'us-east-1': set `region: eu-west-1` on route /s3 in routes.yaml",
        ),
        (
            b'{"message":"Credential should be scoped to correct service: \'execute-api\'. "}',
            {"x-amzn-errortype": "InvalidSignatureException"},
            "AWS expects service 'execute-api', we signed for 's3': set `service: execute-api` on route /s3",
        ),
        (
            b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token "
            b"included in the request is invalid.</Message></Error></ErrorResponse>",
            {},
            "AWS does not know access key AKIA…MPLE used by route /s3",
        ),
        (
            b'{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}',
            {},
            "the session token of route /s3 has expired",
        ),
        (
            b'{"message":"Missing Authentication Token"}',
            {"x-amzn-errortype": "MissingAuthenticationTokenException"},
            "API Gateway answers this for a path or method that has no resource",
        ),
        (
            b"<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current "
            b"time is too large.</Message><RequestTime>20261126T114000Z</RequestTime><ServerTime>2026-11-26T11:40:00Z"
            b"</ServerTime></Error>",
            {},
            "this machine's clock reads 2026-11-26T12:00:00Z (UTC), AWS's reads "
            "2026-11-26T11:40:00Z: the local clock is 1200s ahead",
        ),
        (
            b'{"__type":"InvalidSignatureException","message":"Signature expired: 20261126T110000Z is now earlier than '
            b'20261126T115500Z (20261126T120000Z - 5 min.)"}',
            {},
            "this machine's clock reads 2026-11-26T12:00:00Z",
        ),
    ],
)
def test_documented_error_answers_are_explained(body, headers, expected):
    _, d = explain(body, headers)
    assert expected in d.summary


@pytest.mark.parametrize(
    "body",
    [
        b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
        b'{"__type":"AccessDeniedException","message":"User: arn:aws:iam::1:user/x is not authorized to perform: '
        b'bedrock:InvokeModel"}',
        b'{"__type":"ResourceNotFoundException","message":"Requested resource not found"}',
    ],
)
def test_errors_unrelated_to_signing_get_no_diagnosis(body):
    _, d = explain(body)
    assert d is None


def test_non_aws_bodies_are_not_errors():
    assert parse_aws_error(b"<html>Bad gateway</html>", {}) is None
    assert parse_aws_error(b"plain text", {}) is None
    assert parse_aws_error(b'{"ok": true}', {}) is None


def test_a_request_changed_after_signing_is_named_when_aws_gives_no_canonical_request():
    body = b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>"
    _, d = explain(body, changed="signed for http://h/a, sent to http://h/b")
    assert d.summary.startswith(
        "signature mismatch: the request was changed after signing: signed for http://h/a"
    )
    _, plain = explain(body)
    assert "did not return its canonical request" in plain.summary


def test_changed_after_signing_compares_what_was_sent_with_what_was_signed():
    request = tutils.treq(scheme=b"https", host="Bucket.s3.amazonaws.com", port=443, path=b"/k?x=1")
    assert changed_after_signing(request, "https://bucket.s3.amazonaws.com/k?x=1") is None
    assert changed_after_signing(request, None) is None
    moved = changed_after_signing(request, "https://bucket.s3.amazonaws.com/other?x=1")
    assert (
        moved
        == "signed for https://bucket.s3.amazonaws.com/other?x=1, sent to https://Bucket.s3.amazonaws.com/k?x=1"
    )
    assert changed_after_signing(request, "https://bucket.s3.amazonaws.com:8443/k?x=1") is not None
