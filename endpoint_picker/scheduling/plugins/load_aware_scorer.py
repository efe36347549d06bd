"""``load-aware-scorer`` (llm-d): q = waiting queue; q = 0 -> 0.5; else 0.5 * (1 - min(q, T) / T).

Stale metrics score 0 (saturated).
"""

from __future__ import annotations

from dataclasses import dataclass

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState, Scorer
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register


@dataclass(frozen=True, slots=True)
class LoadAwareParams:
    threshold: int = 128

    def check(self) -> None:
        if self.threshold <= 0:
            raise ParamError("threshold", "must be positive")


@register()
class LoadAwareScorer(Scorer):
    type_name = "load-aware-scorer"
    category = Category.DISTRIBUTION
    Params = LoadAwareParams

    def __init__(self, name: str, params: LoadAwareParams, context: PluginContext) -> None:
        super().__init__(name)
        self._t = params.threshold

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        out = []
        for e in endpoints:
            if e.stale or e.metrics is None:
                out.append(0.0)
                continue
            q = e.metrics.waiting_queue_size
            out.append(0.5 if q == 0 else 0.5 * (1.0 - min(q, self._t) / self._t))
        return out
