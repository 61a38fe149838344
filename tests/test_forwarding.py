"""forwarding.retarget sets the request's target on mitmproxy's data directly: it must leave the
request exactly as mitmproxy's public setters would, once the signed headers are in place."""

import pytest
from mitmproxy.test import tutils

from proxysigv4_core.config import parse_config
from proxysigv4_core.forwarding import retarget

ROUTES = {
    r.prefix: r
    for r in parse_config(
        {
            "proxysigv4": {
                "/api": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
                "/port": "https://abc.execute-api.eu-west-1.amazonaws.com:8443/stage",
                "/plain": {
                    "target": "http://127.0.0.1:9000/x",
                    "service": "execute-api",
                    "region": "eu-west-1",
                },
            }
        },
        "t",
    ).routes
}


@pytest.mark.parametrize("prefix", sorted(ROUTES))
@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/2.0"])
@pytest.mark.parametrize("authority", [b"", b"client.example:8080"])
def test_retarget_equals_the_public_setters(prefix, version, authority):
    route = ROUTES[prefix]
    headers = [("Host", route.target.host_header), ("X-Amz-Date", "20261126T235958Z"), ("Authorization", "x")]

    def client_request():
        request = tutils.treq(
            http_version=version, authority=authority, headers=((b"host", b"localhost:8080"),)
        )
        request.host, request.port = "127.0.0.1", 8080
        return request

    ours = client_request()
    retarget(ours, route.target, "/prod/a%20b?x=1", headers)
    public = client_request()
    target = route.target
    public.scheme, public.host, public.port, public.path = (
        target.scheme,
        target.host,
        target.port,
        "/prod/a%20b?x=1",
    )
    public.authority = target.host_header if public.is_http2 else ""
    public.headers.fields = tuple((k.encode(), v.encode()) for k, v in headers)
    assert ours.data == public.data
    assert ours.url == public.url and ours.host_header == target.host_header
