"""A replica as an orchestrator runs it: the health listener (/livez, /readyz, /metrics), the graceful
drain on SIGTERM for `mitmdump -s` and `proxysigv4 run` (bare mitmdump beside them drops the request
in flight), JSON logs. Real processes, real clients (requests, websockets, an h2 client over TLS)."""

import json
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import h2.connection
import h2.events
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers import KEY, SECRET, proxy_env, route, wait_for
from peers.fakests import FakeSTS
from peers.processes import BIN, bare_mitmdump_command, free_port, mitmdump_command, stop, wait_for_port
from peers.streams import BLOCK, StreamingUpstream, payload_digest
from peers.upstream import Upstream, verify_then_answer
from peers.wsecho import VerifyingEchoServer

pytestmark = pytest.mark.e2e
SLOW = 3.0
KINDS = ["mitmdump", "run"]


class Replica:
    """The proxy started as `mitmdump -s` or `proxysigv4 run`, with the health port on."""

    def __init__(self, tmp_path: Path, kind: str, routes: dict, env: dict, drain: int = 25, extra=()):
        self.port, self.health_port = free_port(), free_port()
        config = tmp_path / f"{kind}.yaml"
        config.write_text(yaml.safe_dump({"proxysigv4": routes}))
        if kind == "run":
            cmd = [str(BIN / "proxysigv4"), "run", "-c", str(config), "-p", str(self.port)]
            cmd += ["--health-port", str(self.health_port), "--drain-timeout", str(drain), *extra]
        else:
            options = {"proxysigv4_health_port": self.health_port, "proxysigv4_drain_timeout": drain}
            sets = [a for k, v in options.items() for a in ("--set", f"{k}={v}")]
            cmd = mitmdump_command(config, self.port, *sets, *extra)
        self.log_path = tmp_path / f"{kind}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        wait_for_port(self.port, self.proc)
        wait_for_port(self.health_port, self.proc)
        self.url = f"http://127.0.0.1:{self.port}"
        self.health = f"http://127.0.0.1:{self.health_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict:
        text = requests.get(f"{self.health}/metrics", timeout=5).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }


def slow_answer(received):
    """Verifies the signature; /slow answers after SLOW seconds, /block instantly."""
    if "/slow" in received.target:
        time.sleep(SLOW)
    status, headers, body = verify_then_answer({KEY: (SECRET, None)})(received)
    return status, headers, body * 1000 if status == 200 else body


@pytest.fixture
def slow_upstream():
    with Upstream(slow_answer) as upstream:
        yield upstream


def in_background(fn):
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except Exception as e:  # the test asserts on it
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def refused_at_tcp(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_lets_requests_in_flight_finish_then_exits_0(tmp_path, slow_upstream, kind):
    replica = Replica(tmp_path, kind, {"/api": route(slow_upstream.url)}, proxy_env(tmp_path))
    kept = requests.Session()
    assert kept.get(f"{replica.url}/api/quick", timeout=5).status_code == 200  # an idle keep-alive connection
    wait_for(lambda: requests.get(f"{replica.health}/readyz", timeout=5).status_code == 200, 3)
    thread, result = in_background(lambda: requests.get(f"{replica.url}/api/slow", timeout=15))
    time.sleep(0.5)
    signalled = time.monotonic()
    replica.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: requests.get(f"{replica.health}/readyz", timeout=2).status_code == 503, 2)
    assert requests.get(f"{replica.health}/readyz", timeout=2).json() == {"status": "draining"}
    assert refused_at_tcp(replica.port)  # new connections: refused, not reset mid-answer
    # the idle keep-alive connection is still served, and told to close
    idle = kept.get(f"{replica.url}/api/quick", timeout=5)
    assert idle.status_code == 200 and idle.headers["connection"] == "close"
    thread.join(10)
    response = result["value"]
    assert response.status_code == 200 and response.content == b"ok" * 1000
    assert response.headers["connection"] == "close"
    assert replica.proc.wait(25 + 1) == 0
    took = time.monotonic() - signalled
    print(f"{kind}: drained and exited {took:.2f} s after SIGTERM, in-flight request 200")
    assert took < SLOW + 1
    assert "draining, 1 requests and 0 WebSockets in flight" in replica.log()


def test_bare_mitmdump_drops_the_request_in_flight_on_sigterm(tmp_path, slow_upstream):
    """What the drain improves on: mitmproxy alone closes the connection of a request in flight."""
    port = free_port()
    with open(tmp_path / "bare.log", "wb") as log:
        proc = subprocess.Popen(bare_mitmdump_command(slow_upstream.url, port), stdout=log, stderr=log)
    try:
        wait_for_port(port, proc)
        thread, result = in_background(lambda: requests.get(f"http://127.0.0.1:{port}/slow", timeout=15))
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        thread.join(10)
        assert isinstance(result.get("error"), requests.ConnectionError), result
    finally:
        stop(proc)


