"""Config parsing: the Backstage shape, defaults, and one test per validation error message."""

from pathlib import Path

import pytest
import yaml

from proxysigv4_core.config import DEFAULT_ROLE_SESSION_NAME, ConfigError, load_config, parse_config

SRC = "routes.yaml"


def parse(section: dict):
    return parse_config({"proxysigv4": section}, SRC)


def test_short_and_expanded_forms_with_inference_and_overrides():
    cfg = parse(
        {
            "/api": "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
            "/custom": {
                "target": "https://api.example.com/v1",
                "service": "execute-api",
                "region": "eu-central-1",
            },
            "/role": {
                "target": "https://bedrock-runtime.us-west-2.amazonaws.com",
                "roleArn": "arn:aws:iam::123456789012:role/reader",
                "externalId": "ext-123",
                "durationSeconds": 3600,
                "timeout": 12.5,
            },
        }
    )
    api, custom, role = cfg.routes
    assert (api.service, api.region, api.target.path) == ("execute-api", "eu-west-1", "/prod")
    assert (custom.service, custom.region) == ("execute-api", "eu-central-1")
    assert (role.service, role.region, role.role_session_name) == (
        "bedrock",
        "us-west-2",
        DEFAULT_ROLE_SESSION_NAME,
    )
    assert (role.external_id, role.duration_seconds, role.timeout) == ("ext-123", 3600, 12.5)
    assert cfg.allow_unauthenticated_requests is None


def test_backstage_app_config_with_other_top_level_keys_loads(tmp_path):
    path = tmp_path / "app-config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "app": {"title": "Backstage"},
                "backend": {"baseUrl": "http://localhost:7007"},
                "proxysigv4": {
                    "allowUnauthenticatedRequests": True,
                    "/test": "https://abc.execute-api.us-east-1.amazonaws.com/dev",
                    "/test/sub": {
                        "target": "https://def.execute-api.us-east-1.amazonaws.com/dev",
                        "roleArn": "arn:aws:iam::123456789012:role/x",
                        "roleSessionName": "backstage",
                    },
                },
            }
        )
    )
    cfg = load_config(str(path))
    assert cfg.allow_unauthenticated_requests is True
    assert [r.prefix for r in cfg.routes] == ["/test", "/test/sub"]


def test_env_references_are_substituted(monkeypatch):
    monkeypatch.setenv("API_HOST", "abc.execute-api.eu-west-1.amazonaws.com")
    monkeypatch.setenv("EXT_ID", "secret-ext")
    cfg = parse(
        {
            "/a": {
                "target": "https://${API_HOST}/prod",
                "roleArn": "arn:aws:iam::123456789012:role/r",
                "externalId": "${EXT_ID}",
                "region": "${REGION:-eu-west-1}",
            }
        }
    )
    assert cfg.routes[0].target.host == "abc.execute-api.eu-west-1.amazonaws.com"
    assert cfg.routes[0].external_id == "secret-ext"
    assert cfg.routes[0].region == "eu-west-1"


def test_allow_unauthenticated_accepts_env_string(monkeypatch):
    monkeypatch.setenv("ALLOW", "false")
    cfg = parse({"allowUnauthenticatedRequests": "${ALLOW}", "/a": "https://sts.amazonaws.com"})
    assert cfg.allow_unauthenticated_requests is False


def test_trailing_slash_in_prefix_is_normalised():
    assert parse({"/api/": "https://sts.amazonaws.com"}).routes[0].prefix == "/api"


def test_headers_extend_defaults_globally_and_per_route():
    cfg = parse(
        {
            "allowedRequestHeaders": ["x-global"],
            "/a": {
                "target": "https://sts.amazonaws.com",
                "allowedRequestHeaders": ["x-route-*"],
                "allowedResponseHeaders": "set-cookie",
            },
        }
    )
    route = cfg.routes[0]
    assert route.request_headers.allows("X-Global") and route.request_headers.allows("x-route-1")
    assert route.request_headers.allows("content-type")
    assert route.response_headers.allows("Set-Cookie") and route.response_headers.allows("etag")


