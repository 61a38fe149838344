"""Explain the signature errors AWS answers with, in words that point at the fix.

AWS's error shapes: S3's XML (<Error><Code/><Message/> and, for SignatureDoesNotMatch, its own
<CanonicalRequest/> and <StringToSign/>), the query protocol's XML (<ErrorResponse><Error>...),
and the JSON protocols' {"__type"/"code", "message"}, whose SignatureDoesNotMatch message often
carries "The Canonical String for this request should have been '...'".
"""

import datetime
import difflib
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .redaction import redact_canonical

DIAGNOSIS_HEADER = "x-proxysigv4-diagnosis"
SIGNATURE_ERRORS = frozenset(
    {
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationHeaderMalformed",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestTimeTooSkewed",
        "RequestExpired",
        "InvalidSignature",
    }
)
_JSON_CANONICAL = re.compile(
    r"The Canonical String for this request should have been\s*'(?P<cr>.*?)'\s*"
    r"The String-to-Sign should have been\s*'(?P<sts>.*?)'",
    re.DOTALL,
)
_SKEW = re.compile(r"Signature (expired|not yet current)|too skewed|RequestTimeTooSkewed", re.IGNORECASE)
_REGION_SCOPE = re.compile(
    r"(?:region '(?P<wrong>[\w-]+)' is wrong; expecting '(?P<want>[\w-]+)')"
    r"|(?:scoped to a valid region(?:, not '(?P<wrong2>[\w-]*)')?)"
)
_SERVICE_SCOPE = re.compile(r"scoped to (?:the )?correct service:? '(?P<want>[\w.-]+)'")


@dataclass(frozen=True)
class AwsError:
    code: str
    message: str
    canonical_request: str | None = None
    string_to_sign: str | None = None
    server_time: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    code: str
    summary: str  # one line, also sent as a header and logged
    detail: str = ""  # several lines for mitmweb (e.g. a diff)


def _xml_fields(body: str) -> dict[str, str]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return {}
    return {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}


def parse_aws_error(body: bytes, headers: dict[str, str]) -> AwsError | None:
    """AWS's error code and message (and canonical strings when AWS gives them), or None."""
    text = body[:65536].decode("utf-8", "replace").strip()
    header_code = (headers.get("x-amzn-errortype") or "").split(":", 1)[0] or None
    if text.startswith("<"):
        fields = _xml_fields(text)
        code = fields.get("Code") or header_code
        if not code:
            return None
        return AwsError(
            code,
            fields.get("Message", ""),
            fields.get("CanonicalRequest"),
            fields.get("StringToSign"),
            fields.get("ServerTime"),
            fields.get("Region"),
        )
    try:
        data = json.loads(text) if text.startswith("{") else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("error"), dict):  # OpenSearch's {"error": {"type", "reason"}, "status"}
            data = {"code": data["error"].get("type"), "message": data["error"].get("reason")}
        raw_code = data.get("__type") or data.get("code") or data.get("Code") or header_code or ""
        code = str(raw_code).rsplit("#", 1)[-1]
        message = str(data.get("message") or data.get("Message") or "")
        if not code and not message:
            return None
        m = _JSON_CANONICAL.search(message)
        return AwsError(code, message, m["cr"] if m else None, m["sts"] if m else None)
    return AwsError(header_code, text[:500]) if header_code else None


def _skew(error: AwsError, now: datetime.datetime) -> Diagnosis:
    local = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    summary = f"AWS rejected the request time: this machine's clock reads {local} (UTC)"
    server_time = _parse_time(error.server_time) if error.server_time else None
    if server_time is not None:
        offset = (now - server_time).total_seconds()
        summary += f", AWS's reads {server_time:%Y-%m-%dT%H:%M:%SZ}: the local clock is {abs(offset):.0f}s "
        summary += "ahead" if offset > 0 else "behind"
    summary += "; signatures are valid for 5 minutes around AWS's time, so sync the clock (NTP)"
    return Diagnosis(error.code, summary)


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _header_lines(canonical: str) -> dict[str, str]:
    lines = canonical.split("\n")
    out = {}
    for line in lines[3:]:
        if not line:
            break
        name, _, value = line.partition(":")
        out[name] = value
    return out


def compare_canonical(ours: str, theirs: str) -> list[str]:
    """What differs between our canonical request and AWS's, element by element."""
    ours_l, theirs_l = ours.split("\n"), theirs.split("\n")
    findings = []
    labels = {0: "method", 1: "canonical URI (path)", 2: "canonical query string"}
    for i, label in labels.items():
        if i < len(ours_l) and i < len(theirs_l) and ours_l[i] != theirs_l[i]:
            findings.append(f"{label}: we signed {ours_l[i]!r}, AWS computed {theirs_l[i]!r}")
    ours_h, theirs_h = _header_lines(ours), _header_lines(theirs)
    for name in sorted(set(ours_h) | set(theirs_h)):
        if ours_h.get(name) != theirs_h.get(name):
            if name not in theirs_h:
                findings.append(f"header {name}: signed but AWS did not receive it (removed after signing)")
            elif name not in ours_h:
                findings.append(f"header {name}: AWS counted it but we did not sign it")
            else:
                findings.append(
                    f"header {name}: we signed {ours_h[name]!r}, AWS received {theirs_h[name]!r} "
                    "(changed after signing: an addon such as modify_headers, or a hop in between)"
                )
    if ours_l[-1:] != theirs_l[-1:]:
        findings.append(
            f"payload hash: we signed {ours_l[-1]!r}, AWS computed {theirs_l[-1]!r} "
            "(the body changed after signing)"
        )
    return findings


