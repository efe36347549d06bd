"""``active-request-scorer`` (llm-d): prefer endpoints with fewer requests in flight from this picker.

count <= idleThreshold -> 1.0; else (max - count) / max * maxBusyScore, max over the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState, Scorer
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register


@dataclass(frozen=True, slots=True)
class ActiveRequestParams:
    idle_threshold: int = 0
    max_busy_score: float = 1.0
    request_timeout: str = ""  # deprecated upstream; accepted and ignored

    def check(self) -> None:
        if self.idle_threshold < 0:
            raise ParamError("idleThreshold", "must not be negative")
        if not 0.0 <= self.max_busy_score <= 1.0:
            raise ParamError("maxBusyScore", "must be within [0, 1]")


@register()
class ActiveRequestScorer(Scorer):
    type_name = "active-request-scorer"
    category = Category.DISTRIBUTION
    Params = ActiveRequestParams

    def __init__(self, name: str, params: ActiveRequestParams, context: PluginContext) -> None:
        super().__init__(name)
        self._idle = params.idle_threshold
        self._busy = params.max_busy_score

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        counts = [e.inflight_requests for e in endpoints]
        top = max(counts, default=0)
        return [1.0 if c <= self._idle else (top - c) / top * self._busy for c in counts]