ERRORS = [
    (
        {"/a": {"target": "https://sts.amazonaws.com", "rolearn": "x"}},
        "route '/a': unknown key 'rolearn'; did you mean 'roleArn'?",
    ),
    (
        {"allowUnauthenticated": True, "/a": "https://sts.amazonaws.com"},
        "proxysigv4: unknown key 'allowUnauthenticated'; did you mean 'allowUnauthenticatedRequests'?",
    ),
    ({"/a": {"service": "s3"}}, "route '/a': key 'target' is required"),
    (
        {"/a": "ftp://host/x"},
        "route '/a': key 'target': 'ftp://host/x' is not usable: the scheme must be http or https",
    ),
    ({"/a": "not a url"}, "route '/a': key 'target': 'not a url' is not usable"),
    ({"/a": "https://user:pw@sts.amazonaws.com"}, "user info (user@host) is not allowed"),
    ({"/a": "https://sts.amazonaws.com/a/../b"}, "free of '.' and '..' segments"),
    (
        {"/a": "https://sts.amazonaws.com:99999"},
        "route '/a': key 'target': 'https://sts.amazonaws.com:99999' is not a valid URL",
    ),
    ({"/a": 42}, "route '/a': expected a target URL or a mapping with 'target'"),
    (
        {"/a": "https://api.example.com"},
        "route '/a': key 'service': cannot infer the signing service and region from host 'api.example.com'",
    ),
    (
        {"/a": {"target": "https://api.example.com", "service": "execute-api"}},
        "route '/a': key 'region': cannot infer the signing region",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "roleArn": "arn:aws:iam::123:role/x"}},
        "route '/a': key 'roleArn': 'arn:aws:iam::123:role/x' is not valid",
    ),
    (
        {
            "/a": {
                "target": "https://sts.amazonaws.com",
                "roleArn": "arn:aws:iam::123456789012:role/x",
                "roleSessionName": "x",
            }
        },
        "key 'roleSessionName': 'x' is not valid: 2-64 characters",
    ),
    (
        {
            "/a": {
                "target": "https://sts.amazonaws.com",
                "roleArn": "arn:aws:iam::123456789012:role/x",
                "roleSessionName": "x" * 65,
            }
        },
        "key 'roleSessionName'",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "roleSessionName": "abc"}},
        "key 'roleSessionName' only applies together with 'roleArn'",
    ),
    (
        {
            "/a": {
                "target": "https://sts.amazonaws.com",
                "roleArn": "arn:aws:iam::123456789012:role/x",
                "durationSeconds": 60,
            }
        },
        "key 'durationSeconds': expected 900 to 43200",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "region": "Europe"}},
        "key 'region': 'Europe' is not valid",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "service": "S3!"}},
        "key 'service': 'S3!' is not valid",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "timeout": 0}},
        "key 'timeout': expected seconds between 0 and 3600",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "allowedRequestHeaders": [1]}},
        "key 'allowedRequestHeaders': expected a list",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "profile": ""}},
        "key 'profile': expected a profile name",
    ),
    (
        {"allowUnauthenticatedRequests": "yes", "/a": "https://sts.amazonaws.com"},
        "proxysigv4.allowUnauthenticatedRequests: expected true or false",
    ),
    (
        {"/a/../b": "https://sts.amazonaws.com"},
        "route '/a/../b': a route prefix may not contain '.', '..'",
    ),
    ({"/a?x": "https://sts.amazonaws.com"}, "route '/a?x': a route prefix may not contain '?'"),
    (
        {"/a": "https://sts.amazonaws.com", "/a/": "https://sts.amazonaws.com"},
        "route '/a/': same prefix as route '/a'",
    ),
    ({"allowUnauthenticatedRequests": True}, "defines no routes"),
    (
        {"bearerTokens": "tok", "/a": "https://sts.amazonaws.com"},
        "proxysigv4.bearerTokens: expected a list of tokens",
    ),
    (
        {"bearerTokens": ["short"], "/a": "https://sts.amazonaws.com"},
        "proxysigv4.bearerTokens[0]: a bearer token must be at least 16",
    ),
    (
        {"bearerTokens": ["sha256:12"], "/a": "https://sts.amazonaws.com"},
        "bearerTokens[0]: a hashed token is sha256: followed by 64 hex",
    ),
    (
        {"/a": "https://${NOT_SET_ANYWHERE}/x"},
        "route '/a': environment variable NOT_SET_ANYWHERE is not set",
    ),
    (
        {"/a": {"target": "http://127.0.0.1:9000", "service": "s3", "region": "us-east-1", "http2": True}},
        "route '/a': key 'http2': HTTP/2 upstream needs an https target",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "http2": "yes"}},
        "route '/a': key 'http2': expected true or false",
    ),
    (
        {"/a": {"target": "https://sts.amazonaws.com", "websocketAuth": "cookie"}},
        "route '/a': key 'websocketAuth': expected one of header, query",
    ),
]


