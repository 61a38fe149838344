"""Streaming benchmark: 1 GiB through the proxy each way, throughput and the proxy's peak RSS
growth over idle. Run with `make bench-streaming`; prints a table and writes a JSON file.

Uses the test suite's helpers: a local upstream, moto server with signature checking, and a
real mitmdump with the addon, all on 127.0.0.1.
"""

import argparse
import hashlib
import json
import subprocess
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent

from peers import processes  # noqa: E402
from peers.streams import BLOCK, StreamingUpstream, payload_digest, put_blocks, vm_hwm_kib, vm_rss_kib  # noqa: E402


def start_mitmdump(routes: dict, env: dict, workdir: Path):
    config = workdir / "routes.yaml"
    config.write_text(yaml.safe_dump({"proxysigv4": routes}))
    port = processes.free_port()
    log = open(workdir / "mitmdump.log", "wb")
    cmd = processes.mitmdump_command(config, port, "-q")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    processes.wait_for_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def measure(url: str, pid: int, size: int) -> dict:
    """Download and upload `size` bytes through the proxy at `url`; checksums must match."""
    requests.get(f"{url}/dl/big/{BLOCK}", timeout=30).raise_for_status()  # warm-up
    requests.put(f"{url}/s3/bench-bucket", timeout=30).raise_for_status()
    idle = vm_rss_kib(pid)
    h = hashlib.sha256()
    t0 = time.monotonic()
    with requests.get(f"{url}/dl/big/{size}", stream=True, timeout=60) as r:
        for chunk in r.iter_content(chunk_size=BLOCK):
            h.update(chunk)
    down_s = time.monotonic() - t0
    if h.hexdigest() != payload_digest(size):
        raise SystemExit("download checksum mismatch")
    down_peak = vm_hwm_kib(pid)
    t0 = time.monotonic()
    status, body, md5 = put_blocks(url, "/s3/bench-bucket/big.bin", size)
    up_s = time.monotonic() - t0
    etag = requests.head(f"{url}/s3/bench-bucket/big.bin", timeout=30).headers.get("etag", "").strip('"')
    if status != 200 or etag != md5:
        raise SystemExit(f"upload failed or checksum mismatch: {status} {body[:300]!r}")
    up_peak = vm_hwm_kib(pid)
    mib = size / BLOCK

    def row(seconds: float, peak: int) -> dict:
        return {
            "seconds": round(seconds, 2),
            "mib_per_s": round(mib / seconds, 1),
            "peak_rss_growth_mib": round((peak - idle) / 1024, 1),
        }

    return {
        "size_mib": mib,
        "idle_rss_mib": round(idle / 1024, 1),
        "download": row(down_s, down_peak),
        "upload_s3_moto": row(up_s, up_peak),
    }


def run(mib: int = 1024) -> dict:
    """1 GiB (by default) down from a local upstream and up to moto's S3, through mitmdump."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with processes.running_moto(workdir) as moto, StreamingUpstream() as upstream:
            routes = {
                "/dl": {"target": upstream.url, "service": "execute-api", "region": "us-east-1"},
                "/s3": {"target": moto.url, "service": "s3", "region": "us-east-1"},
            }
            proc, url = start_mitmdump(routes, processes.aws_env(moto), workdir)
            try:
                return measure(url, proc.pid, mib * BLOCK)
            finally:
                processes.stop(proc)


def print_table(results: dict) -> None:
    size, idle = results["size_mib"], results["idle_rss_mib"]
    print(f"streaming {size:g} MiB through proxysigv4 (idle RSS {idle} MiB)")
    print(f"{'transfer':<22}{'seconds':>9}{'MiB/s':>9}{'peak RSS growth MiB':>22}")
    for name in ("download", "upload_s3_moto"):
        r = results[name]
        print(f"{name:<22}{r['seconds']:>9}{r['mib_per_s']:>9}{r['peak_rss_growth_mib']:>22}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="size of each transfer in MiB")
    parser.add_argument("--json", default=str(ROOT / "bench" / "streaming.json"))
    args = parser.parse_args()
    results = run(args.mib)
    print_table(results)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
