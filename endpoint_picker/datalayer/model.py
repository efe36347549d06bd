"""Immutable per-endpoint metric snapshots and the store that holds the latest one per endpoint.

Scrapers write whole snapshots; schedulers read them without locks. A snapshot carries the time it was
scraped, so staleness is an input to scheduling rather than a silent error.

Stale = saturated: a failed scrape writes nothing, so the endpoint's last snapshot simply ages. Readers
decide with :func:`is_stale` (missing metrics are stale too) and must then treat the endpoint as saturated
-- scorers give it their worst score, saturation detectors count it as 100 % used, filters drop it (unless
that would drop everyone) -- never as idle, which is what zeros from a dead endpoint would look like.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from endpoint_picker.journal import KeyJournal


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """What one scrape of a model server's ``/metrics`` said, normalised across engine types."""

    scraped_at: float  # time.monotonic() when the scrape completed
    waiting_queue_size: int = 0  # vllm:num_requests_waiting
    running_requests: int = 0  # vllm:num_requests_running
    kv_cache_usage: float = 0.0  # vllm:kv_cache_usage_perc, 0..1
    block_size: int | None = None  # vllm:cache_config_info{block_size}
    num_gpu_blocks: int | None = None  # vllm:cache_config_info{num_gpu_blocks}
    active_models: frozenset[str] = field(default_factory=frozenset)  # running LoRA adapters
    waiting_models: frozenset[str] = field(default_factory=frozenset)  # waiting LoRA adapters
    max_active_models: int = 0  # vllm:lora_requests_info{max_lora}
    prefix_cache_queries: float = 0.0  # counters, for hit rates
    prefix_cache_hits: float = 0.0

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.scraped_at


def is_stale(metrics: EndpointMetrics | None, now: float, threshold: float) -> bool:
    """True when ``metrics`` is missing or older than ``threshold`` seconds at ``now`` (``time.monotonic()``).

    A threshold <= 0 turns the age check off (only missing metrics are stale). Stale means saturated: see
    the module docstring.
    """
    if metrics is None:
        return True
    return threshold > 0 and now - metrics.scraped_at > threshold


class MetricsStore:
    """Latest :class:`EndpointMetrics` per endpoint key (``ip:port``); a missing key means never scraped."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._latest: dict[str, EndpointMetrics] = {}
        self.clock = clock
        # Every key put or forgotten, for readers that keep views of some endpoints up to date.
        self.changes = KeyJournal()

    def get(self, key: str) -> EndpointMetrics | None:
        return self._latest.get(key)

    def put(self, key: str, metrics: EndpointMetrics) -> None:
        self._latest[key] = metrics
        self.changes.add(key)

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._latest.pop(key, None)
            self.changes.add(key)

    def snapshot(self) -> dict[str, EndpointMetrics]:
        return dict(self._latest)
