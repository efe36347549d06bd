"""``concurrency-detector``: saturation from this picker's own in-flight requests (or tokens).

Pool saturation = total in flight / (endpoints x capacity). As a filter it keeps endpoints with in-flight
<= capacity * (1 + headroom), and keeps everyone if that would leave no one. Needs no scraped metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, EndpointState, Filter, SaturationDetector
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register


@dataclass(frozen=True, slots=True)
class ConcurrencyParams:
    concurrency_mode: str = "requests"
    max_concurrency: int = 100
    max_token_concurrency: int = 1_000_000
    headroom: float = 0.0

    def check(self) -> None:
        if self.concurrency_mode not in ("requests", "tokens"):
            raise ParamError("concurrencyMode", "must be 'requests' or 'tokens'")
        if self.max_concurrency <= 0:
            raise ParamError("maxConcurrency", "must be positive")
        if self.max_token_concurrency <= 0:
            raise ParamError("maxTokenConcurrency", "must be positive")
        if self.headroom < 0:
            raise ParamError("headroom", "must not be negative")


@register()
class ConcurrencyDetector(SaturationDetector, Filter):
    type_name = "concurrency-detector"
    Params = ConcurrencyParams

    def __init__(self, name: str, params: ConcurrencyParams, context: PluginContext) -> None:
        super().__init__(name)
        self._tokens = params.concurrency_mode == "tokens"
        self._cap = params.max_token_concurrency if self._tokens else params.max_concurrency
        self._limit = self._cap * (1.0 + params.headroom)

    def _load(self, e: EndpointState) -> int:
        return e.inflight_tokens if self._tokens else e.inflight_requests

    def saturation(self, endpoints: Sequence[EndpointState]) -> float:
        if not endpoints:
            return 1.0
        return sum(self._load(e) for e in endpoints) / (len(endpoints) * self._cap)

    def filter(self, cycle: CycleState, request: InferenceRequest,
               endpoints: list[EndpointState]) -> list[EndpointState]:
        kept = [e for e in endpoints if self._load(e) <= self._limit]
        return kept or endpoints
