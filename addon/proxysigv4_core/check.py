"""`proxysigv4 check`: resolve every route's credentials (assuming roles) and ask STS who they are."""

import datetime

import botocore.session

from .config import Config, Route
from .credentials import STS_CLIENT_CONFIG, CredentialSpec, load_credentials


def _identity(route: Route) -> tuple[str, str]:
    """(caller ARN, expiry) for the route's credentials; raises with botocore's message."""
    credentials = load_credentials(CredentialSpec.of(route))
    frozen = credentials.get_frozen_credentials()
    sts = botocore.session.Session().create_client(
        "sts",
        region_name=route.region,
        aws_access_key_id=frozen.access_key,
        aws_secret_access_key=frozen.secret_key,
        aws_session_token=frozen.token,
        config=STS_CLIENT_CONFIG,
    )
    # botocore adds a client's operations at run time: its BaseClient type declares none of them
    arn = sts.get_caller_identity()["Arn"]  # type: ignore[attr-defined]
    expiry = getattr(credentials, "_expiry_time", None)
    if isinstance(expiry, datetime.datetime):
        return arn, f"expires {expiry.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%SZ}"
    return arn, "no expiry (long-term keys)"


def check_routes(config: Config) -> tuple[list[str], int]:
    """One line per route, and how many routes failed."""
    rows, failures = [], 0
    seen: dict[CredentialSpec, tuple[str, str] | Exception] = {}
    for route in config.routes:
        spec = CredentialSpec.of(route)
        if spec not in seen:
            try:
                seen[spec] = _identity(route)
            except Exception as e:  # botocore's own message names the cause
                seen[spec] = e
        result = seen[spec]
        head = f"{route.prefix} -> {route.target.url} ({route.service}/{route.region})"
        if isinstance(result, Exception):
            failures += 1
            rows.append(f"{head}: FAILED ({route.credential_source}): {result}")
        else:
            rows.append(f"{head}: {result[0]}, {result[1]}")
    return rows, failures
