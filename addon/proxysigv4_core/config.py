"""Parse and validate the `proxysigv4:` section of a YAML file into immutable route settings.

The shape is the Backstage plugin's: every key starting with `/` is a route, either
`'/path': https://target` or `{target, roleArn, roleSessionName, service, region, ...}`;
other keys are global settings. Every error names the file, the route and the key.
"""

import dataclasses
import difflib
import functools
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

import yaml

from .browser import parse_host_pattern, parse_origin
from .configerror import ConfigError
from .headers import HeaderPolicy, request_policy, response_policy
from .inbound import BearerTokens, InboundError, parse_token
from .inference import infer_service_region, infer_signing_algorithm, is_s3

DEFAULT_ROLE_SESSION_NAME = "proxysigv4"
ROUTE_KEYS = (
    "target",
    "roleArn",
    "roleSessionName",
    "externalId",
    "durationSeconds",
    "profile",
    "service",
    "region",
    "allowedRequestHeaders",
    "allowedResponseHeaders",
    "timeout",
    "stream",
    "bufferLimit",
    "unsignedPayload",
    "websocketAuth",
    "signingAlgorithm",
    "http2",
    "corsOrigins",
)
GLOBAL_KEYS = (
    "allowUnauthenticatedRequests",
    "bearerTokens",
    "allowedHosts",
    "corsOrigins",
    "allowedRequestHeaders",
    "allowedResponseHeaders",
    "timeout",
    "stream",
    "bufferLimit",
)
STREAM_MODES = ("auto", "always", "never")
WEBSOCKET_AUTH = ("header", "query")
SIGNING_ALGORITHMS = ("sigv4", "sigv4a")
# SigV4a signs for a region set: `*`, or regions (wildcards allowed) separated by commas.
_REGION_SET = re.compile(r"^(\*|[a-z0-9*-]+(,[a-z0-9*-]+)*)$")
DEFAULT_BUFFER_LIMIT = 32 * 1024 * 1024
_SIZE = re.compile(r"^(\d+)\s*([kmg]?)i?b?$", re.IGNORECASE)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Characters allowed unescaped in a target's path: RFC 3986 pchar plus '/' and '%'-escapes.
_PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    query: str

    @functools.cached_property  # read for every request
    def host_header(self) -> str:
        """Host as sent and signed: with the port unless it is the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @functools.cached_property
    def url(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.host_header}{self.path}{query}"


@dataclass(frozen=True)
class Route:
    prefix: str
    target: Target
    service: str
    region: str
    role_arn: str | None = None
    role_session_name: str = DEFAULT_ROLE_SESSION_NAME
    external_id: str | None = None
    duration_seconds: int | None = None
    profile: str | None = None
    timeout: float | None = None
    stream: str = "auto"
    buffer_limit: int = DEFAULT_BUFFER_LIMIT
    unsigned_payload: bool = False
    websocket_auth: str = "header"  # how a WebSocket upgrade is signed: Authorization header or query
    signing_algorithm: str = "sigv4"  # or "sigv4a" (region is then a region set, e.g. "*")
    http2: bool = False  # offer HTTP/2 (ALPN h2) to an https target even for HTTP/1 clients
    request_headers: HeaderPolicy = field(default_factory=request_policy)
    response_headers: HeaderPolicy = field(default_factory=response_policy)
    # web origins whose pages may use this route (global corsOrigins and the route's own)
    cors_origins: frozenset[str] = frozenset()

    @functools.cached_property
    def is_s3(self) -> bool:
        return is_s3(self.service)

    @functools.cached_property
    def log_label(self) -> str:
        """How each request line names the route: its prefix and service/region."""
        return f"route={self.prefix} {self.service}/{self.region}"

    @functools.cached_property
    def credential_source(self) -> str:
        """Human description of where credentials come from (no secrets)."""
        base = f"profile {self.profile}" if self.profile else "default credential chain"
        return f"role {self.role_arn} via {base}" if self.role_arn else base


@dataclass(frozen=True)
class Config:
    source: str
    routes: tuple[Route, ...]
    allow_unauthenticated_requests: bool | None = None
    bearer_tokens: BearerTokens = BearerTokens(())
    allowed_hosts: tuple[str, ...] = ()  # Host names (and *. globs) clients may use beyond loopback's
    cors_origins: frozenset[str] = frozenset()  # web origins allowed on every route


def crt_available() -> bool:
    """Whether botocore's CRT signers can run (awscrt installed)."""
    return importlib.util.find_spec("awscrt") is not None


