"""Counters of the scraper's outcomes per endpoint, and a Prometheus collector that exposes them.

Why it exists: a failed scrape changes nothing the scheduler can see except the age of an endpoint's
snapshot, so failures must be visible somewhere else -- as ``endpoint_picker_metrics_scrape_errors_total
{endpoint, reason}`` and ``endpoint_picker_metrics_scrapes_total{endpoint}`` on the picker's own
``/metrics``. The scraper only bumps plain dict counters (no prometheus_client locks on the hot path); the
collector reads them when the picker's ``/metrics`` is scraped. Series of removed endpoints are dropped.

Reasons: ``timeout`` (no complete answer within the timeout, connect included), ``connect`` (refused,
unreachable), ``closed`` (connection closed or reset mid-answer), ``status`` (not 200), ``protocol`` (not
valid HTTP/1.x), ``too_large`` (answer over the size limit), ``parse`` (a mapped family's line is
malformed, or no mapped series is on the page).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["REASONS", "ScrapeStats", "ScrapeStatsCollector"]

REASONS = ("timeout", "connect", "closed", "status", "protocol", "too_large", "parse")


class ScrapeStats:
    """Successful scrapes and errors by reason, per endpoint key; ``last_error`` keeps the latest message."""

    __slots__ = ("errors", "last_error", "scrapes")

    def __init__(self) -> None:
        self.scrapes: dict[str, int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.last_error: dict[str, str] = {}

    def success(self, key: str) -> None:
        self.scrapes[key] = self.scrapes.get(key, 0) + 1

    def error(self, key: str, reason: str, detail: str = "") -> None:
        k = (key, reason)
        self.errors[k] = self.errors.get(k, 0) + 1
        self.last_error[key] = f"{reason}: {detail}" if detail else reason

    def errors_of(self, key: str, reason: str | None = None) -> int:
        if reason is not None:
            return self.errors.get((key, reason), 0)
        return sum(n for (k, _r), n in self.errors.items() if k == key)

    def forget(self, keys: Iterable[str]) -> None:
        gone = set(keys)
        if not gone:
            return
        for key in gone:
            self.scrapes.pop(key, None)
            self.last_error.pop(key, None)
        for k in [k for k in self.errors if k[0] in gone]:
            del self.errors[k]


class ScrapeStatsCollector(Collector):
    """Register with a ``CollectorRegistry`` to expose a :class:`ScrapeStats` (read at collection time)."""

    def __init__(self, stats: ScrapeStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        scrapes = CounterMetricFamily(
            "endpoint_picker_metrics_scrapes",
            "Successful scrapes of the endpoint's model-server /metrics.",
            labels=["endpoint"],
        )
        for key, n in sorted(self._stats.scrapes.items()):
            scrapes.add_metric([key], n)
        yield scrapes
        errors = CounterMetricFamily(
            "endpoint_picker_metrics_scrape_errors",
            "Failed scrapes of the endpoint's model-server /metrics, by reason; its last snapshot ages meanwhile.",
            labels=["endpoint", "reason"],
        )
        for (key, reason), n in sorted(self._stats.errors.items()):
            errors.add_metric([key, reason], n)
        yield errors
