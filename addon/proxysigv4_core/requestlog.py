"""The one line per request: `METHOD client-path -> target-url STATUS DURATION SIZE route=... svc/region`,
on its own logger (`proxysigv4.request`), written once the answer is on its way."""

import asyncio
import logging
import time
from typing import NamedTuple

from mitmproxy import http

from . import logformat
from .config import Route
from .flowrecord import record_of

request_log = logging.getLogger("proxysigv4.request")


class RequestHead(NamedTuple):
    """What the request line says of a request before its answer: method, the client's path and
    query, and where it went (the target URL, "-" for a refusal, "(CORS preflight)")."""

    method: str
    path: str
    target: str

    @property
    def text(self) -> str:
        return f"{self.method} {self.path} -> {self.target} "


def request_fields(
    flow: http.HTTPFlow, head: RequestHead, route: Route | None, started: float
) -> dict[str, object]:
    """The request line's fields, as a JSON log line carries them (never a secret)."""
    response = flow.response
    record = record_of(flow)
    fields: dict[str, object] = {
        "method": head.method,
        "path": head.path,
        "route": route.prefix if route else record.get("route"),
        "target": head.target,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "service": route.service if route else None,
        "region": route.region if route else None,
    }
    if response is not None:
        fields["status"] = response.status_code
        length = response.headers.get("content-length")
        fields["bytes"] = int(length) if length and length.isdigit() else None
        if length is None and not response.stream:
            fields["bytes"] = len(response.raw_content or b"")
    else:
        fields["status"] = None
        fields["error"] = flow.error.msg if flow.error else "?"
    if "rejected" in record:
        fields["refusal"] = record["rejected"]
    return fields


def request_line(
    flow: http.HTTPFlow, head: RequestHead, route: Route | None, started: float, verbose: bool
) -> str:
    """The request's line: `head` ("METHOD client-path -> target-url "), then status, duration,
    size, route and service/region (and the signed header names when `verbose`)."""
    response = flow.response
    status: int | str
    if response is not None:
        status = response.status_code
        size = response.headers.get("content-length") or (
            "streamed" if response.stream else str(len(response.raw_content or b""))
        )
    else:
        status, size = f"error({flow.error.msg if flow.error else '?'})", "-"
    line = (
        f"{head.text}{status} {(time.monotonic() - started) * 1000:.1f}ms {size}B "
        f"{route.log_label if route else 'route=- -'}"
    )
    signed = record_of(flow).get("signed_headers")
    if verbose and signed is not None:
        line += " signed=" + ";".join(signed)
    return line


def log_request(
    flow: http.HTTPFlow, head: RequestHead, route: Route | None, started: float, verbose: bool
) -> None:
    if request_log.isEnabledFor(logging.INFO):
        # the fields only a JSON line shows (6.7 us a request in make bench): made only for JSON lines
        fields = request_fields(flow, head, route, started) if logformat.is_json() else None
        log_request_line(request_line(flow, head, route, started, verbose), fields)


def log_request_line(line: str, fields: dict[str, object] | None = None) -> None:
    """Log one request's line at info: on the event loop's next turn when one is running, i.e.
    once mitmproxy has sent what the hook was about to let go (the response to the client, or the
    proxy's own refusal). A request's line is written when its answer is on the way, as access logs
    are; the log handlers' work then does not delay the answer."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a tool, a test calling a hook directly): now
        _emit_request_line(line, fields)
    else:
        loop.call_soon(_emit_request_line, line, fields)


def _emit_request_line(line: str, fields: dict[str, object] | None = None) -> None:
    request_log.handle(_request_record(line, fields))


_record_template: logging.LogRecord | None = None


def _request_record(line: str, fields: dict[str, object] | None = None) -> logging.LogRecord:
    """The request line's record, copied from a template (Logger.info walks the stack and looks up
    thread, process and task names, the same for every line: 3.3 -> 0.9 µs per line; test_addon's
    test_request_records_carry_what_a_log_record_carries)."""
    global _record_template
    if _record_template is None:
        _record_template = request_log.makeRecord(request_log.name, logging.INFO, __file__, 0, "", (), None)
        _record_template.taskName = None
    template = _record_template
    record = logging.LogRecord.__new__(logging.LogRecord)
    attributes = template.__dict__.copy()
    now = time.time()
    attributes["relativeCreated"] = template.relativeCreated + (now - template.created) * 1000
    attributes["created"] = now
    attributes["msecs"] = int((now - int(now)) * 1000) + 0.0  # as LogRecord computes them
    attributes["msg"] = line
    if fields:  # as `extra=` would add them: a JSON formatter writes them as the line's fields
        attributes.update(fields)
    record.__dict__ = attributes
    return record


def is_request_line(record: logging.LogRecord) -> bool:
    return record.name == request_log.name
