"""The least a signing addon for this project can do, for the benchmark's reference ("floor").

Per request it does only what every request must get: rerouted to the upstream (as
bench/reroute.py), signed with SigV4 by botocore (its SigV4Auth, made once, signing Host and
X-Amz-Date and the body's SHA-256: the fewest headers a valid signature covers), and one log line
at info (the project's requirement), made and filtered exactly as proxysigv4 makes it. No route
table, no path or header checks, no allowlists, no response filtering, no mitmweb metadata, no
secret hiding. Two hooks: `request` (reroute, sign, the line's head) and `response` (the line; its
time counted from mitmproxy's own timestamp of the request's start). The benchmark verifies its
signatures like proxysigv4's.

Whatever it costs, any addon that signs and logs each request inside mitmproxy costs at least as
much; what proxysigv4 costs beyond it is the work of its other features.

    REROUTE_UPSTREAM=127.0.0.1:8000 mitmdump -s bench/floor.py --mode reverse:http://127.0.0.1:8000
"""

import logging
import os
import time

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from mitmproxy import http
from reroute import Reroute

from proxysigv4_core.internals import skip_legacy_log_events
from proxysigv4_core.requestlog import log_request_line

KEY, SECRET = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
SERVICE = os.environ.get("FLOOR_SERVICE", "execute-api")
REGION = os.environ.get("FLOOR_REGION", "us-east-1")
LOG = os.environ.get("FLOOR_LOG", "1") == "1"  # 0: sign only (the benchmark's "sign" set-up)
SIGNER = SigV4Auth(ReadOnlyCredentials(KEY, SECRET, None), SERVICE, REGION)


class Floor(Reroute):
    prefix = b"/floor" if LOG else b"/sign"

    def running(self) -> None:
        skip_legacy_log_events()
        # botocore logs each canonical request, string to sign and signature at DEBUG: held at INFO,
        # as proxysigv4 holds it (no signature in the log, and no log work per request)
        logging.getLogger("botocore").setLevel(logging.INFO)

    def request(self, flow: http.HTTPFlow) -> None:
        data = flow.request.data
        client_path = data.path
        super().request(flow)  # rerouted
        target = data.path.decode()
        host = f"{data.host}:{data.port}"
        body = data.content or b""
        signed = AWSRequest(data.method.decode(), f"http://{host}{target}", {"Host": host}, body)
        SIGNER.add_auth(signed)
        if LOG:  # the request line's head, made as proxysigv4 makes it: once, from what is at hand
            flow.metadata["floor"] = (
                f"{data.method.decode()} {client_path.decode()} -> http://{host}{target} "
            )
        data.headers.fields = (
            (b"Host", host.encode()),
            (b"X-Amz-Date", signed.headers["X-Amz-Date"].encode()),
            (b"Authorization", signed.headers["Authorization"].encode()),
            (b"content-length", str(len(body)).encode()),
        )

    def response(self, flow: http.HTTPFlow) -> None:
        if not LOG:
            return
        response = flow.response
        assert response is not None
        log_request_line(
            f"{flow.metadata['floor']}{response.status_code} "
            f"{(time.time() - flow.request.timestamp_start) * 1000:.1f}ms "
            f"{response.headers.get('content-length')}B route=/bench {SERVICE}/{REGION}"
        )


addons = [Floor()]
