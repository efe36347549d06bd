"""``running-requests-size-scorer``: prefer endpoints running fewer requests (min-max; stale scores 0)."""

from __future__ import annotations

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState
from endpoint_picker.scheduling.plugins._delta import MinMaxInverseScorer, min_max_inverse
from endpoint_picker.scheduling.registry import NoParams, PluginContext, register


def _running(e: EndpointState) -> float | None:
    return None if e.stale or e.metrics is None else e.metrics.running_requests


@register()
class RunningRequestsSizeScorer(MinMaxInverseScorer):
    type_name = "running-requests-size-scorer"
    category = Category.DISTRIBUTION
    value_of = staticmethod(_running)

    def __init__(self, name: str, params: NoParams, context: PluginContext) -> None:
        super().__init__(name)

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        return min_max_inverse([None if e.stale or e.metrics is None else e.metrics.running_requests
                                for e in endpoints])
