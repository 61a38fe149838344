"""Streaming end to end through a real mitmdump: event streams arrive event by event, 1 GiB
passes both ways with flat memory, S3 payload modes, Expect: 100-continue, size limits."""

import base64
import hashlib
import json
import socket
import time
import zlib

import pytest
import requests

from helpers import KEY, SECRET, proxy_env, route
from peers.processes import REGION, aws_env
from peers.sigv4_verify import verify
from peers.streams import BLOCK, GIB, StreamingUpstream, payload_digest, put_blocks, vm_hwm_kib, vm_rss_kib
from peers.upstream import Upstream

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "content_type", ["text/event-stream", "application/vnd.amazon.eventstream", "application/x-ndjson"]
)
def test_events_reach_the_client_before_the_next_is_written(start_proxy, tmp_path, content_type):
    with StreamingUpstream(content_type) as upstream:
        proxy = start_proxy({"/ev": route(upstream.url)}, proxy_env(tmp_path))
        with requests.get(f"{proxy.url}/ev/events", stream=True, timeout=10) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == content_type
            chunks = r.iter_content(chunk_size=None)
            first = next(chunks)
            assert first == b"data: first\n\n"
            assert not upstream.second_written.is_set()  # it is not written before we release it
            upstream.release.set()
            rest = b"".join(chunks)
        assert rest == b"data: second\n\n"
        assert upstream.requests[0][1]["authorization"].startswith("AWS4-HMAC-SHA256")


def test_stream_never_buffers_the_whole_response(start_proxy, tmp_path):
    with StreamingUpstream() as upstream:
        proxy = start_proxy({"/ev": route(upstream.url, stream="never")}, proxy_env(tmp_path))
        t0 = time.monotonic()
        upstream_release_after = 1.0

        def release_later():
            time.sleep(upstream_release_after)
            upstream.release.set()

        import threading

        threading.Thread(target=release_later, daemon=True).start()
        with requests.get(f"{proxy.url}/ev/events", stream=True, timeout=10) as r:
            first = next(r.iter_content(chunk_size=None))
            waited = time.monotonic() - t0
        assert waited >= upstream_release_after * 0.9  # nothing arrived before the end
        assert first.startswith(b"data: first")


def test_one_gib_response_streams_with_flat_memory(start_proxy, tmp_path):
    with StreamingUpstream() as upstream:
        proxy = start_proxy({"/dl": route(upstream.url)}, proxy_env(tmp_path))
        assert requests.get(f"{proxy.url}/dl/big/{BLOCK}", timeout=10).status_code == 200  # warm-up
        idle = vm_rss_kib(proxy.proc.pid)
        h = hashlib.sha256()
        with requests.get(f"{proxy.url}/dl/big/{GIB}", stream=True, timeout=60) as r:
            assert r.status_code == 200 and r.headers["content-length"] == str(GIB)
            for chunk in r.iter_content(chunk_size=BLOCK):
                h.update(chunk)
        assert h.hexdigest() == payload_digest(GIB)
        growth_mib = (vm_hwm_kib(proxy.proc.pid) - idle) / 1024
        print(f"1 GiB download: peak RSS growth {growth_mib:.1f} MiB")
        assert growth_mib < 64


def test_one_gib_s3_upload_to_moto_streams_with_unsigned_payload(moto, start_proxy):
    proxy = start_proxy({"/s3": {"target": moto.url, "service": "s3", "region": REGION}}, aws_env(moto))
    assert requests.put(f"{proxy.url}/s3/big-bucket", timeout=30).status_code == 200
    idle = vm_rss_kib(proxy.proc.pid)
    status, body, md5 = put_blocks(proxy.url, "/s3/big-bucket/one-gib.bin", GIB)
    assert status == 200, body[:500]
    growth_mib = (vm_hwm_kib(proxy.proc.pid) - idle) / 1024
    print(f"1 GiB upload: peak RSS growth {growth_mib:.1f} MiB")
    head = requests.head(f"{proxy.url}/s3/big-bucket/one-gib.bin", timeout=30)
    assert head.status_code == 200
    assert head.headers["etag"].strip('"') == md5
    assert int(head.headers["content-length"]) == GIB
    assert growth_mib < 64


def test_moto_rejects_unsigned_payload_upload_with_a_wrong_signature(moto):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    requests.put(f"{moto.url}/probe-bucket", headers=_signed(moto, "PUT", "/probe-bucket"), timeout=10)
    req = AWSRequest(
        method="PUT",
        url=f"{moto.url}/probe-bucket/k",
        data=b"abc",
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    S3SigV4Auth(Credentials(moto.access_key, "wrong-secret"), "s3", REGION).add_auth(req)
    r = requests.put(req.url, data=b"abc", headers=dict(req.headers.items()), timeout=10)
    assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text


def _signed(moto, method, path):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=moto.url + path, data=b"")
    S3SigV4Auth(Credentials(moto.access_key, moto.secret_key), "s3", REGION).add_auth(req)
    return dict(req.headers.items())


