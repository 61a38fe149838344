"""Micro-benchmark of the addon's per-request work, in-process (no sockets):

- route match, and route match + header filter + sign (`sign_upstream`, which signs with
  botocore), against bare botocore `SigV4Auth.add_auth` on an equivalent AWSRequest;
- all of the addon's hooks for one request (requestheaders, request, responseheaders, response)
  on a mitmproxy test flow, as mitmproxy would call them.

Each figure is the best of several batches (CPU time per call, in µs): the machine's noise only
ever adds time. `make bench-hotpath` runs it alone; `make bench` includes it.
"""

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from proxysigv4_core.config import parse_config
from proxysigv4_core.routing import RouteTable, resolve
from proxysigv4_core.signing import sign_upstream

CREDS = ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)
HEADERS = [
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
    ("User-Agent", "curl/8"),
    ("Connection", "keep-alive"),
    ("X-Amz-Meta-A", "1"),
]
BODY = b'{"hello": "world", "n": 1}' * 40  # ~1 KiB
TARGET = "/api/items/42?q=1&b=2"
BATCHES = 7


def best_us(fn, n: int) -> float:
    """Best CPU time per call over BATCHES batches of n // BATCHES calls."""
    size = max(1, n // BATCHES)
    for _ in range(min(200, size)):
        fn()
    best = float("inf")
    for _ in range(BATCHES):
        t0 = time.process_time()
        for _ in range(size):
            fn()
        best = min(best, (time.process_time() - t0) / size)
    return round(best * 1e6, 1)


def hooks_us(n: int) -> float:
    """All of the addon's hooks for one POST with a 1 KiB JSON body, on mitmproxy test flows."""
    from mitmproxy import http
    from mitmproxy.proxy.mode_specs import ProxyMode
    from mitmproxy.test import taddons, tflow, tutils

    from proxysigv4_core import ProxySigV4

    os.environ.update(
        AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY="secret",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    config = Path(tempfile.mkdtemp()) / "bench.yaml"
    config.write_text(
        "proxysigv4:\n  /api:\n    target: https://abc.execute-api.eu-west-1.amazonaws.com/prod\n"
    )

    def flow():
        headers = http.Headers(
            host="127.0.0.1:8080",
            **{k.replace("-", "_"): v for k, v in HEADERS},
            content_length=str(len(BODY)),
        )
        req = tutils.treq(method=b"POST", path=TARGET.encode(), host="127.0.0.1", port=8080, content=BODY)
        req.headers = headers
        f = tflow.tflow(req=req)
        f.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:8080")  # path routes: reverse
        f.response = None
        return f

    def response():
        headers = http.Headers(content_type="application/json", content_length="11", x_amzn_requestid="r")
        return tutils.tresp(headers=headers, content=b'{"ok":true}')

    async def run() -> float:
        addon = ProxySigV4()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, listen_host="127.0.0.1", proxysigv4_config=str(config))
            logging.getLogger("proxysigv4").setLevel(logging.WARNING)  # no log handler cost here
            best = float("inf")
            size = max(1, n // BATCHES)
            for batch in range(BATCHES + 1):
                flows = [(flow(), response()) for _ in range(size)]
                t0 = time.process_time()
                for f, r in flows:
                    await addon.requestheaders(f)
                    await addon.request(f)
                    f.response = r
                    addon.responseheaders(f)
                    addon.response(f)
                if batch:  # the first batch warms up
                    best = min(best, (time.process_time() - t0) / size)
                assert f.request.headers.get("authorization"), "the flow was not signed"
            return round(best * 1e6, 1)

    return asyncio.run(run())


def measure(n: int = 7000) -> dict:
    table = RouteTable(
        parse_config(
            {
                "proxysigv4": {
                    "/api": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
                    **{f"/r{i}": f"https://r{i}.execute-api.eu-west-1.amazonaws.com" for i in range(20)},
                }
            },
            "bench",
        ).routes
    )

    def addon_work():
        sign_upstream(resolve(table, TARGET), "POST", HEADERS, BODY, CREDS)

    def bare_botocore():
        request = AWSRequest(
            method="POST",
            url="https://abc.execute-api.eu-west-1.amazonaws.com/prod/items/42?q=1&b=2",
            data=BODY,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "X-Amz-Meta-A": "1",
                "Content-Length": str(len(BODY)),
            },
        )
        SigV4Auth(CREDS, "execute-api", "eu-west-1").add_auth(request)

    return {
        "route_match_us": best_us(lambda: resolve(table, TARGET), n),
        "route_filter_sign_us": best_us(addon_work, n),
        "bare_botocore_add_auth_us": best_us(bare_botocore, n),
        "all_addon_hooks_us": hooks_us(n // 2),
    }


LABELS = {
    "route_match_us": "route match",
    "route_filter_sign_us": "route match + header filter + sign",
    "bare_botocore_add_auth_us": "bare botocore SigV4Auth.add_auth",
    "all_addon_hooks_us": "all addon hooks for one request",
}


def print_table(results: dict) -> None:
    print("per-request addon work in-process (best CPU time per call, µs)")
    for key, label in LABELS.items():
        print(f"  {label:<42}{results[key]:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=7000)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = measure(args.n)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