@pytest.mark.parametrize("kind", KINDS)
def test_a_streamed_100_mib_download_in_flight_completes(tmp_path, kind):
    size = 100 * BLOCK
    with StreamingUpstream() as upstream:
        replica = Replica(tmp_path, kind, {"/dl": route(upstream.url)}, proxy_env(tmp_path))
        import hashlib

        digest, chunks = hashlib.sha256(), 0
        with requests.get(f"{replica.url}/dl/big/{size}", stream=True, timeout=30) as r:
            for chunk in r.iter_content(chunk_size=BLOCK):
                digest.update(chunk)
                chunks += 1
                if chunks == 2:
                    replica.proc.send_signal(signal.SIGTERM)
                time.sleep(0.02)  # a slow reader: about 2 s for the whole body
        assert digest.hexdigest() == payload_digest(size)
        assert replica.proc.wait(10) == 0


def test_a_second_sigterm_exits_at_once(tmp_path, slow_upstream):
    replica = Replica(tmp_path, "mitmdump", {"/api": route(slow_upstream.url)}, proxy_env(tmp_path))
    thread, result = in_background(lambda: requests.get(f"{replica.url}/api/slow", timeout=15))
    time.sleep(0.3)
    replica.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    second = time.monotonic()
    replica.proc.send_signal(signal.SIGTERM)
    replica.proc.wait(5)
    assert time.monotonic() - second < 1.5
    thread.join(10)
    assert "error" in result  # cut: the operator asked for it twice
    assert "SIGTERM during the drain: exiting now" in replica.log()


@pytest.mark.parametrize("kind", KINDS)
def test_websockets_are_closed_with_1001_at_the_drain_deadline(tmp_path, kind):
    with VerifyingEchoServer({KEY: (SECRET, None)}) as server:
        routes = {"/ws": route(f"http://127.0.0.1:{server.port}/production")}
        replica = Replica(tmp_path, kind, routes, proxy_env(tmp_path), drain=2)
        with connect(
            replica.url.replace("http://", "ws://") + "/ws", subprotocols=["chat"], open_timeout=10
        ) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "echo: hello"
            signalled = time.monotonic()
            replica.proc.send_signal(signal.SIGTERM)
            ws.send("still open while draining")
            assert ws.recv(timeout=5) == "echo: still open while draining"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            closed_after = time.monotonic() - signalled
        assert ws.close_code == 1001 and ws.close_reason == "proxy shutting down"
        assert 1.5 < closed_after < 3.5
        assert replica.proc.wait(5) == 0


def test_http2_clients_get_a_goaway_before_the_process_exits(tmp_path, slow_upstream):
    replica = Replica(tmp_path, "mitmdump", {"/api": route(slow_upstream.url)}, proxy_env(tmp_path))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", replica.port), timeout=10)) as tls:
        assert tls.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        authority = f"127.0.0.1:{replica.port}"
        conn.send_headers(
            stream,
            [(":method", "GET"), (":path", "/api/quick"), (":scheme", "https"), (":authority", authority)],
            end_stream=True,
        )
        tls.sendall(conn.data_to_send())
        events: list = []
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            events += conn.receive_data(tls.recv(65536))
            tls.sendall(conn.data_to_send())
        status = next(
            dict(e.headers)[b":status"] for e in events if isinstance(e, h2.events.ResponseReceived)
        )
        assert status == b"200"
        replica.proc.send_signal(signal.SIGTERM)
        events = []
        while data := tls.recv(65536):
            events += conn.receive_data(data)
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == 0  # NO_ERROR: a graceful close
    assert replica.proc.wait(5) == 0


