from mitmproxy import contentviews
from mitmproxy.test import taddons, tflow

from proxysigv4_core.contentview import SigV4, render

META = {
    "route": "/api",
    "client_path": "/api/x?q=1",
    "target_url": "https://abc.execute-api.eu-west-1.amazonaws.com/prod/x?q=1",
    "service": "execute-api",
    "region": "eu-west-1",
    "credential_source": "default credential chain",
    "credential_method": "env",
    "access_key_id": "AKIA…0001",
    "signed_at": "20261126T120000Z",
    "credential_scope": "20261126/eu-west-1/execute-api/aws4_request",
    "signed_headers": ["host", "x-amz-date"],
    "payload": "hashed, sha256 e3b0",
    "canonical_request": "GET\n/prod/x\nq=1\nhost:abc\nx-amz-date:20261126T120000Z\n\nhost;x-amz-date\ne3b0",
    "string_to_sign": "AWS4-HMAC-SHA256\n20261126T120000Z\n20261126/eu-west-1/execute-api/aws4_request\nff",
}


def test_render_summary_then_canonical_request_and_string_to_sign():
    text = render(META)
    summary, _, rest = text.partition("--- canonical request ---")
    assert (
        "route           /api" in summary
        and "scope           20261126/eu-west-1/execute-api/aws4_request" in summary
    )
    assert "signed headers  host;x-amz-date" in summary and "access key id   AKIA…0001" in summary
    canonical, _, sts = rest.partition("--- string to sign ---")
    assert canonical.strip() == META["canonical_request"]
    assert sts.strip() == META["string_to_sign"]


def test_render_diagnosis_refusals_and_foreign_flows():
    text = render(
        META
        | {"diagnosis": {"code": "SignatureDoesNotMatch", "summary": "header x changed", "detail": "-a\n+b"}}
    )
    assert "DIAGNOSIS (SignatureDoesNotMatch): header x changed" in text and "-a\n+b" in text
    refused = render(
        {"rejected": "no_route", "status": 404, "message": "no route matches path '/x'", "client_path": "/x"}
    )
    assert refused.startswith("Refused by proxysigv4 (never forwarded): 404 no_route")
    assert render(None) == "This flow was not handled by proxysigv4."


def test_an_authorization_diagnosis_comes_first_with_its_structured_detail():
    detail = "who      AWS saw user ci\nwhat     sqs:CreateQueue\nfix      add ..."
    diagnosis = {"code": "AccessDenied", "summary": "authorization denied (...)", "detail": detail}
    text = render(META | {"diagnosis": diagnosis | {"kind": "authorization"}})
    assert text.startswith(
        "DIAGNOSIS (AccessDenied): authorization denied\n\n" + detail + "\n\nproxysigv4 signed"
    )
    assert "authorization denied (...)" not in text  # the one-line summary is the comment's
    signature = render(META | {"diagnosis": diagnosis | {"code": "SignatureDoesNotMatch"}})
    assert signature.startswith("DIAGNOSIS (SignatureDoesNotMatch): authorization denied (...)")


def test_registered_view_is_never_auto_selected_but_renders_when_chosen():
    with taddons.context():
        check_registered_view()


def check_registered_view():
    contentviews.add(SigV4())
    f = tflow.tflow()
    f.request.content = b'{"a": 1}'
    f.request.headers["content-type"] = "application/json"
    f.metadata["proxysigv4"] = META
    auto = contentviews.prettify_message(f.request, f, "auto")
    assert auto.view_name != "SigV4"
    chosen = contentviews.prettify_message(f.request, f, "sigv4")
    assert chosen.view_name == "SigV4" and "--- canonical request ---" in chosen.text
    empty = tflow.tflow()
    empty.request.content = b""
    empty.metadata["proxysigv4"] = META
    assert "--- string to sign ---" in contentviews.prettify_message(empty.request, empty, "sigv4").text
