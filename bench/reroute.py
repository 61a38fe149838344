"""The cheapest rerouting addon there is, for the benchmark's reference: it sends every request to
the upstream in $REROUTE_UPSTREAM (host:port) under /reroute, and does nothing else.

Any mitmproxy script that reroutes costs at least this much (mitmproxy calls into the script for
every request); what proxysigv4 costs beyond it is its own work.

    REROUTE_UPSTREAM=127.0.0.1:8000 mitmdump -s bench/reroute.py --mode reverse:http://127.0.0.1:8000
"""

import os

from mitmproxy import http

HOST, _, PORT = os.environ["REROUTE_UPSTREAM"].rpartition(":")
PREFIX = b"/bench"


class Reroute:
    prefix = b"/reroute"  # the upstream counts requests by their first path segment

    def request(self, flow: http.HTTPFlow) -> None:
        data = flow.request.data
        data.host, data.port = HOST, int(PORT)
        if data.path.startswith(PREFIX):
            data.path = self.prefix + data.path[len(PREFIX) :]


addons = [Reroute()]
