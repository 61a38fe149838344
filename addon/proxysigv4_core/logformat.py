"""The proxy's own log lines as text (mitmproxy's terminal) or as JSON, one object per line on
stderr, for log aggregators (python-json-logger formats them). A request line carries its fields
(method, path, route, target, status, duration_ms, bytes, service, region, error, refusal)."""

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

LOGGERS = ("proxysigv4", "proxysigv4.request")
_handler: logging.Handler | None = None


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    return handler


def is_json() -> bool:
    return _handler is not None


def use(fmt: str) -> None:
    """Switch the proxy's loggers to `fmt` ("text": through mitmproxy's handlers; "json": a JSON
    handler of their own, no longer passed on to mitmproxy's terminal)."""
    global _handler
    logger = logging.getLogger("proxysigv4")
    if _handler is not None:
        logger.removeHandler(_handler)
        _handler = None
    logger.propagate = True
    if fmt == "json":
        _handler = json_handler()
        logger.addHandler(_handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
