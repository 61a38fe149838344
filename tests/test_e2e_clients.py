"""Real clients over their natural keep-alive connections, through a real mitmdump with the
addon, to moto (signature checking on) and to moto behind a front that answers
`Connection: close` and closes 0.3 s later. Every call must succeed in under 2 s; the test
prints the matrix (client x upstream -> ok/total, slowest call)."""

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
import requests
from botocore import UNSIGNED
from botocore.config import Config

from helpers import AWS, aws_cli_env
from peers.processes import REGION, aws_env
from scripted_http import ClosingFront

pytestmark = pytest.mark.e2e
MAX_SECONDS = 2.0
CALLS = 5
NODE_DIR = Path(__file__).resolve().parent / "node"
STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
FORM = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
# A call is (ok, seconds, what went wrong).
Call = tuple[bool, float, str]


def _timed(call: Callable[[], object]) -> Call:
    started = time.monotonic()
    try:
        call()
        return True, time.monotonic() - started, ""
    except Exception as e:  # the matrix reports it
        return False, time.monotonic() - started, f"{type(e).__name__}: {e}"[:200]


def _boto3(service: str, base: str):
    # No retries and a read timeout: a call that waits on a dead connection shows, not hides.
    config = Config(
        signature_version=UNSIGNED,
        read_timeout=5,
        connect_timeout=5,
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return boto3.client(service, endpoint_url=f"{base}/{service}", region_name=REGION, config=config)


def boto3_dynamodb(base: str, cell: str) -> list[Call]:
    client = _boto3("dynamodb", base)
    return [_timed(client.list_tables) for _ in range(CALLS)]


def boto3_sqs(base: str, cell: str) -> list[Call]:
    client = _boto3("sqs", base)
    urls: list[str] = []
    calls = [_timed(lambda: urls.append(client.create_queue(QueueName=f"q-{cell}")["QueueUrl"]))]
    for i in range(CALLS - 1):
        calls.append(_timed(lambda i=i: client.send_message(QueueUrl=urls[0], MessageBody=f"m{i}")))
    return calls


def boto3_s3(base: str, cell: str) -> list[Call]:
    client = _boto3("s3", base)
    bucket = f"b-{cell}"
    calls = [_timed(lambda: client.create_bucket(Bucket=bucket))]
    for i in range(CALLS):
        calls.append(_timed(lambda i=i: client.put_object(Bucket=bucket, Key=f"k{i}", Body=b"v%d" % i)))
        calls.append(_timed(lambda i=i: _read_back(client.get_object(Bucket=bucket, Key=f"k{i}"), i)))
    return calls


def _read_back(got: dict, i: int) -> None:
    body = got["Body"].read()
    assert body == b"v%d" % i, body


def requests_session(base: str, cell: str) -> list[Call]:
    session = requests.Session()

    def call() -> None:
        r = session.post(f"{base}/sts/", data=STS_BODY, headers=FORM, timeout=5)
        assert r.status_code == 200 and "GetCallerIdentityResult" in r.text, (r.status_code, r.text[:200])

    calls = [_timed(call) for _ in range(CALLS)]
    session.close()
    return calls


def curl(base: str, cell: str) -> list[Call]:
    """curl with five URLs in one invocation: it keeps one connection for all it can."""
    args = ["curl", "-s", "--max-time", "5", "-d", STS_BODY, "-H", f"content-type: {FORM['content-type']}"]
    args += ["-w", "%{http_code} %{time_total}\\n"]
    for _ in range(CALLS):
        args += ["-o", "/dev/null", f"{base}/sts/"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    calls = []
    for code, seconds in re.findall(r"(\d{3}) ([\d.]+)", done.stdout):
        calls.append((code == "200", float(seconds), "" if code == "200" else f"HTTP {code}"))
    calls += [(False, 0.0, f"curl exit {done.returncode}: missing")] * (CALLS - len(calls))
    return calls


def aws_cli(base: str, cell: str, tmp_path: Path, proxy_log: Callable[[], str]) -> list[Call]:
    """`aws s3 cp --recursive` of 20 small files, then `aws s3 ls`, unsigned. With a 2 s read
    timeout and one attempt, a call that waits on a dead connection fails the command; each
    HTTP call's own time is read from the proxy's request lines."""
    source = tmp_path / f"files-{cell}"
    source.mkdir()
    for i in range(20):
        (source / f"f{i:02d}.txt").write_text(f"file {i}\n")
    env = aws_cli_env(tmp_path, AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard")
    common = [AWS, "--endpoint-url", f"{base}/s3", "--no-sign-request", "--cli-read-timeout", "2"]
    bucket = f"s3://cli-{cell}"
    calls = []
    before = len(proxy_log().splitlines())
    for args in (["s3", "mb", bucket], ["s3", "cp", "--recursive", str(source), f"{bucket}/dir/"]):
        done = subprocess.run(common + args, capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            calls.append((False, 0.0, f"aws {' '.join(args[:2])}: {done.stderr[-300:]}"))
    listed = subprocess.run(common + ["s3", "ls", f"{bucket}/dir/"], capture_output=True, text=True, env=env)
    if listed.returncode != 0 or listed.stdout.count(".txt") != 20:
        calls.append(
            (False, 0.0, f"aws s3 ls: {listed.returncode} {listed.stdout[-200:]} {listed.stderr[-200:]}")
        )
    time.sleep(0.2)  # the request lines are logged once the answers are on their way
    prefix = "/" + base.rsplit("/", 1)[1] + "/s3"
    for line in proxy_log().splitlines()[before:]:
        found = re.search(r"\] (\w+) (\S+) -> \S+ (\S+) ([\d.]+)ms", line)
        if found and found[2].startswith(prefix):
            ok = found[3].isdigit() and int(found[3]) < 400
            calls.append((ok, float(found[4]) / 1000, "" if ok else f"{found[1]} {found[2]}: {found[3]}"))
    return calls


def node(mode: str) -> Callable[[str, str], list[Call]]:
    def run(base: str, cell: str) -> list[Call]:
        done = subprocess.run(
            ["node", str(NODE_DIR / "clients.mjs"), mode, base, str(CALLS)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=NODE_DIR,
        )
        calls = []
        for line in done.stdout.splitlines():
            got = json.loads(line)
            calls.append((got["ok"], got["seconds"], got.get("error") or f"HTTP {got['status']}"))
        calls += [(False, 0.0, f"node exit {done.returncode}: {done.stderr[-300:]}")] * (CALLS - len(calls))
        return calls

    return run


CLIENTS = {
    "boto3 DynamoDB": boto3_dynamodb,
    "boto3 SQS": boto3_sqs,
    "boto3 S3 put/get": boto3_s3,
    "requests.Session": requests_session,
    "curl, 5 URLs": curl,
    "AWS CLI s3 cp/ls": aws_cli,
    "Node fetch": node("fetch"),
    "AWS SDK for JS v3": node("sdk"),
}


def _routes(prefix: str, target: str) -> dict:
    services = {"ddb": "dynamodb", "dynamodb": "dynamodb", "sqs": "sqs", "s3": "s3", "sts": "sts"}
    return {
        f"/{prefix}/{path}": {"target": target, "service": service, "region": REGION}
        for path, service in services.items()
    }


@pytest.fixture(scope="module")
def node_clients():
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the Node cells of the matrix need it")
    if not (NODE_DIR / "node_modules" / "@aws-sdk" / "client-dynamodb").is_dir():
        pytest.fail(f"the AWS SDK for JavaScript is not installed: npm ci --prefix {NODE_DIR} (make install)")


def test_real_clients_keep_their_connections_against_moto_and_a_closing_upstream(
    moto, start_proxy, tmp_path, node_clients, capsys
):
    with ClosingFront(int(moto.url.rsplit(":", 1)[1])) as front:
        proxy = start_proxy({**_routes("moto", moto.url), **_routes("closing", front.url)}, aws_env(moto))
        matrix: dict[tuple[str, str], list[Call]] = {}
        for upstream in ("moto", "closing"):
            base = f"{proxy.url}/{upstream}"
            for name, client in CLIENTS.items():
                cell = f"{upstream}-{len(matrix)}"
                if client is aws_cli:
                    matrix[name, upstream] = aws_cli(base, cell, tmp_path, proxy.log)
                else:
                    matrix[name, upstream] = client(base, cell)
        assert front.requests > 0
    lines = ["", "client x upstream -> ok/total, slowest call (moto | Connection: close, closed 0.3 s late)"]
    failures = []
    for name in CLIENTS:
        cells = []
        for upstream in ("moto", "closing"):
            calls = matrix[name, upstream]
            ok = sum(1 for good, seconds, _ in calls if good and seconds < MAX_SECONDS)
            slowest = max((seconds for _, seconds, _ in calls), default=0.0)
            cells.append(f"{ok}/{len(calls)} {slowest:.2f}s")
            if len(calls) < CALLS or ok < len(calls):
                bad = [
                    why or f"{seconds:.2f}s"
                    for good, seconds, why in calls
                    if not good or seconds >= MAX_SECONDS
                ]
                failures.append(f"{name} x {upstream}: {bad[:3]}")
        lines.append(f"  {name:<20} {cells[0]:>14} | {cells[1]:>14}")
    with capsys.disabled():
        print("\n".join(lines))
    assert failures == [], failures
