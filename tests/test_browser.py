"""The browser rules (browser.py) as pure functions: Host names the proxy answers to, origins that
may make it sign, the CORS answers, and their configuration."""

import pytest

from proxysigv4_core.browser import (
    BrowserPolicy,
    check_origin,
    check_wildcards,
    normalise_origin,
    origin_allowed,
    preflight_headers,
    response_cors_headers,
    split_host,
)
from proxysigv4_core.config import ConfigError, parse_config
from proxysigv4_core.headers import request_policy
from proxysigv4_core.inbound import InboundError
from proxysigv4_core.rejection import RequestRejected

LOOPBACK = BrowserPolicy.build((), ["127.0.0.1"], (), ())


@pytest.mark.parametrize(
    "value, parts",
    [
        ("localhost:8080", ("localhost", 8080)),
        ("LOCALHOST", ("localhost", None)),
        ("localhost.:8080", ("localhost", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("[0:0:0:0:0:0:0:1]", ("::1", None)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("evil.example:80", ("evil.example", 80)),
        ("", None),
        ("a b", None),
        ("localhost:x", None),
        ("localhost:99999", None),
        ("[::1", None),
        ("[zz]:1", None),
        ("user@localhost", None),
        ("::1", None),  # IPv6 in a Host needs its brackets
    ],
)
def test_host_values_are_split_as_browsers_send_them(value, parts):
    assert split_host(value) == parts


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8080",
        "LocalHost:1",
        "localhost.:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "[::1]",
    ],
)
def test_loopback_names_are_allowed_with_any_port(host):
    assert LOOPBACK.host_allowed(host)


@pytest.mark.parametrize(
    "host",
    [
        "rebind.test:8080",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "127.0.0.2",  # loopback, but not a name the proxy is known by
        "[::2]",
        "",
        "localhost:abc",
        "local host",
    ],
)
def test_other_names_are_refused(host):
    assert not LOOPBACK.host_allowed(host)
    with pytest.raises(RequestRejected) as refused:
        LOOPBACK.check_host([host])
    assert (refused.value.status, refused.value.error) == (403, "host_not_allowed")
    assert "allowedHosts" in refused.value.message


def test_every_host_value_must_be_allowed_absolute_form_authority_too():
    LOOPBACK.check_host(["localhost:8080", "127.0.0.1:8080"])
    with pytest.raises(RequestRejected, match="evil.example"):
        LOOPBACK.check_host(["localhost:8080", "evil.example"])  # Host fine, absolute-form not
    with pytest.raises(RequestRejected, match="none"):
        LOOPBACK.check_host([])  # no Host at all


def test_allowed_hosts_and_listen_addresses_add_names_and_leftmost_label_globs():
    policy = BrowserPolicy.build(
        ["backstage.example.com", "*.internal.example.com", "10.1.2.3"], ["192.168.5.5", "::1", ""], (), ()
    )
    for host in (
        "backstage.example.com",
        "BACKSTAGE.example.com.:443",
        "a.internal.example.com",
        "b.a.internal.example.com",
        "10.1.2.3:8080",
        "192.168.5.5:8080",
        "localhost",
    ):
        assert policy.host_allowed(host), host
    for host in ("internal.example.com", "xinternal.example.com", "backstage.example.com.evil", "10.1.2.4"):
        assert not policy.host_allowed(host), host
    assert BrowserPolicy.build(["*"], [], (), ()).host_allowed("anything.example")


@pytest.mark.parametrize(
    "value, origin",
    [
        ("http://localhost:3000", "http://localhost:3000"),
        ("HTTP://LocalHost:3000", "http://localhost:3000"),
        ("http://localhost:80", "http://localhost"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("https://app.example.com.", "https://app.example.com"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        ("null", "null"),
        ("http://localhost:3000/", None),
        ("http://localhost:*", None),
        ("ftp://localhost", None),
        ("localhost:3000", None),
        ("http://user@localhost", None),
    ],
)
def test_origins_are_normalised_to_one_spelling(value, origin):
    assert normalise_origin(value) == origin


ALLOWED = frozenset({"http://localhost:3000"})


@pytest.mark.parametrize(
    "origin, host, allowed",
    [
        ("http://localhost:3000", "localhost:8080", True),  # listed
        ("http://localhost:3001", "localhost:8080", False),  # another port
        ("https://localhost:3000", "localhost:8080", False),  # another scheme
        ("http://app.localhost:3000", "localhost:8080", False),  # a subdomain
        ("http://127.0.0.1:3000", "localhost:8080", False),  # the same machine, another name
        ("null", "localhost:8080", False),
        ("http://localhost:8080", "localhost:8080", True),  # the proxy's own origin
        ("https://backstage.example.com", "backstage.example.com", True),  # behind an ingress
        ("https://backstage.example.com", "backstage.example.com:443", True),
        ("http://backstage.example.com:8080", "backstage.example.com", False),
        ("http://localhost:8080", None, False),
    ],
)
def test_an_origin_is_allowed_when_listed_or_the_proxys_own(origin, host, allowed):
    assert origin_allowed(normalise_origin(origin), host, ALLOWED) is allowed


@pytest.mark.parametrize(
    "origin, site, result",
    [
        (None, None, None),  # curl, SDKs, the AWS CLI
        (None, "none", None),  # a URL the developer typed
        (None, "same-origin", None),
        ("http://localhost:3000", "cross-site", "http://localhost:3000"),
        ("http://localhost:8080", "same-origin", "http://localhost:8080"),
    ],
)
def test_requests_without_a_foreign_origin_pass(origin, site, result):
    assert check_origin(origin, site, "localhost:8080", ALLOWED) == result


@pytest.mark.parametrize(
    "origin, site",
    [
        (None, "cross-site"),  # <img>, a no-cors GET
        (None, "same-site"),  # another port of 127.0.0.1 is the same site
        ("https://evil.example", "cross-site"),
        ("https://evil.example", None),
        ("null", None),
        ("http://localhost:3001", "same-site"),
        ("garbage", None),
    ],
)
def test_browser_requests_from_other_origins_are_refused(origin, site):
    with pytest.raises(RequestRejected) as refused:
        check_origin(origin, site, "localhost:8080", ALLOWED)
    assert (refused.value.status, refused.value.error) == (403, "cross_origin_refused")


def test_preflight_answer_lists_only_headers_the_route_passes():
    policy = request_policy(["x-custom"])
    headers = dict(
        preflight_headers(
            "http://localhost:3000",
            "Content-Type, X-Amz-Meta-Color, x-custom, Cookie, X-Not-Allowed, authorization",
            policy.allows,
            bearer=False,
            private_network=False,
        )
    )
    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    assert headers["access-control-allow-headers"] == "content-type, x-amz-meta-color, x-custom"
    assert "PUT" in headers["access-control-allow-methods"]
    assert headers["vary"] == "Origin" and int(headers["access-control-max-age"]) > 0
    assert "access-control-allow-private-network" not in headers
    with_bearer = dict(preflight_headers("http://a", "authorization", policy.allows, True, True))
    assert with_bearer["access-control-allow-headers"] == "authorization"
    assert with_bearer["access-control-allow-private-network"] == "true"
    assert "access-control-allow-headers" not in dict(
        preflight_headers("http://a", "", policy.allows, False, False)
    )


def test_actual_responses_expose_the_headers_present_beyond_the_safelisted_ones():
    headers = dict(
        response_cors_headers("http://localhost:3000", ["Content-Type", "ETag", "x-amz-request-id", "etag"])
    )
    assert headers == {
        "access-control-allow-origin": "http://localhost:3000",
        "vary": "Origin",
        "access-control-expose-headers": "etag, x-amz-request-id",
    }


def _config(section: dict):
    return parse_config({"proxysigv4": section}, "f.yaml")


def test_cors_origins_and_allowed_hosts_are_parsed_global_and_per_route():
    config = _config(
        {
            "allowedHosts": ["backstage.example.com", "*.corp.example"],
            "corsOrigins": ["http://localhost:3000"],
            "/a": {
                "target": "https://abc.execute-api.eu-west-1.amazonaws.com",
                "corsOrigins": "HTTP://App.Test:8443",
            },
            "/b": "https://abc.execute-api.eu-west-1.amazonaws.com",
        }
    )
    assert config.allowed_hosts == ("backstage.example.com", "*.corp.example")
    assert config.cors_origins == {"http://localhost:3000"}
    routes = {r.prefix: r for r in config.routes}
    assert routes["/a"].cors_origins == {"http://localhost:3000", "http://app.test:8443"}
    assert routes["/b"].cors_origins == {"http://localhost:3000"}


@pytest.mark.parametrize(
    "section, message",
    [
        ({"corsOrigins": ["http://localhost:*"]}, "globs are not accepted"),
        ({"corsOrigins": ["http://localhost:3000/"]}, "without the trailing slash"),
        ({"corsOrigins": ["http://localhost:3000/app"]}, "is not an origin"),
        ({"corsOrigins": "localhost:3000"}, "is not an origin"),
        ({"corsOrigins": {"a": 1}}, "expected a list"),
        ({"allowedHosts": ["http://backstage.example.com"]}, "without scheme, port or path"),
        ({"allowedHosts": ["backstage.example.com:443"]}, "without scheme, port or path"),
        ({"allowedHosts": ["a.*.example.com"]}, "glob of leftmost labels"),
        ({"allowedHosts": ["*.10.0.0.1"]}, "glob of leftmost labels"),
        ({"allowedHosts": [""]}, "is not a host name"),
    ],
)
def test_bad_browser_settings_are_config_errors_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=message) as error:
        _config({**section, "/a": "https://abc.execute-api.eu-west-1.amazonaws.com"})
    assert "f.yaml: proxysigv4" in str(error.value) and next(iter(section)) in str(error.value)


def test_any_origin_null_or_any_host_need_inbound_authentication():
    for origins, hosts in (({"*"}, ()), ({"null"}, ()), (set(), ("*",))):
        with pytest.raises(InboundError, match="any web page"):
            check_wildcards(origins, hosts, authenticated=False, source="f.yaml")
        check_wildcards(origins, hosts, authenticated=True, source="f.yaml")
    check_wildcards(
        {"http://localhost:3000"}, ("backstage.example.com",), authenticated=False, source="f.yaml"
    )