# ---- request payload modes, checked by the awscrt-verifying upstream -----------------------------
def recording(received):
    verdict = verify(received.method, received.target, received.headers, received.body, {KEY: (SECRET, None)})
    got = {k.lower(): v for k, v in received.headers}
    body = json.dumps(
        {
            "ok": verdict.ok,
            "reason": verdict.reason,
            "sha": got.get("x-amz-content-sha256"),
            "length": len(received.body),
        }
    )
    return (200 if verdict.ok else 403), [("content-type", "application/json")], body.encode()


@pytest.fixture
def checked(start_proxy, tmp_path):
    with Upstream(recording) as upstream:
        routes = {
            "/s3": route(upstream.url, "s3", bufferLimit="64k"),
            "/api": route(upstream.url, bufferLimit="64k"),
            "/lattice": route(upstream.url, "vpc-lattice-svcs", unsignedPayload=True),
        }
        yield start_proxy(routes, proxy_env(tmp_path)), upstream


def test_s3_body_above_buffer_limit_streams_with_unsigned_payload(checked):
    proxy, upstream = checked
    status, body, _ = put_blocks(proxy.url, "/s3/b/large.bin", 2 * BLOCK)
    assert status == 200, body
    result = json.loads(body)
    assert result == {"ok": True, "reason": "ok", "sha": "UNSIGNED-PAYLOAD", "length": 2 * BLOCK}


def test_s3_body_below_buffer_limit_is_hashed(checked):
    proxy, _ = checked
    r = requests.put(f"{proxy.url}/s3/b/small.bin", data=b"x" * 1000, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["sha"] == hashlib.sha256(b"x" * 1000).hexdigest()


def test_non_s3_body_above_buffer_limit_gets_413_naming_the_setting(checked):
    proxy, upstream = checked
    before = len(upstream.received)
    r = requests.post(f"{proxy.url}/api/upload", data=b"x" * (65 * 1024), timeout=10)
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large" and "bufferLimit" in r.json()["message"]
    chunked = requests.post(f"{proxy.url}/api/upload", data=iter([b"x" * 40000, b"y" * 40000]), timeout=10)
    assert chunked.status_code == 413
    assert len(upstream.received) == before


def test_unsigned_payload_route_for_services_that_accept_it(checked):
    proxy, _ = checked
    r = requests.post(f"{proxy.url}/lattice/x", data=b'{"a":1}', timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["sha"] == "UNSIGNED-PAYLOAD"


def aws_chunked(data: bytes) -> tuple[bytes, dict]:
    """Body and headers as an SDK sends STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer."""
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(data), data, crc.encode())
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "content-type": "text/plain",
    }
    return body, headers


def test_client_streaming_unsigned_trailer_mode_is_passed_through_signed(checked):
    proxy, upstream = checked
    body, headers = aws_chunked(b"hello trailer")
    r = requests.put(f"{proxy.url}/s3/b/trailer.txt", data=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["sha"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    got = {k.lower(): v for k, v in upstream.received[-1].headers}
    assert got["content-encoding"] == "aws-chunked" and got["x-amz-decoded-content-length"] == "13"
    signed = got["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {
        "content-encoding",
        "x-amz-decoded-content-length",
        "x-amz-trailer",
        "x-amz-content-sha256",
    } <= set(signed)
    assert upstream.received[-1].body == body


def test_client_signed_chunk_mode_is_refused_with_an_explanation(checked):
    proxy, upstream = checked
    before = len(upstream.received)
    r = requests.put(
        f"{proxy.url}/s3/b/x",
        data=b"abc",
        headers={"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"},
        timeout=10,
    )
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_payload_mode" and "--no-sign-request" in r.json()["message"]
    assert len(upstream.received) == before


def test_expect_100_continue_upload(checked):
    proxy, upstream = checked
    data = b"z" * (2 * BLOCK)
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(
            b"PUT /s3/b/expect.bin HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % len(data)
        )
        s.settimeout(2)
        interim = s.recv(1024)  # must arrive without us sending the body (curl would wait 1 s)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        s.sendall(data)
        s.settimeout(10)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    assert b" 200 " in raw.split(b"\r\n")[0], raw[:300]
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["length"] == len(data)


def test_streaming_unsigned_trailer_upload_is_accepted_by_moto(moto, start_proxy):
    proxy = start_proxy({"/s3": {"target": moto.url, "service": "s3", "region": REGION}}, aws_env(moto))
    assert requests.put(f"{proxy.url}/s3/trailer-bucket", timeout=10).status_code == 200
    data = b"sent as aws-chunked with a crc32 trailer"
    body, headers = aws_chunked(data)
    r = requests.put(f"{proxy.url}/s3/trailer-bucket/t.txt", data=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    got = requests.get(f"{proxy.url}/s3/trailer-bucket/t.txt", timeout=10)
    assert got.status_code == 200 and got.content == data