def test_health_metrics_and_readiness_name_the_route_sts_denies(tmp_path):
    denied = "arn:aws:iam::123456789012:role/denied"
    with FakeSTS(lifetime=3600) as sts, sts.verifier({KEY: (SECRET, None)}) as upstream:
        sts.deny_roles.add(denied)
        routes = {
            "/ok": route(upstream.url),
            "/role": route(upstream.url, roleArn="arn:aws:iam::123456789012:role/r"),
            "/denied": route(upstream.url, roleArn=denied),
        }
        env = proxy_env(tmp_path) | {"AWS_ENDPOINT_URL_STS": sts.url}
        replica = Replica(tmp_path, "mitmdump", routes, env)
        assert requests.get(f"{replica.health}/livez", timeout=5).json() == {"status": "alive"}

        def role_resolved():
            answer = requests.get(f"{replica.health}/readyz", timeout=5)
            # before the health task's first turn the answer is {"status": "starting"} (503)
            return [answer] if answer.json().get("routes", {}).get("/role", {}).get("ready") else None

        [ready] = wait_for(role_resolved)
        body = ready.json()
        assert ready.status_code == 503 and body["not_ready"] == ["/denied"]
        assert "not authorized to perform: sts:AssumeRole" in body["routes"]["/denied"]["error"]
        assert body["routes"]["/ok"]["credentials"] == "AKIA…0001 via env"
        assert SECRET not in ready.text and "ASIAFAKESTS" not in ready.text
        session = requests.Session()
        for _ in range(3):
            assert session.get(f"{replica.url}/ok/x", timeout=5).status_code == 200
        assert session.get(f"{replica.url}/role/x", timeout=5).status_code == 200
        assert session.get(f"{replica.url}/nowhere", timeout=5).status_code == 404
        assert session.get(f"{replica.url}/denied/x", timeout=5).status_code == 503
        hostile = session.get(f"{replica.url}/ok/x", headers={"Host": "evil.example"}, timeout=5)
        assert hostile.status_code == 403 and hostile.json()["error"] == "host_not_allowed"
        # the health port answers while the proxy port refuses a hostile Host, and forwards nothing
        assert requests.get(f"{replica.health}/ok/x", timeout=5).status_code == 404
        m = replica.metrics()
        assert m[("proxysigv4_requests_total", (("code", "200"), ("method", "GET"), ("route", "/ok")))] == 3
        assert m[("proxysigv4_requests_total", (("code", "200"), ("method", "GET"), ("route", "/role")))] == 1
        assert m[("proxysigv4_requests_total", (("code", "404"), ("method", "GET"), ("route", "")))] == 1
        assert (
            m[("proxysigv4_requests_total", (("code", "503"), ("method", "GET"), ("route", "/denied")))] == 1
        )
        for reason in ("no_route", "host_not_allowed", "credentials_unavailable"):
            assert m[("proxysigv4_refusals_total", (("reason", reason),))] == 1
        assert m[("proxysigv4_upstream_duration_seconds_count", (("route", "/ok"),))] == 3
        assert m[("proxysigv4_in_flight_requests", ())] == 0
        assert m[("proxysigv4_credential_refreshes_total", (("result", "success"), ("route", "/role")))] == 1
        assert (
            m[("proxysigv4_credential_refreshes_total", (("result", "failure"), ("route", "/denied")))] >= 1
        )
        expiry = m[("proxysigv4_credentials_expiry_timestamp_seconds", (("route", "/role"),))]
        assert abs(expiry - (time.time() + 3600)) < 60
        assert not any(
            k[0] == "proxysigv4_credentials_expiry_timestamp_seconds" and ("route", "/ok") in k[1] for k in m
        )
        labels = {v for k in m for _, v in k[1]}
        assert "/nowhere" not in labels and "/ok/x" not in labels  # route prefixes, never client paths
        stop(replica.proc)


BLOCKING_SCRIPT = """
import time

def request(flow):
    if flow.request.path.endswith("/block"):
        time.sleep(7)  # a blocked event loop, as a misbehaving addon would cause
"""


def test_livez_answers_503_at_once_while_the_event_loop_is_blocked(tmp_path, slow_upstream):
    script = tmp_path / "block.py"
    script.write_text(BLOCKING_SCRIPT)
    replica = Replica(
        tmp_path,
        "mitmdump",
        {"/api": route(slow_upstream.url)},
        proxy_env(tmp_path),
        extra=("-s", str(script)),
    )
    assert requests.get(f"{replica.health}/livez", timeout=5).status_code == 200
    thread, _ = in_background(lambda: requests.get(f"{replica.url}/api/block", timeout=15))
    time.sleep(6)
    started = time.monotonic()
    stalled = requests.get(f"{replica.health}/livez", timeout=2)  # answered, not stuck behind the loop
    assert stalled.status_code == 503 and stalled.json()["status"] == "event loop stalled"
    assert time.monotonic() - started < 1
    assert requests.get(f"{replica.health}/readyz", timeout=2).status_code == 503
    thread.join(10)
    wait_for(lambda: requests.get(f"{replica.health}/livez", timeout=2).status_code == 200, 3)
    stop(replica.proc)


def test_json_logs_one_object_per_line_with_the_request_fields(tmp_path, slow_upstream):
    replica = Replica(
        tmp_path,
        "run",
        {"/api": route(slow_upstream.url)},
        proxy_env(tmp_path),
        extra=("--log-format", "json"),
    )
    assert requests.get(f"{replica.url}/api/quick?x=1", timeout=5).status_code == 200
    assert requests.get(f"{replica.url}/nope", timeout=5).status_code == 404
    replica.proc.send_signal(signal.SIGTERM)
    assert replica.proc.wait(10) == 0
    lines = [json.loads(line) for line in replica.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    signed = next(e for e in lines if e["logger"] == "proxysigv4.request" and e["path"] == "/api/quick?x=1")
    assert signed["status"] == 200 and signed["route"] == "/api" and signed["method"] == "GET"
    assert signed["target"] == f"{slow_upstream.url}/quick?x=1" and signed["bytes"] == 2000
    assert (
        signed["service"] == "execute-api" and signed["region"] == "eu-west-1" and signed["duration_ms"] > 0
    )
    refusal = next(e for e in lines if e["logger"] == "proxysigv4.request" and e["path"] == "/nope")
    assert refusal["status"] == 404 and refusal["refusal"] == "no_route" and refusal["target"] == "-"
    assert any("drained in" in e["message"] for e in lines)
    assert SECRET not in replica.log()
