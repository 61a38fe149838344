"""The one line per request: `METHOD client-path -> target-url STATUS DURATION SIZE route=... svc/region`,
on its own logger (`proxysigv4.request`), written once the answer is on its way."""

import asyncio
import logging
import time

from mitmproxy import http

from .config import Route
from .flowrecord import record_of

request_log = logging.getLogger("proxysigv4.request")


def request_line(flow: http.HTTPFlow, head: str, route: Route | None, started: float, verbose: bool) -> str:
    """The request's line: `head` ("METHOD client-path -> target-url "), then status, duration,
    size, route and service/region (and the signed header names when `verbose`)."""
    response = flow.response
    if response is not None:
        status = response.status_code
        size = response.headers.get("content-length") or (
            "streamed" if response.stream else str(len(response.raw_content or b""))
        )
    else:
        status, size = f"error({flow.error.msg if flow.error else '?'})", "-"
    line = (
        f"{head}{status} {(time.monotonic() - started) * 1000:.1f}ms {size}B "
        f"{route.log_label if route else 'route=- -'}"
    )
    signed = record_of(flow).get("signed_headers")
    if verbose and signed is not None:
        line += " signed=" + ";".join(signed)
    return line


def log_request(flow: http.HTTPFlow, head: str, route: Route | None, started: float, verbose: bool) -> None:
    if request_log.isEnabledFor(logging.INFO):
        log_request_line(request_line(flow, head, route, started, verbose))


def log_request_line(line: str) -> None:
    """Log one request's line at info: on the event loop's next turn when one is running, i.e.
    once mitmproxy has sent what the hook was about to let go (the response to the client, or the
    proxy's own refusal). A request's line is written when its answer is on the way, as access logs
    are; the log handlers' work then does not delay the answer."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a tool, a test calling a hook directly): now
        _emit_request_line(line)
    else:
        loop.call_soon(_emit_request_line, line)


def _emit_request_line(line: str) -> None:
    request_log.handle(_request_record(line))


_record_template: dict | None = None


def _request_record(line: str) -> logging.LogRecord:
    """The request line's record, copied from a template (Logger.info walks the stack and looks up
    thread, process and task names, the same for every line: 3.3 -> 0.9 µs per line; test_addon's
    test_request_records_carry_what_a_log_record_carries)."""
    global _record_template
    if _record_template is None:
        template = request_log.makeRecord(request_log.name, logging.INFO, __file__, 0, "", None, None)
        template.taskName = None
        _record_template = template.__dict__
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = _record_template.copy()
    now = time.time()
    fields["relativeCreated"] += (now - fields["created"]) * 1000
    fields["created"] = now
    fields["msecs"] = int((now - int(now)) * 1000) + 0.0  # as LogRecord computes them
    fields["msg"] = line
    record.__dict__ = fields
    return record


def is_request_line(record: logging.LogRecord) -> bool:
    return record.name == request_log.name
