"""Per-request metrics of the proxy path, kept as plain numbers and rendered when Prometheus scrapes.

prometheus_client takes a lock on every increment and observation; the proxy path runs on one event
loop, so those locks are pure cost on every request. This collector counts in dictionaries and lists
and turns them into the usual families at scrape time:

- `gateway_proxied_requests_total{service,status}`: answers on the proxy path (499: client went away)
- `gateway_upstream_duration_seconds{service}`: time until an upstream's response headers (histogram)
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, _Histogram] = {}
        registry.register(self)

    def count(self, service: str, status: int) -> None:
        key = (service, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def observe(self, service: str, seconds: float) -> None:
        histogram = self.latency.get(service)
        if histogram is None:
            histogram = self.latency[service] = _Histogram()
        histogram.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        histogram.total += seconds

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families()

    def _families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("gateway_proxied_requests", "Requests answered on the proxy path",
                                       labels=["service", "status"])
        for (service, status), count in sorted(self.requests.items()):
            requests.add_metric([service, str(status)], count)
        yield requests
        latency = HistogramMetricFamily("gateway_upstream_duration_seconds",
                                        "Time until an upstream's response headers, by service",
                                        labels=["service"])
        for service, histogram in sorted(self.latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([service], buckets, histogram.total)
        yield latency
