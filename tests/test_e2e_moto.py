"""End to end: unsigned clients -> real mitmdump with the addon -> moto server checking SigV4.

Each group also shows that moto rejects the same request unsigned or with a bad signature,
so a pass proves the proxy's signature, not a lenient emulator.
"""

import json
import xml.etree.ElementTree as ET

import pytest
import requests
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from peers.processes import REGION, aws_env

pytestmark = pytest.mark.e2e


def routes_for(moto) -> dict:
    def route(service, **extra):
        return {"target": moto.url, "service": service, "region": REGION, **extra}

    return {
        "/sts": route("sts"),
        "/sqs": route("sqs"),
        "/ddb": route("dynamodb"),
        "/s3": route("s3"),
        "/as-role": route("sts", roleArn=moto.role_arn, roleSessionName="e2e-session"),
    }


@pytest.fixture
def proxy(moto, start_proxy):
    return start_proxy(routes_for(moto), aws_env(moto))


def direct(moto, method, path, *, headers=None, body=b"", service, secret=None, tamper=None):
    """Send a request straight to moto, signed by botocore (optionally with a wrong secret)."""
    url = moto.url + path
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    creds = Credentials(moto.access_key, secret or moto.secret_key)
    (S3SigV4Auth if service == "s3" else SigV4Auth)(creds, service, REGION).add_auth(req)
    prepared = dict(req.headers.items())
    if tamper:
        tamper(prepared)
    return requests.request(method, url, data=body, headers=prepared, timeout=10)


def form(action: str, **params) -> dict:
    return {"Action": action, "Version": "2011-06-15", **params}


# ---- STS ------------------------------------------------------------------------------------
STS_BODY = b"Action=GetCallerIdentity&Version=2011-06-15"
FORM = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}


def test_sts_get_caller_identity_through_proxy_is_signed_as_the_configured_user(proxy, moto):
    r = requests.post(f"{proxy.url}/sts/", data=STS_BODY, headers=FORM, timeout=10)
    assert r.status_code == 200, r.text
    assert "<Arn>arn:aws:iam::123456789012:user/proxy-user</Arn>" in r.text


def test_moto_rejects_sts_unsigned_and_with_a_wrong_secret(moto):
    unsigned = requests.post(f"{moto.url}/", data=STS_BODY, headers=FORM, timeout=10)
    assert unsigned.status_code >= 400
    wrong = direct(moto, "POST", "/", headers=FORM, body=STS_BODY, service="sts", secret="x" * 40)
    assert wrong.status_code == 403 and "SignatureDoesNotMatch" in wrong.text
    right = direct(moto, "POST", "/", headers=FORM, body=STS_BODY, service="sts")
    assert right.status_code == 200


def test_assume_role_route_uses_temporary_credentials(proxy):
    r = requests.post(f"{proxy.url}/as-role/", data=STS_BODY, headers=FORM, timeout=10)
    assert r.status_code == 200, r.text
    assert "assumed-role/proxy-role/e2e-session" in r.text


def test_client_authorization_is_replaced_not_forwarded(proxy):
    bogus = {
        **FORM,
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAEVIL/20200101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00",
    }
    r = requests.post(f"{proxy.url}/sts/", data=STS_BODY, headers=bogus, timeout=10)
    assert r.status_code == 200, r.text
    assert "user/proxy-user" in r.text


# ---- SQS: query and JSON protocols -----------------------------------------------------------
def test_sqs_query_protocol_create_and_list_queue(proxy):
    body = "Action=CreateQueue&QueueName=e2e-query&Version=2012-11-05"
    r = requests.post(f"{proxy.url}/sqs/", data=body, headers=FORM, timeout=10)
    assert r.status_code == 200, r.text
    # POST, not GET: moto rejects even botocore's own signature on SQS query-protocol GETs.
    body = "Action=ListQueues&Version=2012-11-05&QueueNamePrefix=e2e-q"
    r = requests.post(f"{proxy.url}/sqs", data=body, headers=FORM, timeout=10)
    assert r.status_code == 200, r.text
    assert "e2e-query" in r.text