@pytest.mark.parametrize(("section", "message"), ERRORS)
def test_each_validation_error_names_file_route_and_key(section, message):
    with pytest.raises(ConfigError) as e:
        parse(section)
    assert str(e.value).startswith(SRC + ":")
    assert message in str(e.value)


def test_missing_section_and_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no top-level 'proxysigv4:' section"):
        parse_config({"app": {}}, SRC)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("proxysigv4: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read YAML"):
        load_config(str(bad))


def test_the_example_file_in_the_repository_is_valid():
    config = load_config(str(Path(__file__).resolve().parent.parent / "proxysigv4.yaml"))
    assert {"/api", "/search", "/orders", "/chat"} <= {r.prefix for r in config.routes}


# ---- host routes (origin URLs, for mitmproxy's other modes) --------------------------------------
def test_host_routes_name_an_origin_optionally_a_glob_and_a_path_prefix():
    from proxysigv4_core.config import parse_config

    config = parse_config(
        {
            "proxysigv4": {
                "https://*.execute-api.eu-west-1.amazonaws.com": {},
                "https://ABC.execute-api.us-east-1.amazonaws.com./prod/": {
                    "roleArn": "arn:aws:iam::123456789012:role/r"
                },
                "http://localhost:8000": {"service": "execute-api", "region": "eu-west-1"},
                "/path": "https://sts.amazonaws.com",
            }
        },
        "f.yaml",
    )
    routes = {r.prefix: r for r in config.routes}
    glob = routes["https://*.execute-api.eu-west-1.amazonaws.com"]
    assert (glob.target.host, glob.target.port, glob.service, glob.region) == (
        "*.execute-api.eu-west-1.amazonaws.com",
        443,
        "execute-api",
        "eu-west-1",
    )
    exact = routes["https://abc.execute-api.us-east-1.amazonaws.com/prod"]
    assert exact.target.path == "/prod" and exact.region == "us-east-1" and exact.role_arn.endswith("role/r")
    assert routes["http://localhost:8000"].target.port == 8000


@pytest.mark.parametrize(
    "key, spec, message",
    [
        ("https://a.*.example.com", {"service": "s3", "region": "eu-west-1"}, "leftmost label"),
        ("https://*x.example.com", {"service": "s3", "region": "eu-west-1"}, "leftmost label"),
        ("https://x.example.com?a=1", {"service": "s3", "region": "eu-west-1"}, "query or fragment"),
        ("https://x.example.com#f", {"service": "s3", "region": "eu-west-1"}, "query or fragment"),
        ("https://user@x.example.com", {"service": "s3", "region": "eu-west-1"}, "without user info"),
        ("https://x.example.com", {"target": "https://y.example.com"}, "takes no target"),
        ("https://x.example.com/a/../b", {"service": "s3", "region": "eu-west-1"}, "'.', '..'"),
        ("https://custom.example.com", {}, "cannot infer the signing service"),
        ("ftp://x.example.com", {}, "unknown key"),
        ("abc.execute-api.eu-west-1.amazonaws.com", {}, "unknown key"),
    ],
)
def test_bad_host_routes_are_config_errors(key, spec, message):
    from proxysigv4_core.config import parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config({"proxysigv4": {key: spec}}, "f.yaml")
