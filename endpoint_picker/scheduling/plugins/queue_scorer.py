"""``queue-scorer``: prefer endpoints with fewer requests waiting in the model server's queue.

Min-max over the candidates' waiting queues: (maxQ - q) / (maxQ - minQ); all equal gives 1.0. Stale or
missing metrics count as the longest queue (stale = saturated).
"""

from __future__ import annotations

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState, Scorer
from endpoint_picker.scheduling.registry import NoParams, PluginContext, register


def min_max_inverse(values: list[float | None]) -> list[float]:
    """Lower is better; None (unknown) scores 0; all known values equal score 1."""
    known = [v for v in values if v is not None]
    if not known:
        return [0.0] * len(values)
    lo, hi = min(known), max(known)
    if hi == lo:
        return [0.0 if v is None else 1.0 for v in values]
    span = hi - lo
    return [0.0 if v is None else (hi - v) / span for v in values]


@register()
class QueueScorer(Scorer):
    type_name = "queue-scorer"
    category = Category.DISTRIBUTION

    def __init__(self, name: str, params: NoParams, context: PluginContext) -> None:
        super().__init__(name)

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        return min_max_inverse([None if e.stale or e.metrics is None else e.metrics.waiting_queue_size
                                for e in endpoints])
