"""An app's own signed calls through mitmweb's forward listener, explained over mitmweb's API: the
request passes unchanged; the SigV4 view holds what it was signed with; a path changed after
signing is named, and when AWS refuses a correct signature the diff against AWS's canonical
request is shown, with botocore's word that the signature matches what was sent."""

import pytest
import requests
import yaml
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from helpers import KEY, SECRET, proxy_env, route, running_mitmweb, s3_request_as_received, wait_for
from peers.processes import free_port
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e


def s3_refusing(received):
    """S3 refusing every request with SignatureDoesNotMatch and the canonical request it computed
    for /bucket/other (as if something on the way had changed the path)."""
    if received.target == "/bucket/denied":  # S3's enhanced AccessDenied (troubleshoot-403-errors.html)
        message = (
            "User: arn:aws:iam::123456789012:user/app-user is not authorized to perform: s3:PutObject on resource: "
            '"arn:aws:s3:::bucket/denied" because no identity-based policy allows the s3:PutObject action'
        )
        return (
            403,
            [("content-type", "application/xml")],
            f"<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>".encode(),
        )
    auth, request = s3_request_as_received(received, "/bucket/other")
    canonical = auth.canonical_request(request)
    body = (
        "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match"
        f"</Message><CanonicalRequest>{canonical}</CanonicalRequest></Error>"
    )
    return 403, [("content-type", "application/xml")], body.encode()


def app_signed_put(upstream, path: str, changed_path: str | None = None) -> AWSRequest:
    """What an SDK sends: signed with KEY (whose secret the proxy's own chain also holds)."""
    request = AWSRequest(method="PUT", url=f"{upstream.url}{path}", data=b"payload")
    S3SigV4Auth(ReadOnlyCredentials(KEY, SECRET, None), "s3", "eu-west-1").add_auth(request)
    if changed_path:
        request.url = f"{upstream.url}{changed_path}"
    return request


def test_an_apps_signed_calls_are_explained_in_mitmweb(tmp_path):
    with Upstream(s3_refusing) as upstream:
        config = tmp_path / "routes.yaml"
        config.write_text(yaml.safe_dump({"proxysigv4": {"/s3": route(upstream.url, "s3")}}))
        forward = free_port()
        with running_mitmweb(config, tmp_path, proxy_env(tmp_path), "--mode", f"regular@{forward}") as web:
            # the proxy's own credentials are loaded by its first signed request
            assert requests.put(f"{web.proxy}/s3/bucket/warm", data=b"x", timeout=10).status_code == 403
            proxies = {"http": f"http://127.0.0.1:{forward}"}
            for path, changed in (
                ("/bucket/key", None),
                ("/bucket/signed", "/bucket/sent"),
                ("/bucket/denied", None),
            ):
                signed = app_signed_put(upstream, path, changed)
                r = requests.put(
                    signed.url, data=b"payload", headers=dict(signed.headers), proxies=proxies, timeout=10
                )
                assert r.status_code == 403 and "x-proxysigv4-diagnosis" not in r.headers
            sent = upstream.received[-1]
            assert dict((k.lower(), v) for k, v in sent.headers)["authorization"].startswith(
                f"AWS4-HMAC-SHA256 Credential={KEY}/"
            )
            flows = wait_for(
                lambda: (
                    [
                        f
                        for f in web.get("/flows")
                        if "/bucket/key" in f["request"]["path"] or "/bucket/sent" in f["request"]["path"]
                    ]
                    or None
                )
            )
            wait_for(lambda: len([f for f in web.get("/flows") if f.get("comment")]) >= 4)
            by_path = {f["request"]["path"]: f for f in web.get("/flows")}
            correct, changed = by_path["/bucket/key"], by_path["/bucket/sent"]
            assert correct["comment"].startswith(
                "proxysigv4 diagnosis (SignatureDoesNotMatch): the signature matches what was sent; AWS disagrees"
            ), correct["comment"]
            assert "signature does not match what was sent" in changed["comment"], changed["comment"]
            denied = by_path["/bucket/denied"]["comment"]
            assert "authorization denied (AWS saw user app-user" in denied and "AWS disagrees" not in denied
            assert (
                '{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bucket/denied"}'
                in denied
            )
            view = web.get(f"/flows/{correct['id']}/request/content/sigv4.json")
            text = view["text"]
            assert "signed by the app itself" in text and "-/bucket/key" in text and "+/bucket/other" in text
            assert SECRET not in text and len(flows) >= 1
