"""Connections, differentially: the same scripted connection-level scenarios through bare
`mitmdump --mode reverse:UPSTREAM` and through mitmdump with the addon (a route '/' to the same
upstream). What the client sees with the addon must be the same as bare mitmproxy, or better:
statuses, bodies, whether its connection stays usable, and no wait over 2 s."""

import json
import subprocess
import time

import pytest

from peers.processes import bare_mitmdump_command, free_port, stop, wait_for_port
from scripted_http import CLOSE_LATE_DELAY, Outcome, RawClient, ScriptedUpstream

pytestmark = pytest.mark.e2e
ENV_CREDS = {"AWS_ACCESS_KEY_ID": "AKIACONNTEST", "AWS_SECRET_ACCESS_KEY": "conn/test/secret"}
MAX_WAIT = 2.0


def _gets(client: RawClient, path: str, n: int = 5, pause: float = 0.0) -> list[Outcome]:
    out = []
    for i in range(n):
        out.append(client.request("GET", f"{path}/{i}"))
        time.sleep(pause)
    return out


def _posts(client: RawClient, path: str, n: int = 3) -> list[Outcome]:
    return [client.request("POST", f"{path}/{i}", body=b"x" * (i + 1)) for i in range(n)]


def _pipelined(client: RawClient) -> list[Outcome]:
    client.send(b"".join(b"GET /keep/p%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(3)))
    out = []
    for _ in range(3):
        try:
            out.append(client.read_response("GET"))
        except TimeoutError:
            out.append(Outcome("timeout"))
            break
        except OSError:
            out.append(Outcome("closed"))
            break
    out.append(client.request("GET", "/keep/after"))
    return out


def _bodiless(client: RawClient) -> list[Outcome]:
    return [
        client.request("HEAD", "/keep/h"),
        client.request("GET", "/keep/204"),
        client.request("GET", "/keep/304", headers=(("If-None-Match", '"e1"'),)),
        client.request("GET", "/keep/after"),
    ]


SCENARIOS = {
    "keep-alive, 5 requests": lambda c: _gets(c, "/keep"),
    "keep-alive POSTs": lambda c: _posts(c, "/keep"),
    "upstream Connection: close, closing at once": lambda c: _gets(c, "/close-now"),
    "upstream Connection: close, closing 0.3 s late": lambda c: _gets(c, "/close-late"),
    "upstream Connection: close, closing 0.3 s late, POSTs": lambda c: _posts(c, "/close-late"),
    "upstream idle close after 1 s, requests 1.5 s apart": lambda c: _gets(c, "/idle", 3, 1.5),
    "upstream closes a connection with a request on it": lambda c: _posts(c, "/dies"),
    "HTTP/1.0 client without keep-alive": lambda c: [
        c.request("GET", f"/keep/{i}", version="HTTP/1.0") for i in range(3)
    ],
    "HTTP/1.0 client with keep-alive": lambda c: [
        c.request("GET", f"/keep/{i}", version="HTTP/1.0", headers=(("Connection", "keep-alive"),))
        for i in range(3)
    ],
    "pipelined requests": _pipelined,
    "Expect: 100-continue": lambda c: [
        c.request("POST", "/keep/e", body=b"hello", expect_continue=True),
        c.request("GET", "/keep/after"),
    ],
    "HEAD, 204 and 304 without a body": _bodiless,
    "upstream reset mid-response": lambda c: [c.request("GET", "/reset/x"), c.request("GET", "/keep/after")],
    "client half-close after the request": lambda c: [
        c.request("GET", "/keep/h", half_close=True),
        c.request("GET", "/keep/after"),
    ],
}


@pytest.fixture(scope="module")
def proxies(tmp_path_factory):
    """Bare mitmdump and mitmdump with the addon, both in front of one scripted upstream."""
    import os

    import yaml

    from peers.processes import mitmdump_command

    tmp = tmp_path_factory.mktemp("connections")
    with ScriptedUpstream() as upstream:
        config = tmp / "routes.yaml"
        route = {"target": upstream.url, "service": "execute-api", "region": "us-east-1"}
        config.write_text(yaml.safe_dump({"proxysigv4": {"/": route}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(ENV_CREDS, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        env.update(AWS_EC2_METADATA_DISABLED="true", PYTHONUNBUFFERED="1")
        ports = {"bare": free_port(), "addon": free_port()}
        commands = {
            "bare": bare_mitmdump_command(upstream.url, ports["bare"]),
            "addon": mitmdump_command(config, ports["addon"]),
        }
        procs = {}
        try:
            for name, cmd in commands.items():
                log = open(tmp / f"{name}.log", "wb")
                procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
                wait_for_port(ports[name], procs[name])
            yield ports, tmp
        finally:
            for proc in procs.values():
                stop(proc)


def _summary(outcomes: list[Outcome]) -> str:
    return ", ".join(f"{o.status}{'' if o.kept else '/closed'} {o.seconds:.2f}s" for o in outcomes)


def compare(bare: list[Outcome], addon: list[Outcome]) -> list[str]:
    """Where the addon's outcome is worse than bare mitmproxy's, one line each (empty: none)."""
    problems = []
    if len(addon) != len(bare):
        problems.append(f"{len(addon)} outcomes, bare had {len(bare)}")
    for i, (b, a) in enumerate(zip(bare, addon, strict=False)):
        bare_ok = isinstance(b.status, int) and b.status < 500
        if a.seconds > MAX_WAIT:
            problems.append(f"request {i}: waited {a.seconds:.2f}s")
        if bare_ok and a.status != b.status:
            problems.append(f"request {i}: {a.status}, bare mitmproxy answered {b.status}")
        elif not bare_ok and isinstance(a.status, int) and a.status < 500:
            pass  # better than bare
        elif not bare_ok and a.status != b.status and not (isinstance(a.status, int) and a.status >= 500):
            problems.append(f"request {i}: {a.status}, bare mitmproxy answered {b.status}")
        if bare_ok and a.status == b.status and a.body != b.body:
            problems.append(f"request {i}: body {a.body[:80]!r}, bare mitmproxy sent {b.body[:80]!r}")
        if b.kept and not a.kept:
            problems.append(f"request {i}: the addon ended a connection that bare mitmproxy kept usable")
    return problems


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_addon_does_no_worse_than_bare_mitmproxy_on_connections(proxies, scenario):
    ports, _ = proxies
    seen = {}
    for name in ("bare", "addon"):
        client = RawClient(ports[name], timeout=MAX_WAIT + 1)
        try:
            seen[name] = SCENARIOS[scenario](client)
        finally:
            client.close()
    print(f"\n{scenario}\n  bare:  {_summary(seen['bare'])}\n  addon: {_summary(seen['addon'])}")
    assert compare(seen["bare"], seen["addon"]) == [], _summary(seen["addon"])


def test_a_request_the_upstream_closed_unanswered_gets_a_json_502_naming_the_route(proxies):
    ports, _ = proxies
    client = RawClient(ports["addon"])
    try:
        first, second, third = _posts(client, "/dies")
    finally:
        client.close()
    assert (first.status, second.status, third.status) == (200, 502, 200)
    error = json.loads(second.body)
    assert error["error"] == "upstream_closed" and error["route"] == "/"
    assert "upstream closed the connection" in error["message"]


def test_close_late_upstream_is_what_the_scenarios_say():
    """The scripted upstream itself, directly: `Connection: close`, then open for 0.3 s more."""
    with ScriptedUpstream() as upstream:
        client = RawClient(upstream.port)
        got = client.request("GET", "/close-late/x")
        assert got.status == 200 and not got.kept
        assert ("connection", "close") in got.headers
        client2 = RawClient(upstream.port)
        assert client2.request("GET", "/keep/x").kept
        started = time.monotonic()
        assert client2.request("GET", "/keep/y").status == 200 and time.monotonic() - started < 0.2
        client2.close()
        assert CLOSE_LATE_DELAY == 0.3


def test_compare_flags_what_is_worse_than_bare():
    ok = Outcome(200, b"a", True, 0.01)
    assert compare([ok], [ok]) == []
    assert compare([ok], [Outcome(200, b"a", False, 0.01)])  # connection ended where bare kept it
    assert compare([ok], [Outcome("timeout", seconds=3.0)])
    assert compare([ok], [Outcome(502, b"", False, 0.01)])
    assert compare([ok], [Outcome(200, b"b", True, 0.01)])
    assert compare([Outcome(502, b"x", False)], [Outcome(200, b"y", True)]) == []  # better
    assert compare([Outcome(502, b"x", False)], [Outcome("timeout", seconds=0.5)])