def diagnose(
    error: AwsError,
    *,
    route: str,
    source: str,
    service: str,
    region: str,
    canonical_request: str | None,
    string_to_sign: str | None,
    access_key: str | None,
    now: datetime.datetime,
    changed: str | None = None,
) -> Diagnosis | None:
    """Explain a signature-related AWS error for the route that signed the request."""
    code, message = error.code, error.message
    if code not in SIGNATURE_ERRORS and not _SKEW.search(message):
        return None
    if code in ("RequestTimeTooSkewed", "RequestExpired") or _SKEW.search(message):
        return _skew(error, now)
    found = _scope(error, route, source, service, region) or _credentials(error, route, access_key)
    if found is not None or code.startswith("AccessDenied") and "credential" not in message.lower():
        return found  # None: an authorization (IAM policy) denial, not a signing problem
    if error.canonical_request is not None and canonical_request is not None:
        return _mismatch(error, canonical_request, string_to_sign, access_key, route, source)
    if changed:
        return Diagnosis(
            code,
            f"signature mismatch: the request was changed after signing: {changed} (an addon that runs "
            "after proxysigv4, such as map_remote, rewrote it)",
        )
    return Diagnosis(
        code,
        f"AWS computed a different signature ({message[:160]}); AWS did not return its canonical request, so "
        "compare ours in the SigV4 view: common causes are a header changed after signing, a CNAME'd host "
        "(set service/region), or the wrong secret key",
    )


def _scope(error: AwsError, route: str, source: str, service: str, region: str) -> Diagnosis | None:
    """The credential scope's region or service is not the one AWS expects."""
    code, message = error.code, error.message
    scope = _REGION_SCOPE.search(message)
    if scope or (code == "AuthorizationHeaderMalformed" and error.region):
        want = (scope and scope["want"]) or error.region
        if want:
            return Diagnosis(
                code,
                f"AWS expects region {want!r}, we signed for {region!r}: set `region: {want}` "
                f"on route {route} in {source}",
            )
        return Diagnosis(
            code,
            f"AWS rejects region {region!r} in the credential scope: set the right `region:` "
            f"on route {route} in {source}",
        )
    service_scope = _SERVICE_SCOPE.search(message)
    if service_scope:
        want = service_scope["want"]
        return Diagnosis(
            code,
            f"AWS expects service {want!r}, we signed for {service!r}: set `service: {want}` "
            f"on route {route} in {source}",
        )
    return None


def _credentials(error: AwsError, route: str, access_key: str | None) -> Diagnosis | None:
    """Unknown or expired credentials, and API Gateway's and AWS's other signature complaints."""
    code, message = error.code, error.message
    if code in ("InvalidClientTokenId", "UnrecognizedClientException", "InvalidAccessKeyId"):
        return Diagnosis(
            code,
            f"AWS does not know access key {access_key or '?'} used by route {route}: its "
            "credentials are wrong, deleted, or from another account/partition; fix them, "
            "then run the sigv.refresh command",
        )
    if code in ("ExpiredToken", "ExpiredTokenException"):
        return Diagnosis(
            code,
            f"the session token of route {route} has expired: renew it (e.g. aws sso login), "
            "then run the sigv.refresh command",
        )
    if code.startswith("MissingAuthenticationToken"):
        return Diagnosis(
            code,
            "API Gateway answers this for a path or method that has no resource (or an IAM "
            "authorizer it cannot match); check the path the request was sent to",
        )
    if code.startswith("IncompleteSignature"):
        return Diagnosis(code, f"AWS calls the signature incomplete: {message[:200]}")
    return None


def _unified(ours: str, theirs: str, what: str) -> str:
    return "\n".join(
        difflib.unified_diff(
            ours.split("\n"), theirs.split("\n"), f"{what} (proxysigv4)", f"{what} (AWS)", lineterm=""
        )
    )


def _mismatch(
    error: AwsError,
    canonical_request: str,
    string_to_sign: str | None,
    access_key: str | None,
    route: str,
    source: str,
) -> Diagnosis:
    """AWS returned its canonical request: what differs, else the string to sign, else the key."""
    code = error.code
    theirs = redact_canonical((error.canonical_request or "").replace("\r\n", "\n"))
    findings = compare_canonical(canonical_request, theirs)
    if findings:
        diff = _unified(canonical_request, theirs, "canonical request")
        return Diagnosis(code, "signature mismatch: " + "; ".join(findings), diff)
    if error.string_to_sign and string_to_sign and error.string_to_sign.strip() != string_to_sign.strip():
        return Diagnosis(
            code,
            "signature mismatch: same canonical request, different string to sign (credential scope or date)",
            _unified(string_to_sign, error.string_to_sign, "string to sign"),
        )
    return Diagnosis(
        code,
        f"signature mismatch with the same canonical request and string to sign: the secret "
        f"key does not belong to access key {access_key or '?'} (route {route} in {source})",
    )
