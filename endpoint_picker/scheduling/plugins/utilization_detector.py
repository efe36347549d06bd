"""``utilization-detector`` (the default saturation detector), also usable as a filter.

Pool saturation = mean over endpoints of max(queue / Q, kv / K); stale or missing metrics count as 1.0.
As a filter it keeps endpoints with queue <= Q * (1 + headroom) and kv <= min(1, K * (1 + headroom)) and
fresh metrics, and keeps everyone if that would leave no one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, EndpointState, Filter, SaturationDetector
from endpoint_picker.scheduling.plugins._durations import parse_duration
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register


@dataclass(frozen=True, slots=True)
class UtilizationParams:
    queue_depth_threshold: int = 5
    kv_cache_util_threshold: float = 0.8
    metrics_staleness_threshold: str = "200ms"
    headroom: float = 0.0

    def check(self) -> None:
        if self.queue_depth_threshold <= 0:
            raise ParamError("queueDepthThreshold", "must be positive")
        if not 0.0 < self.kv_cache_util_threshold <= 1.0:
            raise ParamError("kvCacheUtilThreshold", "must be within (0, 1]")
        if self.headroom < 0:
            raise ParamError("headroom", "must not be negative")
        try:
            parse_duration(self.metrics_staleness_threshold)
        except ValueError as exc:
            raise ParamError("metricsStalenessThreshold", str(exc)) from None


@register()
class UtilizationDetector(SaturationDetector, Filter):
    type_name = "utilization-detector"
    Params = UtilizationParams

    def __init__(self, name: str, params: UtilizationParams, context: PluginContext) -> None:
        super().__init__(name)
        self._q = params.queue_depth_threshold
        self._k = params.kv_cache_util_threshold
        self._stale = parse_duration(params.metrics_staleness_threshold)
        self._q_limit = self._q * (1.0 + params.headroom)
        self._k_limit = min(1.0, self._k * (1.0 + params.headroom))

    def _fresh(self, e: EndpointState, now: float) -> bool:
        m = e.metrics
        return m is not None and not e.stale and (not self._stale or now - m.scraped_at <= self._stale)

    def saturation(self, endpoints: Sequence[EndpointState]) -> float:
        if not endpoints:
            return 1.0
        now = time.monotonic()
        total = 0.0
        for e in endpoints:
            m = e.metrics
            if m is None or not self._fresh(e, now):
                total += 1.0
            else:
                total += max(m.waiting_queue_size / self._q, m.kv_cache_usage / self._k)
        return total / len(endpoints)

    def filter(self, cycle: CycleState, request: InferenceRequest,
               endpoints: list[EndpointState]) -> list[EndpointState]:
        now = time.monotonic()
        kept = [e for e in endpoints if self._fresh(e, now) and e.metrics is not None
                and e.metrics.waiting_queue_size <= self._q_limit and e.metrics.kv_cache_usage <= self._k_limit]
        return kept or endpoints
