"""The addon's record in `flow.metadata["proxysigv4"]`: what it signed (or refused, or answered
itself), read by the SigV4 content view, replay, the diagnosis and the request line."""

from typing import TypedDict

from mitmproxy import http

from .identity import Intended

KEY = "proxysigv4"


class Diagnosis(TypedDict, total=False):
    code: str
    summary: str
    detail: str | None
    kind: str  # "authorization" for a denial explained; absent for signature and clock diagnoses


class FlowRecord(TypedDict, total=False):
    """A signed request's record (route ... replayed, then diagnosis if AWS refused it), a refusal's
    (rejected, status, message, client_path) or a CORS preflight's (preflight, client_path)."""

    route: str  # the route's prefix; replay finds the route by it
    client_path: str  # the path and query as the client sent them
    target_url: str
    service: str
    region: str
    credential_source: str
    credential_method: str | None
    access_key_id: str | None  # masked: AKIA…WXYZ
    intended: Intended  # who the credentials are meant to be (a role ARN, an SSO role), if said
    signed_at: str
    credential_scope: str
    signed_headers: list[str]
    payload: str
    canonical_request: str  # the session token replaced by a short hash
    string_to_sign: str | None  # None for SigV4a (computed inside awscrt)
    replayed: bool
    diagnosis: Diagnosis
    rejected: str  # the error code of the proxy's own refusal
    status: int
    message: str
    preflight: str | None  # the origin whose CORS preflight the proxy answered
    app_signed: bool  # signed by the app itself, passed through unchanged (appsigned.py)
    recomputed: str  # for an app-signed request: whether botocore's signature matches what was sent


def record_of(flow: http.HTTPFlow) -> FlowRecord:
    """The flow's record (empty for a flow the addon has not seen)."""
    return flow.metadata.get(KEY, {})


def set_record(flow: http.HTTPFlow, record: FlowRecord) -> None:
    flow.metadata[KEY] = record
