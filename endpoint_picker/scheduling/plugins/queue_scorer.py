"""``queue-scorer``: prefer endpoints with fewer requests waiting in the model server's queue.

Min-max over the candidates' waiting queues: (maxQ - q) / (maxQ - minQ); all equal gives 1.0. Stale or
missing metrics count as the longest queue (stale = saturated).
"""

from __future__ import annotations

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState
from endpoint_picker.scheduling.plugins._delta import MinMaxInverseScorer, min_max_inverse
from endpoint_picker.scheduling.registry import NoParams, PluginContext, register

__all__ = ["QueueScorer", "min_max_inverse"]


def _waiting(e: EndpointState) -> float | None:
    return None if e.stale or e.metrics is None else e.metrics.waiting_queue_size


@register()
class QueueScorer(MinMaxInverseScorer):
    type_name = "queue-scorer"
    category = Category.DISTRIBUTION
    value_of = staticmethod(_waiting)

    def __init__(self, name: str, params: NoParams, context: PluginContext) -> None:
        super().__init__(name)

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        return min_max_inverse([None if e.stale or e.metrics is None else e.metrics.waiting_queue_size
                                for e in endpoints])