def test_sqs_json_protocol_send_and_receive_message(proxy):
    def call(target, payload):
        return requests.post(
            f"{proxy.url}/sqs/",
            data=json.dumps(payload, indent=2),  # non-compact JSON: bytes are hashed as sent
            headers={
                "content-type": "application/x-amz-json-1.0",
                "x-amz-target": f"AmazonSQS.{target}",
            },
            timeout=10,
        )

    r = call("CreateQueue", {"QueueName": "e2e-json"})
    assert r.status_code == 200, r.text
    queue_url = r.json()["QueueUrl"]
    r = call("SendMessage", {"QueueUrl": queue_url, "MessageBody": "héllo wörld ✓"})
    assert r.status_code == 200, r.text
    r = call("ReceiveMessage", {"QueueUrl": queue_url})
    assert r.status_code == 200, r.text
    assert r.json()["Messages"][0]["Body"] == "héllo wörld ✓"


def test_moto_rejects_sqs_json_with_tampered_target_header(moto):
    headers = {"content-type": "application/x-amz-json-1.0", "x-amz-target": "AmazonSQS.ListQueues"}
    ok = direct(moto, "POST", "/", headers=headers, body=b"{}", service="sqs")
    assert ok.status_code == 200, ok.text

    def tamper(h):
        h["x-amz-target"] = "AmazonSQS.CreateQueue"

    bad = direct(moto, "POST", "/", headers=headers, body=b"{}", service="sqs", tamper=tamper)
    assert bad.status_code == 403 and "SignatureDoesNotMatch" in bad.text


# ---- DynamoDB --------------------------------------------------------------------------------
def test_dynamodb_create_table_put_and_get_item(proxy):
    def call(target, payload):
        r = requests.post(
            f"{proxy.url}/ddb",
            data=json.dumps(payload),
            headers={
                "content-type": "application/x-amz-json-1.0",
                "x-amz-target": f"DynamoDB_20120810.{target}",
            },
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return r.json()

    call(
        "CreateTable",
        {
            "TableName": "e2e",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    call("PutItem", {"TableName": "e2e", "Item": {"pk": {"S": "k1"}, "v": {"S": "ünïcode"}}})
    got = call("GetItem", {"TableName": "e2e", "Key": {"pk": {"S": "k1"}}})
    assert got["Item"]["v"]["S"] == "ünïcode"


def test_moto_rejects_dynamodb_unsigned_and_wrong_secret(moto):
    headers = {
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": "DynamoDB_20120810.ListTables",
    }
    unsigned = requests.post(moto.url + "/", data=b"{}", headers=headers, timeout=10)
    assert unsigned.status_code >= 400
    wrong = direct(moto, "POST", "/", headers=headers, body=b"{}", service="dynamodb", secret="y" * 40)
    assert wrong.status_code >= 400 and "Signature" in wrong.text


# ---- S3 --------------------------------------------------------------------------------------
# Keys moto verifies correctly (see NOTES: it rebuilds non-ASCII, '+', ';=&', "'()!*" and '$@'
# paths wrongly); those awkward keys are covered by test_e2e_verifier.py instead.
S3_KEYS = ["plain.txt", "dir/sub/file name with spaces.txt", "tilde~under_score-dash.v1", "a%2Fb"]


def test_s3_list_put_get_objects_with_awkward_keys(proxy):
    r = requests.put(f"{proxy.url}/s3/e2e-bucket", timeout=10)
    assert r.status_code == 200, r.text
    for key in S3_KEYS:
        data = f"content of {key}".encode()
        r = requests.put(
            f"{proxy.url}/s3/e2e-bucket/{key}",
            data=data,
            headers={"content-type": "text/plain"},
            timeout=10,
        )
        assert r.status_code == 200, (key, r.text)
        assert r.headers.get("etag"), "etag must be passed back"
        r = requests.get(f"{proxy.url}/s3/e2e-bucket/{key}", timeout=10)
        assert r.status_code == 200, (key, r.text)
        assert r.content == data
    r = requests.get(f"{proxy.url}/s3/", timeout=10)
    assert r.status_code == 200 and "<Name>e2e-bucket</Name>" in r.text
    r = requests.get(f"{proxy.url}/s3/e2e-bucket?list-type=2&prefix=dir/", timeout=10)
    names = [e.text for e in ET.fromstring(r.content).iter() if e.tag.endswith("Key")]
    assert names == ["dir/sub/file name with spaces.txt"]


def test_moto_rejects_s3_with_tampered_signature(moto):
    ok = direct(moto, "GET", "/", service="s3")
    assert ok.status_code == 200, ok.text

    def tamper(h):
        h["Authorization"] = h["Authorization"][:-4] + "0000"

    bad = direct(moto, "GET", "/", service="s3", tamper=tamper)
    assert bad.status_code == 403 and "SignatureDoesNotMatch" in bad.text
