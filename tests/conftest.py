"""Fixtures that start real processes on 127.0.0.1: moto server (signature checking on),
mitmdump with the addon, and small local HTTP upstreams. Each waits for readiness and
always cleans up."""

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from peers.processes import Moto, free_port, mitmdump_command, running_moto, stop, wait_for_port

# Tests import their helpers from where they live: peers.processes, peers.upstream, tests/helpers.py.


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[Moto]:
    with running_moto(tmp_path_factory.mktemp("moto")) as m:
        yield m


@dataclass
class Proxy:
    url: str
    proc: subprocess.Popen
    log_path: Path
    config: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_proxy(tmp_path) -> Iterator[Callable[..., Proxy]]:
    """Start `mitmdump -s addon/proxysigv4.py` with a route table; returns a Proxy."""
    procs: list[subprocess.Popen] = []

    def start(routes: dict, env: dict[str, str], args: tuple[str, ...] = (), expect_exit: bool = False):
        config = tmp_path / f"routes{len(procs)}.yaml"
        config.write_text(yaml.safe_dump({"proxysigv4": routes}))
        port = free_port()
        log_path = tmp_path / f"mitmdump{len(procs)}.log"
        cmd = mitmdump_command(config, port, *args)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        procs.append(proc)
        proxy = Proxy(f"http://127.0.0.1:{port}", proc, log_path, config)
        if expect_exit:
            proc.wait(30)
            return proxy
        wait_for_port(port, proc)
        return proxy

    yield start
    for p in procs:
        stop(p)
