"""The `SigV4` content view: what proxysigv4 did to a request, readable in mitmweb and the console.

A summary on top, then the canonical request and string to sign exactly as signed. It is never
chosen automatically; pick "SigV4" in the view selector (API: /flows/<id>/request/content/sigv4.json).
"""

import textwrap

from mitmproxy import contentviews

FIELDS = (
    ("route", "route"),
    ("client_path", "client path"),
    ("target_url", "target URL"),
    ("service", "service"),
    ("region", "region"),
    ("credential_source", "credentials"),
    ("credential_method", "resolved via"),
    ("access_key_id", "access key id"),
    ("signed_at", "signed at"),
    ("credential_scope", "scope"),
    ("payload", "payload"),
    ("recomputed", "recomputed"),
)


def render(meta: dict | None) -> str:
    """The view's text for a flow's `proxysigv4` metadata (pure, for tests and the console)."""
    if not meta:
        return "This flow was not handled by proxysigv4."
    if "rejected" in meta:
        return (
            f"Refused by proxysigv4 (never forwarded): {meta.get('status', '')} {meta['rejected']}\n"
            f"{meta.get('message', '')}\nclient path: {meta.get('client_path', '')}\n"
        )
    width = max(len(label) for _, label in (*FIELDS, ("", "signed headers"))) + 2
    heading = "signed by the app itself (passed through unchanged)" if meta.get("app_signed") else None
    diagnosis = meta.get("diagnosis")
    lines = [*_diagnosis_lines(diagnosis), ""] if diagnosis else []  # AWS's refusal explained, first
    lines += [heading or "proxysigv4 signed this request", ""]
    lines += [f"{label:<{width}}{meta[key]}" for key, label in FIELDS if meta.get(key) is not None]
    lines.append(f"{'signed headers':<{width}}{';'.join(meta.get('signed_headers', []))}")
    if meta.get("replayed"):
        lines.append(f"{'replay':<{width}}re-signed for this replay")
    lines += ["", "--- canonical request ---", meta.get("canonical_request", "")]
    string_to_sign = meta.get("string_to_sign") or "(computed inside awscrt for SigV4a, not exposed)"
    lines += ["", "--- string to sign ---", string_to_sign]
    return "\n".join(lines) + "\n"


def _diagnosis_lines(diagnosis: dict) -> list[str]:
    """An authorization denial's structured detail (who, what, policy, fix) under a short heading;
    a signature diagnosis's summary, then its detail (a diff)."""
    if diagnosis.get("kind") == "authorization" and diagnosis.get("detail"):
        return [f"DIAGNOSIS ({diagnosis['code']}): authorization denied", "", diagnosis["detail"]]
    heading = f"DIAGNOSIS ({diagnosis['code']}): {diagnosis['summary']}"
    lines = textwrap.wrap(heading, 72, subsequent_indent="  ", break_on_hyphens=False)
    return lines + (["", diagnosis["detail"]] if diagnosis.get("detail") else [])


class SigV4(contentviews.Contentview):
    @property
    def name(self) -> str:
        return "SigV4"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        flow = metadata.flow
        return render(flow.metadata.get("proxysigv4") if flow is not None else None)

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        return -1  # only when chosen
