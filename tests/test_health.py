"""The health listener's answers, readiness per route, the metrics' labels and the JSON log lines,
without a proxy process (the end-to-end side is test_e2e_service.py)."""

import io
import json
import logging
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from proxysigv4_core import health, logformat, requestlog
from proxysigv4_core.credentials import CredentialState
from proxysigv4_core.metrics import Metrics, method_label

VALID = CredentialState(True, "ASIAEXAMPLEKEY1234", "assume-role", 2_000_000_000.0, None)


def test_a_route_is_ready_with_valid_credentials_even_while_renewal_fails():
    failing = CredentialState(True, "ASIAEXAMPLEKEY1234", "sso", None, "The SSO session has expired")
    r = health.route_readiness("/sso", failing)
    assert r.ready and r.detail["renewal_failing"] == "The SSO session has expired"
    assert r.detail["credentials"] == "ASIA…1234 via sso"


@pytest.mark.parametrize(
    ("held", "error"),
    [
        (
            CredentialState(False, None, None, None, "AccessDenied: not authorized"),
            "AccessDenied: not authorized",
        ),
        (CredentialState(False, None, None, None, None), "credentials not resolved yet"),
    ],
)
def test_a_route_without_valid_credentials_is_not_ready_and_says_why(held, error):
    r = health.route_readiness("/r", held)
    assert not r.ready and r.detail == {"error": error}


def test_readiness_needs_a_config_a_listener_and_every_route():
    ok = health.route_readiness("/ok", VALID)
    bad = health.route_readiness("/bad", CredentialState(False, None, None, None, "denied"))
    assert health.readiness("c.yaml", ["127.0.0.1:8080"], [ok]).ready
    assert not health.readiness(None, ["127.0.0.1:8080"], []).ready
    assert health.readiness("c.yaml", [], [ok]).body["error"] == "the proxy is not listening"
    mixed = health.readiness("c.yaml", ["127.0.0.1:8080"], [ok, bad])
    assert not mixed.ready and mixed.body["not_ready"] == ["/bad"]
    assert mixed.body["routes"]["/ok"]["expires"] == "2033-05-18T03:33:20Z"


@pytest.fixture
def listener():
    metrics = Metrics(lambda: [("/role", 1_900_000_000.0)], lambda: 2)
    view = health.HealthView(metrics.registry)
    server = health.HealthServer("127.0.0.1", 0, view)
    yield view, metrics, f"http://127.0.0.1:{server.address[1]}"
    server.close()


def test_the_listener_answers_only_its_three_paths(listener):
    view, metrics, url = listener
    view.beat(health.readiness("c.yaml", ["127.0.0.1:1"], [health.route_readiness("/r", VALID)]))
    assert requests.get(f"{url}/livez", timeout=5).status_code == 200
    assert requests.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"
    assert requests.get(f"{url}/", timeout=5).status_code == 404
    assert requests.get(f"{url}/api/anything", timeout=5).status_code == 404
    assert requests.post(f"{url}/readyz", timeout=5).status_code == 405
    view.draining = True
    drain = requests.get(f"{url}/readyz", timeout=5)
    assert drain.status_code == 503 and drain.json() == {"status": "draining"}
    assert requests.get(f"{url}/livez", timeout=5).status_code == 200  # alive while draining


def test_a_stalled_loop_fails_liveness_and_readiness_but_metrics_still_answer(listener, monkeypatch):
    view, metrics, url = listener
    view.beat(health.readiness("c.yaml", ["127.0.0.1:1"], []))
    view.heartbeat = time.monotonic() - health.STALLED_AFTER - 1
    live = requests.get(f"{url}/livez", timeout=5)
    assert live.status_code == 503 and live.json()["status"] == "event loop stalled"
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 200


def test_metrics_are_prometheus_text_with_bounded_labels(listener):
    view, metrics, url = listener
    metrics.answered("/api", "GET", 200)
    metrics.answered("/api", "BREW", 418)  # a method token no standard names: one label value for all
    metrics.answered(None, "GET", 404)
    metrics.refused("no_route")
    metrics.upstream_latency("/api", 0.02)
    metrics.credential_refresh(["/role", "/role2"], "success")
    text = requests.get(f"{url}/metrics", timeout=5).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("proxysigv4_requests_total", (("code", "418"), ("method", "OTHER"), ("route", "/api")))] == 1
    )
    assert samples[("proxysigv4_requests_total", (("code", "404"), ("method", "GET"), ("route", "")))] == 1
    assert samples[("proxysigv4_refusals_total", (("reason", "no_route"),))] == 1
    assert samples[("proxysigv4_upstream_duration_seconds_bucket", (("le", "0.025"), ("route", "/api")))] == 1
    assert samples[("proxysigv4_in_flight_requests", ())] == 2
    assert (
        samples[("proxysigv4_credential_refreshes_total", (("result", "success"), ("route", "/role2")))] == 1
    )
    assert samples[("proxysigv4_credentials_expiry_timestamp_seconds", (("route", "/role"),))] == 1.9e9


@pytest.mark.parametrize(
    ("method", "label"), [("GET", "GET"), ("PATCH", "PATCH"), ("get", "OTHER"), ("X" * 50, "OTHER")]
)
def test_method_labels_are_the_standard_methods_or_other(method, label):
    assert method_label(method) == label


def test_json_log_lines_carry_the_request_fields():
    stream = io.StringIO()
    handler = logformat.json_handler(stream)
    logger = logging.getLogger("proxysigv4.request")
    logger.addHandler(handler)
    try:
        fields = {"method": "GET", "path": "/api/x?y=1", "route": "/api", "status": 200, "duration_ms": 1.5}
        logger.handle(requestlog._request_record("GET /api/x?y=1 -> http://t/x 200", fields))
        logging.getLogger("proxysigv4").warning("proxysigv4: a warning %s", "with args")
    finally:
        logger.removeHandler(handler)
    first, *_ = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["level"] == "INFO" and first["logger"] == "proxysigv4.request"
    assert first["message"] == "GET /api/x?y=1 -> http://t/x 200"
    assert {k: first[k] for k in fields} == fields and "time" in first


def test_json_format_switches_the_proxys_loggers_and_back(capsys):
    logformat.use("json")
    try:
        logging.getLogger("proxysigv4").warning("proxysigv4: switched")
    finally:
        logformat.use("text")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "proxysigv4: switched" and line["level"] == "WARNING"
    assert logging.getLogger("proxysigv4").propagate and not logging.getLogger("proxysigv4").handlers


def test_setting_the_same_health_options_again_keeps_the_listener():
    """`proxysigv4 run` configures the addon twice at start: a probe connected in between must not
    be reset by a second bind; another port is a new listener, port 0 none."""
    from peers.processes import free_port
    from proxysigv4_core.credentials import CredentialStore
    from proxysigv4_core.service import Service

    service = Service(CredentialStore(), lambda: None)
    port, other = free_port(), free_port()
    try:
        service.listen("127.0.0.1", port)
        first = service.server
        service.listen("127.0.0.1", port)
        assert service.server is first is not None
        service.listen("127.0.0.1", other)
        assert service.server is not first and service.server.address == ("127.0.0.1", other)
        service.listen("127.0.0.1", 0)
        assert service.server is None
    finally:
        service.stop()