def substitute_env(value: str, where: str, environ: dict[str, str] | None = None) -> str:
    """Replace `${NAME}` and `${NAME:-default}`; an unset variable without default is an error."""
    env = os.environ if environ is None else environ

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _ENV_REF.sub(replace, value)


def _expand(node: object, where: str) -> object:
    if isinstance(node, str):
        return substitute_env(node, where)
    if isinstance(node, list):
        return [_expand(item, where) for item in node]
    if isinstance(node, dict):
        return {k: _expand(v, where) for k, v in node.items()}
    return node


def _unknown_key(key: str, known: tuple[str, ...], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def parse_target(value: object, where: str) -> Target:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: key 'target': expected a URL like https://host/path, got {value!r}")
    try:
        parts: SplitResult = urlsplit(value.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{where}: key 'target': {value!r} is not a valid URL ({e})") from e
    host = parts.hostname
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "the scheme must be http or https"
    elif not host:
        problem = "it has no host"
    elif parts.username is not None or parts.password is not None:
        problem = "user info (user@host) is not allowed in a target"
    elif parts.fragment:
        problem = "a fragment (#...) is not allowed in a target"
    elif not _PATH_CHARS.match(parts.path) or any(seg in (".", "..") for seg in parts.path.split("/")):
        problem = "its path must be percent-encoded and free of '.' and '..' segments"
    if problem or not host:
        raise ConfigError(f"{where}: key 'target': {value!r} is not usable: {problem}")
    default_port = 443 if parts.scheme == "https" else 80
    return Target(
        scheme=parts.scheme,
        host=host,
        port=port or default_port,
        path=parts.path,
        query=parts.query,
    )


def _string(value: object, key: str, where: str, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(f"{where}: key {key!r}: {value!r} is not valid: {rule}")
    return value


def _header_list(value: object, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: key {key!r}: expected a list of header names or globs")
    return tuple(v.strip().lower() for v in value)


def _list(value: object, key: str, where: str, parse: Callable[[object, str], str]) -> tuple[str, ...]:
    """A list (or one string) of entries, each checked by `parse(entry, where)`."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: key {key!r}: expected a list, got {value!r}")
    return tuple(parse(v, f"{where}: key {key!r}") for v in value)


def _timeout(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise ConfigError(f"{where}: key 'timeout': expected seconds between 0 and 3600, got {value!r}")
    return float(value)


def _stream_mode(value: object, where: str) -> str:
    if value not in STREAM_MODES:
        raise ConfigError(f"{where}: key 'stream': expected one of {', '.join(STREAM_MODES)}, got {value!r}")
    return value


def parse_size(value: object, where: str, key: str = "bufferLimit") -> int:
    """Bytes from an int or a string with a k/m/g suffix (binary: 1k = 1024)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"{where}: key {key!r}: expected a size like 32m, 1g or 65536, got {value!r}")
    return int(m.group(1)) * 1024 ** " kmg".index((m.group(2) or " ").lower())


def normalise_prefix(prefix: str, where: str) -> str:
    if any(c in prefix for c in "?#%\\") or any(c.isspace() for c in prefix):
        raise ConfigError(f"{where}: a route prefix may not contain '?', '#', '%', '\\' or spaces")
    if any(seg in (".", "..") for seg in prefix.split("/")) or "//" in prefix:
        raise ConfigError(f"{where}: a route prefix may not contain '.', '..' or empty segments")
    return prefix.rstrip("/") or "/"


def is_route_key(key: str) -> bool:
    """A path route ('/prefix') or a host route (an origin URL, for mitmproxy's other modes)."""
    return key.startswith(("/", "http://", "https://"))


_GLOB_HOST = re.compile(r"^\*\.(?=[a-z0-9])")


def parse_host_route(key: str, spec: object, globals_: dict, where: str) -> tuple[str, Route]:
    """A host route: `'https://host[:port][/path-prefix]': {settings}`; requests through a
    non-reverse listener to that origin are signed for their own host, not rewritten. The host may
    start with `*.` (one label). Returns its normalised key and the route."""
    try:
        parts = urlsplit(key)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{where}: not a valid origin URL ({e})") from e
    host = (parts.hostname or "").rstrip(".")
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "the scheme must be http or https"
    elif not host or parts.username is not None:
        problem = "it needs a host, without user info"
    elif parts.query or parts.fragment or key.endswith(("?", "#")):
        problem = "a query or fragment is not allowed; only a path prefix"
    elif "*" in _GLOB_HOST.sub("", host):
        problem = "a glob may only be the leftmost label, as in https://*.execute-api.eu-west-1.amazonaws.com"
    if problem:
        raise ConfigError(f"{where}: {problem}")
    if isinstance(spec, dict) and "target" in spec:
        raise ConfigError(f"{where}: key 'target': a host route signs for its own host; it takes no target")
    settings = dict(spec or {}) if isinstance(spec, dict) or spec is None else spec
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: expected a mapping of settings (or nothing), got {spec!r}")
    path = normalise_prefix(parts.path, where) if parts.path not in ("", "/") else ""
    default_port = 443 if parts.scheme == "https" else 80
    port = port or default_port
    sample = host.replace("*", "x", 1)  # service and region inferred from a name the glob matches
    route = parse_route(
        key, {**settings, "target": f"{parts.scheme}://{sample}:{port}{path}"}, globals_, where
    )
    normalised = f"{parts.scheme}://{host}" + (f":{port}" if port != default_port else "") + path
    target = Target(parts.scheme, host, port, path, "")
    return normalised, dataclasses.replace(route, prefix=normalised, target=target)


def parse_route(prefix: str, spec: object, globals_: dict, where: str) -> Route:
    if isinstance(spec, str):
        spec = {"target": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a target URL or a mapping with 'target', got {spec!r}")
    for key in spec:
        if key not in ROUTE_KEYS:
            raise _unknown_key(str(key), ROUTE_KEYS, where)
    if "target" not in spec:
        raise ConfigError(f"{where}: key 'target' is required")
    target = parse_target(spec["target"], where)
    service, region, algorithm = _signing(spec, target, where)
    extra = _role(spec, where) | _transfer(spec, globals_, target, where)
    if algorithm != "sigv4":
        extra["signing_algorithm"] = algorithm
    request_extra = globals_.get("allowedRequestHeaders", ()) + _header_list(
        spec.get("allowedRequestHeaders", []), "allowedRequestHeaders", where
    )
    response_extra = globals_.get("allowedResponseHeaders", ()) + _header_list(
        spec.get("allowedResponseHeaders", []), "allowedResponseHeaders", where
    )
    own_origins = _list(spec.get("corsOrigins", []), "corsOrigins", where, parse_origin)
    timeout = spec.get("timeout", globals_.get("timeout"))
    return Route(
        prefix=prefix,
        target=target,
        service=service,
        region=region,
        timeout=None if timeout is None else _timeout(timeout, where),
        request_headers=request_policy(request_extra),
        response_headers=response_policy(response_extra),
        cors_origins=globals_.get("corsOrigins", frozenset()) | frozenset(own_origins),
        **extra,
    )


def _signing(spec: dict, target: Target, where: str) -> tuple[str, str, str]:
    """Service, region (or SigV4a region set) and algorithm: given, or inferred from the host."""
    inferred_service, inferred_region = infer_service_region(target.host)
    service = spec.get("service", inferred_service)
    region = spec.get("region", inferred_region)
    algorithm = spec.get("signingAlgorithm", infer_signing_algorithm(target.host))
    if algorithm not in SIGNING_ALGORITHMS:
        raise ConfigError(f"{where}: key 'signingAlgorithm': expected one of {', '.join(SIGNING_ALGORITHMS)}")
    if service is None or region is None:
        missing = " and ".join(k for k, v in (("service", service), ("region", region)) if v is None)
        raise ConfigError(
            f"{where}: key {missing.split()[0]!r}: cannot infer the signing {missing} from host "
            f"{target.host!r}; add `{missing.split()[0]}:` to the route (e.g. service: execute-api, "
            "region: us-east-1)"
        )
    _string(service, "service", where, _SERVICE, "a lower-case AWS signing name such as 's3'")
    if algorithm == "sigv4a":
        _string(region, "region", where, _REGION_SET, "a region set such as '*' or 'us-east-1,eu-west-1'")
        if not crt_available():
            raise ConfigError(
                f"{where}: signingAlgorithm sigv4a needs the awscrt package (AWS's C signer): "
                "pip install 'proxysigv4[crt]'"
            )
        if spec.get("websocketAuth") == "query":
            raise ConfigError(f"{where}: key 'websocketAuth': query is not available with sigv4a")
    else:
        _string(region, "region", where, _REGION, "an AWS region such as 'eu-west-1'")
    return service, region, algorithm


def _role(spec: dict, where: str) -> dict:
    """Where the route's credentials come from: a profile, and a role assumed on top."""
    extra: dict = {}
    role_arn = spec.get("roleArn")
    if role_arn is not None:
        extra["role_arn"] = _string(
            role_arn, "roleArn", where, _ROLE_ARN, "expected arn:aws:iam::123456789012:role/Name"
        )
    if "roleSessionName" in spec:
        rule = "2-64 characters of letters, digits and +=,.@-_"
        extra["role_session_name"] = _string(
            spec["roleSessionName"], "roleSessionName", where, _SESSION_NAME, rule
        )
    if "externalId" in spec:
        rule = "2-1224 characters of \\w+=,.@:/-"
        extra["external_id"] = _string(spec["externalId"], "externalId", where, _EXTERNAL_ID, rule)
    if "durationSeconds" in spec:
        d = spec["durationSeconds"]
        if isinstance(d, bool) or not isinstance(d, int) or not 900 <= d <= 43200:
            raise ConfigError(f"{where}: key 'durationSeconds': expected 900 to 43200, got {d!r}")
        extra["duration_seconds"] = d
    for key in ("roleSessionName", "externalId", "durationSeconds"):
        if key in spec and role_arn is None:
            raise ConfigError(f"{where}: key {key!r} only applies together with 'roleArn'")
    if "profile" in spec:
        if not isinstance(spec["profile"], str) or not spec["profile"]:
            raise ConfigError(f"{where}: key 'profile': expected a profile name")
        extra["profile"] = spec["profile"]
    return extra


def _transfer(spec: dict, globals_: dict, target: Target, where: str) -> dict:
    """How bodies and connections go: streaming, the buffer limit, payload signing, WebSocket
    signing, HTTP/2 upstream."""
    extra: dict = {}
    if "stream" in spec:
        extra["stream"] = _stream_mode(spec["stream"], where)
    elif "stream" in globals_:
        extra["stream"] = globals_["stream"]
    if "bufferLimit" in spec:
        extra["buffer_limit"] = parse_size(spec["bufferLimit"], where)
    elif "bufferLimit" in globals_:
        extra["buffer_limit"] = globals_["bufferLimit"]
    for key, field_name in (("unsignedPayload", "unsigned_payload"), ("http2", "http2")):
        if key in spec:
            if not isinstance(spec[key], bool):
                raise ConfigError(f"{where}: key {key!r}: expected true or false")
            extra[field_name] = spec[key]
    if extra.get("http2") and target.scheme != "https":
        raise ConfigError(
            f"{where}: key 'http2': HTTP/2 upstream needs an https target (h2c is not supported)"
        )
    if "websocketAuth" in spec:
        if spec["websocketAuth"] not in WEBSOCKET_AUTH:
            raise ConfigError(f"{where}: key 'websocketAuth': expected one of {', '.join(WEBSOCKET_AUTH)}")
        extra["websocket_auth"] = spec["websocketAuth"]
    return extra


def parse_config(document: object, source: str) -> Config:
    """Validate a loaded YAML document; the `proxysigv4:` key holds the routes."""
    if not isinstance(document, dict) or "proxysigv4" not in document:
        raise ConfigError(f"{source}: no top-level 'proxysigv4:' section")
    section = document["proxysigv4"]
    if not isinstance(section, dict) or not section:
        raise ConfigError(f"{source}: 'proxysigv4:' must be a mapping of routes and settings")
    globals_ = _parse_globals(section, source)
    routes: dict[str, Route] = {}
    keys: dict[str, str] = {}
    for key, spec in section.items():
        key = str(key)
        if not is_route_key(key):
            continue
        where = f"{source}: route {key!r}"
        if key.startswith("/"):
            prefix = normalise_prefix(key, where)
            route = parse_route(prefix, _expand(spec, where), globals_, where)
        else:
            prefix, route = parse_host_route(key, _expand(spec, where), globals_, where)
        if prefix in routes:
            raise ConfigError(f"{where}: same prefix as route {keys[prefix]!r}")
        keys[prefix] = key
        routes[prefix] = route
    if not routes:
        raise ConfigError(
            f"{source}: 'proxysigv4:' defines no routes (keys starting with '/', or origin URLs "
            "such as 'https://abc.execute-api.us-east-1.amazonaws.com')"
        )
    return Config(
        source,
        tuple(routes.values()),
        globals_.get("allowUnauthenticatedRequests"),
        globals_.get("bearerTokens", BearerTokens(())),
        globals_.get("allowedHosts", ()),
        globals_.get("corsOrigins", frozenset()),
    )


def _parse_globals(section: dict, source: str) -> dict:
    """The settings (keys not starting with '/'), each checked, by their config key."""
    globals_: dict = {}
    for key, value in section.items():
        key = str(key)
        if is_route_key(key):
            continue
        where = f"{source}: proxysigv4.{key}"
        if key not in GLOBAL_KEYS:
            raise _unknown_key(key, GLOBAL_KEYS, f"{source}: proxysigv4")
        globals_[key] = _parse_global(key, _expand(value, where), where, f"{source}: proxysigv4")
    return globals_


def _parse_global(key: str, value: object, where: str, section: str) -> object:
    if key == "allowUnauthenticatedRequests":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if key == "timeout":
        return _timeout(value, where)
    if key == "bearerTokens":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: expected a list of tokens (e.g. ['${{PROXY_TOKEN}}'])")
        try:
            return BearerTokens(tuple(parse_token(v, f"{where}[{i}]") for i, v in enumerate(value)))
        except InboundError as e:
            raise ConfigError(str(e)) from e
    if key == "stream":
        return _stream_mode(value, where)
    if key == "bufferLimit":
        return parse_size(value, where)
    if key == "allowedHosts":
        return _list(value, key, section, parse_host_pattern)
    if key == "corsOrigins":
        return frozenset(_list(value, key, section, parse_origin))
    return _header_list(value, key, where)


def load_config(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except FileNotFoundError as e:
        hint = "give the route file with -c or --set proxysigv4_config=FILE"
        raise ConfigError(f"{path}: file not found ({hint})") from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from e
    return parse_config(document, path)
