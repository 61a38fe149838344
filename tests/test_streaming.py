"""Streaming decisions: which request bodies stream and with which payload hash, which
responses stream; and the settings that control them."""

import pytest

from helpers import streaming_routes
from proxysigv4_core.config import DEFAULT_BUFFER_LIMIT, ConfigError, parse_config, parse_size
from proxysigv4_core.headers import first_values
from proxysigv4_core.routing import RequestRejected
from proxysigv4_core.streaming import STREAM_THRESHOLD, RequestPlan, plan_request, streams_response

R = streaming_routes()
MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("prefix", "headers", "plan"),
    [
        ("/s3", [("content-length", "100")], RequestPlan(False)),
        ("/s3", [("content-length", str(MIB + 1))], RequestPlan(True, "UNSIGNED-PAYLOAD")),
        ("/s3", [("transfer-encoding", "chunked")], RequestPlan(False)),
        (
            "/s3",
            [("content-length", "10"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
            RequestPlan(False, "UNSIGNED-PAYLOAD"),
        ),
        (
            "/s3",
            [("content-length", "99"), ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")],
            RequestPlan(True, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        ),
        ("/s3", [("content-length", "10"), ("x-amz-content-sha256", "ab" * 32)], RequestPlan(False)),
        ("/api", [("content-length", "1024")], RequestPlan(False)),
        (
            "/api",
            [("content-length", "10"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
            RequestPlan(False),
        ),
        ("/lattice", [("content-length", "10")], RequestPlan(False, "UNSIGNED-PAYLOAD")),
        ("/lattice", [("content-length", "5000")], RequestPlan(True, "UNSIGNED-PAYLOAD")),
    ],
)
def test_request_plan(prefix, headers, plan):
    assert plan_request(R[prefix], headers) == plan


@pytest.mark.parametrize(
    ("prefix", "headers", "status", "error"),
    [
        ("/api", [("content-length", "1025")], 413, "body_too_large"),
        (
            "/s3",
            [("content-length", "9"), ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")],
            400,
            "unsupported_payload_mode",
        ),
        (
            "/s3",
            [("x-amz-content-sha256", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER")],
            400,
            "unsupported_payload_mode",
        ),
        (
            "/s3",
            [
                ("transfer-encoding", "chunked"),
                ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            ],
            411,
            "length_required",
        ),
    ],
)
def test_request_plan_rejections(prefix, headers, status, error):
    with pytest.raises(RequestRejected) as e:
        plan_request(R[prefix], headers)
    assert (e.value.status, e.value.error) == (status, error)
    if error == "body_too_large":
        assert "bufferLimit 1024" in e.value.message and "/api" in e.value.message


@pytest.mark.parametrize(
    ("stream", "headers", "method", "expected"),
    [
        ("auto", [("content-type", "text/event-stream; charset=utf-8")], "GET", True),
        ("auto", [("content-type", "application/vnd.amazon.eventstream")], "POST", True),
        ("auto", [("content-type", "application/x-ndjson")], "GET", True),
        ("auto", [("content-type", "application/json"), ("transfer-encoding", "chunked")], "GET", True),
        (
            "auto",
            [("content-type", "application/json"), ("content-length", str(STREAM_THRESHOLD + 1))],
            "GET",
            True,
        ),
        ("auto", [("content-type", "application/json"), ("content-length", "100")], "GET", None),
        ("auto", [("content-length", str(10 * STREAM_THRESHOLD))], "HEAD", None),
        ("never", [("content-type", "text/event-stream")], "GET", False),
        ("always", [("content-type", "application/json"), ("content-length", "5")], "GET", True),
    ],
)
def test_response_streaming_decision(stream, headers, method, expected):
    route = streaming_routes(stream=stream)["/s3"]
    assert streams_response(route, method, first_values(headers)) is expected


def test_stream_and_buffer_limit_settings_global_and_per_route():
    cfg = parse_config(
        {
            "proxysigv4": {
                "stream": "never",
                "bufferLimit": "8m",
                "/a": "https://sts.amazonaws.com",
                "/b": {"target": "https://sts.amazonaws.com", "stream": "always", "bufferLimit": "1g"},
            }
        },
        "t",
    )
    a, b = cfg.routes
    assert (a.stream, a.buffer_limit) == ("never", 8 * MIB)
    assert (b.stream, b.buffer_limit) == ("always", 1024 * MIB)
    default = parse_config({"proxysigv4": {"/a": "https://sts.amazonaws.com"}}, "t").routes[0]
    assert (default.stream, default.buffer_limit, default.unsigned_payload) == (
        "auto",
        DEFAULT_BUFFER_LIMIT,
        False,
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("65536", 65536),
        (4096, 4096),
        ("64k", 65536),
        ("32M", 32 * MIB),
        ("1g", 1024 * MIB),
        ("2 MiB", 2 * MIB),
        ("10mb", 10 * MIB),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text, "t") == size


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"/a": {"target": "https://sts.amazonaws.com", "stream": "sometimes"}},
            "key 'stream': expected one of auto, always, never",
        ),
        ({"stream": True, "/a": "https://sts.amazonaws.com"}, "key 'stream': expected one of"),
        (
            {"/a": {"target": "https://sts.amazonaws.com", "bufferLimit": "lots"}},
            "key 'bufferLimit': expected a size like 32m",
        ),
        ({"/a": {"target": "https://sts.amazonaws.com", "bufferLimit": 0}}, "key 'bufferLimit'"),
        (
            {"/a": {"target": "https://sts.amazonaws.com", "unsignedPayload": "yes"}},
            "key 'unsignedPayload': expected true or false",
        ),
    ],
)
def test_streaming_setting_errors(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"proxysigv4": section}, "t")
