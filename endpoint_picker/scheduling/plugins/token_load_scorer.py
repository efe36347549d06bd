"""``token-load-scorer``: 1 - min(1, tokens this picker has in flight to the endpoint / queueThresholdTokens)."""

from __future__ import annotations

from dataclasses import dataclass

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState
from endpoint_picker.scheduling.plugins._delta import PerEndpointScorer
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register


@dataclass(frozen=True, slots=True)
class TokenLoadParams:
    queue_threshold_tokens: int = 4_194_304

    def check(self) -> None:
        if self.queue_threshold_tokens <= 0:
            raise ParamError("queueThresholdTokens", "must be positive")


@register()
class TokenLoadScorer(PerEndpointScorer):
    type_name = "token-load-scorer"
    category = Category.DISTRIBUTION
    Params = TokenLoadParams

    def __init__(self, name: str, params: TokenLoadParams, context: PluginContext) -> None:
        super().__init__(name)
        self._threshold = params.queue_threshold_tokens

    def score_one(self, e: EndpointState) -> float:
        return 1.0 - min(1.0, e.inflight_tokens / self._threshold)

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        t = self._threshold
        return [1.0 - min(1.0, e.inflight_tokens / t) for e in endpoints]
