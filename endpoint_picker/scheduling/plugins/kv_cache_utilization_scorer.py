"""``kv-cache-utilization-scorer`` (old name ``kv-cache-scorer``): 1 - KV-cache utilisation; stale scores 0."""

from __future__ import annotations

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState
from endpoint_picker.scheduling.plugins._delta import PerEndpointScorer
from endpoint_picker.scheduling.registry import NoParams, PluginContext, register


@register("kv-cache-scorer")
class KVCacheUtilizationScorer(PerEndpointScorer):
    type_name = "kv-cache-utilization-scorer"
    category = Category.DISTRIBUTION

    def __init__(self, name: str, params: NoParams, context: PluginContext) -> None:
        super().__init__(name)

    def score_one(self, e: EndpointState) -> float:
        return 0.0 if e.stale or e.metrics is None else 1.0 - e.metrics.kv_cache_usage

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        return [0.0 if e.stale or e.metrics is None else 1.0 - e.metrics.kv_cache_usage for e in endpoints]
