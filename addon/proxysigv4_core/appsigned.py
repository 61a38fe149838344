"""An app's own SigV4 signatures, explained: a request that passes through a non-reverse listener
already signed (`AWS4-HMAC-SHA256`), with no host route, is left as it is; what it was signed with
is recorded for mitmweb's SigV4 view and the diagnosis: the scope, the signed headers, and the
canonical request and string to sign rebuilt by botocore from what was actually sent. When the
proxy's own credentials hold the secret of the access key the app used, botocore also computes
the signature again, which tells a request changed after signing from a refusal by AWS."""

import logging
from collections.abc import Callable

from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from mitmproxy import http

from .flowrecord import FlowRecord, set_record
from .redaction import mask_key_id, redact_canonical
from .signers import PAYLOAD_KEY, S3Signer, SigV4Signer, body_sha256

log = logging.getLogger("proxysigv4")
ALGORITHM = "AWS4-HMAC-SHA256 "
MATCHES = "the signature matches what was sent"
DIFFERS = (
    "the signature does not match what was sent: something changed the request after the SDK signed it, "
    "or the secret is wrong"
)


def record_explanation(flow: http.HTTPFlow, secret_for: Callable[[str], ReadOnlyCredentials | None]) -> None:
    """For a flow passing through: if the app signed it, its explanation in the flow's record (and
    a warning marker when the signature does not match what was sent). Never changes the request;
    never raises."""
    try:
        record = explain(flow.request, secret_for)
    except Exception:
        log.exception("proxysigv4: could not explain the app's signature of %s", flow.request.pretty_url)
        return
    if record is not None:
        set_record(flow, record)
        if record.get("recomputed") == DIFFERS:
            flow.comment, flow.marked = f"proxysigv4: {DIFFERS}", ":warning:"


def explain(
    request: http.Request, secret_for: Callable[[str], ReadOnlyCredentials | None]
) -> FlowRecord | None:
    """The record of an app-signed request (None if it is not SigV4-signed in its Authorization)."""
    authorization = request.headers.get("authorization", "")
    parts = _parts(authorization)
    if parts is None:
        return None
    key, day, region, service, names, signature = parts
    signed_at = request.headers.get("x-amz-date", "")
    sent = AWSRequest(method=request.method, url=request.url, data=request.raw_content or b"")
    for name in names:
        for value in request.headers.get_all(name):
            sent.headers[name] = value
    if "x-amz-content-sha256" not in {n.lower() for n in names}:
        sent.context[PAYLOAD_KEY] = body_sha256(request.raw_content or b"")
    sent.context["timestamp"] = signed_at if signed_at.startswith(day) else f"{day}T000000Z"
    credentials = secret_for(key)
    signer = (S3Signer if service == "s3" else SigV4Signer)(
        credentials or ReadOnlyCredentials(key, "", None), service, region
    )
    canonical_request = signer.canonical_request(sent)
    string_to_sign = signer.string_to_sign(sent, canonical_request)
    record: FlowRecord = {
        "app_signed": True,
        "target_url": request.url,
        "service": service,
        "region": region,
        "access_key_id": mask_key_id(key),
        "signed_at": signed_at,
        "credential_scope": f"{day}/{region}/{service}/aws4_request",
        "signed_headers": names,
        "canonical_request": redact_canonical(canonical_request),
        "string_to_sign": string_to_sign,
    }
    if credentials is not None:  # botocore's signature over what was sent, with the known secret
        record["recomputed"] = MATCHES if signer.signature(string_to_sign, sent) == signature else DIFFERS
    return record


def _parts(authorization: str) -> tuple[str, str, str, str, list[str], str] | None:
    """(key, day, region, service, signed names, signature) of a SigV4 Authorization, or None."""
    if not authorization.startswith(ALGORITHM):
        return None
    fields = {}
    for item in authorization[len(ALGORITHM) :].split(","):
        name, _, value = item.strip().partition("=")
        fields[name] = value
    scope = fields.get("Credential", "").split("/")
    if (
        len(scope) != 5
        or scope[4] != "aws4_request"
        or "SignedHeaders" not in fields
        or "Signature" not in fields
    ):
        return None
    return scope[0], scope[1], scope[2], scope[3], fields["SignedHeaders"].split(";"), fields["Signature"]
