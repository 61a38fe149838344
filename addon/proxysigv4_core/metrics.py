"""Prometheus metrics of one proxy process, kept by `prometheus_client` in a registry of its own.

Label values are bounded: route prefixes as the config file names them (never client paths), the
proxy's own refusal codes, standard methods (anything else is "OTHER") and status codes.
"""

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
NO_ROUTE = ""  # the route label of a request no route matched
# Upstream latency buckets (seconds): loopback to slow Lambda and Bedrock calls.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


class _CredentialExpiry(Collector):
    """proxysigv4_credentials_expiry_timestamp_seconds{route}, read at scrape time."""

    def __init__(self, expiries: Callable[[], Iterable[tuple[str, float]]]) -> None:
        self._expiries = expiries

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "proxysigv4_credentials_expiry_timestamp_seconds",
            "When the credentials each route signs with expire (Unix time); absent for credentials "
            "that do not expire or are not loaded.",
            labels=["route"],
        )
        for route, expires_at in self._expiries():
            family.add_metric([route], expires_at)
        yield family

    def describe(self) -> list[Metric]:
        return []


class Metrics:
    """The proxy's counters, histogram and gauges. `expiries` gives (route, expiry) pairs and
    `in_flight` the number of requests in flight; both are read when Prometheus scrapes."""

    def __init__(
        self, expiries: Callable[[], Iterable[tuple[str, float]]], in_flight: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "proxysigv4_requests",
            "Requests answered, by route prefix, method and status code ('error': no answer).",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "proxysigv4_refusals",
            "Requests the proxy refused itself, by reason (the error code of its JSON answer).",
            ["reason"],
            registry=self.registry,
        )
        self.upstream = Histogram(
            "proxysigv4_upstream_duration_seconds",
            "From the request fully received to the upstream's response headers, by route prefix.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "proxysigv4_in_flight_requests",
            "Requests received and not yet answered.",
            registry=self.registry,
        )
        self.in_flight.set_function(in_flight)
        self.refreshes = Counter(
            "proxysigv4_credential_refreshes",
            "Credential resolutions and renewals, by route prefix and result (success, failure).",
            ["route", "result"],
            registry=self.registry,
        )
        self.registry.register(_CredentialExpiry(expiries))

    def answered(self, route: str | None, method: str, code: int | str) -> None:
        self.requests.labels(route or NO_ROUTE, method_label(method), str(code)).inc()

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def upstream_latency(self, route: str, seconds: float) -> None:
        self.upstream.labels(route).observe(max(seconds, 0.0))

    def credential_refresh(self, routes: Iterable[str], result: str) -> None:
        for route in routes:
            self.refreshes.labels(route, result).inc()
