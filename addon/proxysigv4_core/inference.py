"""Infer the SigV4 signing service and region from an AWS endpoint host name."""

import re

_REGION = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d+$")
_SUFFIXES = (".amazonaws.com.cn", ".amazonaws.com", ".api.aws", ".on.aws")
# Endpoint prefixes whose signing name differs from the prefix.
_SIGNING_NAMES = {
    "bedrock-runtime": "bedrock",
    "bedrock-agent": "bedrock",
    "bedrock-agent-runtime": "bedrock",
    "bedrock-data-automation-runtime": "bedrock",
    "lambda-url": "lambda",
    "s3-accesspoint": "s3",
    "s3-control": "s3",
    "email": "ses",
    "streams.dynamodb": "dynamodb",
    "runtime.sagemaker": "sagemaker",
    "runtime.lex": "lex",
    "data.iot": "iotdata",
}
# Labels between the service and the region that are not part of the service name.
_VARIANT_LABELS = {"dualstack"}
# Services whose endpoint puts the service after the region: <domain>.<region>.<service>.amazonaws.com
_SERVICE_AFTER_REGION = {"es", "aoss"}
GLOBAL_REGION = "us-east-1"
S3_SERVICES = frozenset({"s3", "s3-object-lambda"})


def is_s3(service: str) -> bool:
    """S3 signs the path without normalisation; every other service normalises it."""
    return service in S3_SERVICES


def _signing_name(labels: list[str]) -> str | None:
    """The service's signing name from the labels before the region (last one or two)."""
    labels = [label for label in labels if label not in _VARIANT_LABELS]
    if not labels:
        return None
    if len(labels) >= 2 and ".".join(labels[-2:]) in _SIGNING_NAMES:
        return _SIGNING_NAMES[".".join(labels[-2:])]
    name = labels[-1].removesuffix("-fips")
    return _SIGNING_NAMES.get(name, name)


# S3 Multi-Region Access Points: signed with SigV4a for every region.
_MRAP_SUFFIX = ".mrap.accesspoint.s3-global.amazonaws.com"


def infer_signing_algorithm(host: str) -> str:
    """sigv4a for endpoints that only accept it (S3 Multi-Region Access Points), else sigv4."""
    return "sigv4a" if host.lower().rstrip(".").endswith(_MRAP_SUFFIX) else "sigv4"


def infer_service_region(host: str) -> tuple[str | None, str | None]:
    """Return (service, region) for an AWS endpoint host, None for what cannot be inferred.

    Custom and CNAME'd domains return (None, None): the route must say `service` and `region`.
    """
    host = host.lower().rstrip(".")
    if host.endswith(_MRAP_SUFFIX):
        return "s3", "*"
    suffix = next((s for s in _SUFFIXES if host.endswith(s)), None)
    if suffix is None:
        return None, None
    labels = host.removesuffix(suffix).split(".")
    region_at = [i for i, label in enumerate(labels) if _REGION.match(label)]
    if region_at:
        i = region_at[-1]
        region = labels[i]
        after = labels[i + 1 :]
        if after and after[-1] in _SERVICE_AFTER_REGION:
            return after[-1], region
        return _signing_name(labels[:i]), region
    last = labels[-1]
    # Legacy S3 hosts: s3-<region>.amazonaws.com, <bucket>.s3-<region>.amazonaws.com, s3-external-1.
    if last.startswith("s3-"):
        rest = last.removeprefix("s3-")
        if _REGION.match(rest):
            return "s3", rest
        if rest == "external-1":
            return "s3", GLOBAL_REGION
    if suffix == ".amazonaws.com":
        # Global endpoints (iam, sts, s3, route53, ...) sign in us-east-1.
        return _signing_name(labels), GLOBAL_REGION
    return None, None
