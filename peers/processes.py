"""Processes on 127.0.0.1: mitmdump with the addon or bare, and moto server (proxysigv4_core.emulator)."""

import sys
from pathlib import Path

from proxysigv4_core.emulator import ACCOUNT, REGION, Moto, free_port, running_moto, stop, wait_for_port

__all__ = [
    "ACCOUNT",
    "BIN",
    "REGION",
    "ROOT",
    "Moto",
    "aws_env",
    "bare_mitmdump_command",
    "free_port",
    "mitmdump_command",
    "running_moto",
    "stop",
    "wait_for_port",
]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def bare_mitmdump_command(upstream_url: str, port: int, *args: str) -> list[str]:
    """mitmdump as a plain reverse proxy to `upstream_url` on 127.0.0.1:`port`, without this addon."""
    return [
        str(BIN / "mitmdump"),
        "--mode",
        f"reverse:{upstream_url}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        *args,
    ]


def mitmdump_command(config: Path, port: int, *args: str, program: str = "mitmdump") -> list[str]:
    return [
        str(BIN / program),
        "-s",
        str(ROOT / "addon" / "proxysigv4.py"),
        "--mode",
        "reverse:http://127.0.0.1:9",
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        "--set",
        f"proxysigv4_config={config}",
        *args,
    ]


def aws_env(moto: Moto, **extra: str) -> dict[str, str]:
    """Environment for the proxy: the test user's keys, STS pointed at moto, no real config."""
    return moto.proxy_env(**extra)
