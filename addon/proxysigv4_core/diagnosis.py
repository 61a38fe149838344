"""Explain signature failures that AWS reports, in words that point at the fix.

This module holds the clock-skew diagnosis; AWS's error shapes are S3's XML
(<Error><Code>..</Code><Message>..</Message>) and the JSON/query protocols'
(`__type`/`code`/`Code` plus `message`/`Message`).
"""

import datetime
import re

DIAGNOSIS_HEADER = "x-proxysigv4-diagnosis"
_SKEW_CODES = ("RequestTimeTooSkewed", "RequestExpired")
_SKEW_MESSAGES = re.compile(r"Signature (expired|not yet current)", re.IGNORECASE)
_SERVER_TIME = re.compile(r"<ServerTime>([^<]+)</ServerTime>")


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def diagnose_skew(status: int, body: bytes, now: datetime.datetime) -> str | None:
    """A message naming the local clock when AWS rejected the request's time, else None."""
    if status not in (400, 403) or not body:
        return None
    text = body[:8192].decode("utf-8", "replace")
    if not (any(code in text for code in _SKEW_CODES) or _SKEW_MESSAGES.search(text)):
        return None
    local = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = f"AWS rejected the request time: this machine's clock reads {local} (UTC)"
    server = _SERVER_TIME.search(text)
    server_time = _parse_time(server.group(1)) if server else None
    if server_time is not None:
        offset = (now - server_time).total_seconds()
        message += f", AWS's reads {server_time:%Y-%m-%dT%H:%M:%SZ}: the local clock is {abs(offset):.0f}s "
        message += "ahead" if offset > 0 else "behind"
    return message + "; signatures are valid for 5 minutes around AWS's time, so sync the clock (NTP)"
