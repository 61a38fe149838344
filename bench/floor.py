"""The least a signing addon for this project can do, for the benchmark's reference ("floor").

Per request it does only what every request must get: rerouted to the upstream (as
bench/reroute.py), signed with SigV4 (Host and X-Amz-Date signed, the body's SHA-256, the
signing key cached: the fewest steps a valid signature takes, using proxysigv4's own cached key
and HMAC), and one log line at info (the project's requirement), made and filtered exactly as
proxysigv4 makes it. No route table, no path or header checks, no allowlists, no response
filtering, no mitmweb metadata, no secret hiding. Two hooks: `request` (reroute, sign, the line's
head) and `response` (the line; its time counted from mitmproxy's own timestamp of the request's
start). The benchmark verifies its signatures like proxysigv4's.

Whatever it costs, any addon that signs and logs each request inside mitmproxy costs at least as
much; what proxysigv4 costs beyond it is the work of its other features.

    REROUTE_UPSTREAM=127.0.0.1:8000 mitmdump -s bench/floor.py --mode reverse:http://127.0.0.1:8000
"""

import hashlib
import os
import time

from mitmproxy import http
from reroute import Reroute

from proxysigv4_core.addon import content_length_header, log_request_line, skip_legacy_log_events
from proxysigv4_core.signing import signing_key

KEY, SECRET = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
SERVICE = os.environ.get("FLOOR_SERVICE", "execute-api")
REGION = os.environ.get("FLOOR_REGION", "us-east-1")
LOG = os.environ.get("FLOOR_LOG", "1") == "1"  # 0: sign only (the benchmark's "sign" set-up)


class Floor(Reroute):
    prefix = b"/floor" if LOG else b"/sign"

    def running(self) -> None:
        skip_legacy_log_events()

    def request(self, flow: http.HTTPFlow) -> None:
        data = flow.request.data
        client_path = data.path
        super().request(flow)  # rerouted
        target = data.path.decode()
        path, _, query = target.partition("?")
        if query:
            query = "&".join(f"{k}={v}" for k, v in sorted(q.partition("=")[::2] for q in query.split("&")))
        host = f"{data.host}:{data.port}"
        body = data.content or b""
        timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        payload = hashlib.sha256(body).hexdigest()
        canonical = (
            f"{data.method.decode()}\n{path}\n{query}\nhost:{host}\nx-amz-date:{timestamp}\n\n"
            f"host;x-amz-date\n{payload}"
        )
        scope = f"{timestamp[:8]}/{REGION}/{SERVICE}/aws4_request"
        string_to_sign = (
            f"AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = signing_key(SECRET, timestamp[:8], REGION, SERVICE).sign(string_to_sign.encode())
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={KEY}/{scope}, SignedHeaders=host;x-amz-date, Signature={signature}"
        )
        if LOG:  # the request line's head, made as proxysigv4 makes it: once, from what is at hand
            flow.metadata["floor"] = (
                f"{data.method.decode()} {client_path.decode()} -> http://{host}{target} "
            )
        data.headers.fields = (
            (b"Host", host.encode()),
            (b"X-Amz-Date", timestamp.encode()),
            (b"Authorization", authorization.encode()),
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
            f"{content_length_header(response.headers.fields)}B route=/bench {SERVICE}/{REGION}"
        )


addons = [Floor()]
