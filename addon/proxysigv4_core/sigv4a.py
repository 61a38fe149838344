"""SigV4a (ECDSA P-256, valid in a region set such as `*`): botocore's CRT signers (awscrt, an
optional dependency: imported when a SigV4a route signs)."""

import dataclasses
import functools
from typing import TYPE_CHECKING

from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from .signers import (
    CONTENT_SHA256_SERVICES,
    PAYLOAD_KEY,
    S3_SIGN_PAYLOAD,
    S3Signer,
    SignedRequest,
    SigV4Signer,
    aws_request,
    body_sha256,
)

if TYPE_CHECKING:  # awscrt is optional: botocore.crt is imported when a SigV4a route signs
    from botocore.crt.auth import CrtSigV4AsymAuth


def sign_request_sigv4a(
    *,
    method: str,
    url: str,
    host_header: str,
    headers: list[tuple[str, str]],
    body: bytes,
    credentials: ReadOnlyCredentials,
    service: str,
    region: str,
    is_s3: bool,
    payload_hash: str | None = None,
    body_digest: str | None = None,
) -> SignedRequest:
    """SigV4a (ECDSA P-256, valid in a region set such as `*`) by botocore's CRT signer (awscrt).

    The CRT does not return its canonical request or string to sign. The canonical request
    recorded for mitmweb is botocore's `canonical_request` of the signed request over the headers
    the CRT signed (the same algorithm; the test suite verifies real signatures against it); the
    string to sign is not recorded."""
    from botocore.crt.auth import CrtS3SigV4AsymAuth, CrtSigV4AsymAuth

    request = aws_request(method, url, host_header, headers, body)
    signer: type[CrtSigV4AsymAuth] = CrtS3SigV4AsymAuth if is_s3 else CrtSigV4AsymAuth
    if payload_hash is not None:  # the CRT signer takes an explicit payload hash from this header
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    else:
        # The body's SHA-256 computed here (or given: hashed in a thread) rather than by the CRT, which
        # would read the body again through a Python stream, on the event loop (~50-100 ms for 32 MiB).
        body_digest = body_digest or body_sha256(body)
        request.headers["X-Amz-Content-SHA256"] = body_digest
        if not (is_s3 or service in CONTENT_SHA256_SERVICES):
            signer = _crt_digest_given()  # the same signature, without sending that header
    if is_s3:
        request.context["client_config"] = S3_SIGN_PAYLOAD
    signer(_crt_credentials(credentials), service, region).add_auth(request)
    out = list(request.headers.items())
    signed_at = next((v for k, v in out if k.lower() == "x-amz-date"), "")
    signed = SignedRequest.from_authorization(out, "", None, signed_at)
    record = AWSRequest(method=method, url=url, data=body)
    for name, value in out:
        if name.lower() in signed.signed_headers:
            record.headers[name] = value
    record.context[PAYLOAD_KEY] = payload_hash or body_digest
    recorder = (S3Signer if is_s3 else SigV4Signer)(credentials, service, region)
    return dataclasses.replace(signed, canonical_request=recorder.canonical_request(record))


def _crt_credentials(credentials: ReadOnlyCredentials) -> Credentials:
    """The CRT signers read a key pair that is there (botocore passes its frozen credentials)."""
    if not credentials.access_key or not credentials.secret_key:
        raise ValueError("SigV4a signing needs an access key and a secret key")
    return Credentials(credentials.access_key, credentials.secret_key, credentials.token)


@functools.cache
def _crt_digest_given() -> "type[CrtSigV4AsymAuth]":
    """botocore's CRT SigV4a signer for a service that gets no X-Amz-Content-SHA256 header, given
    the body's SHA-256 in that header: botocore takes it as the payload's hash (the canonical
    request's last line, as when the CRT hashes the body) and removes the header before signing;
    this class does not add it back."""
    from botocore.crt.auth import CrtSigV4AsymAuth

    class CrtSigV4AsymDigestGiven(CrtSigV4AsymAuth):
        def _should_add_content_sha256_header(self, explicit_payload: str | None) -> bool:
            return False

    return CrtSigV4AsymDigestGiven
