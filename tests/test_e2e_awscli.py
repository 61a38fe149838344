"""The AWS CLI, unsigned (--no-sign-request), uploads and downloads 100 MiB through the proxy
to moto with signature checking: multipart upload, the CLI's own payload modes, ranged GETs."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from helpers import AWS, aws_cli_env
from peers.processes import REGION, aws_env
from peers.streams import BLOCK, block

pytestmark = pytest.mark.e2e


def aws(proxy_url: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = aws_cli_env(tmp_path)
    return subprocess.run(
        [AWS, "--endpoint-url", f"{proxy_url}/s3", "--no-sign-request", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_aws_cli_uploads_and_downloads_100_mib(moto, start_proxy, tmp_path):
    proxy = start_proxy({"/s3": {"target": moto.url, "service": "s3", "region": REGION}}, aws_env(moto))
    source = tmp_path / "source.bin"
    with source.open("wb") as f:
        for i in range(100):
            f.write(block(i))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    made = aws(proxy.url, "s3", "mb", "s3://cli-bucket", tmp_path=tmp_path)
    assert made.returncode == 0, made.stderr
    up = aws(proxy.url, "s3", "cp", str(source), "s3://cli-bucket/dir/100mib.bin", tmp_path=tmp_path)
    assert up.returncode == 0, up.stderr
    listed = aws(proxy.url, "s3", "ls", "s3://cli-bucket/dir/", tmp_path=tmp_path)
    assert listed.returncode == 0 and f"{100 * BLOCK} 100mib.bin" in listed.stdout, listed
    target = tmp_path / "back.bin"
    down = aws(proxy.url, "s3", "cp", "s3://cli-bucket/dir/100mib.bin", str(target), tmp_path=tmp_path)
    assert down.returncode == 0, down.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    log = proxy.log()
    assert "uploadId=" in log  # it really was a multipart upload through the proxy
