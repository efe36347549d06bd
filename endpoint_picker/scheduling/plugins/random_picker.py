"""``random-picker``: uniform choice, ignoring scores."""

from __future__ import annotations

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, EndpointState, ScoredEndpoint
from endpoint_picker.scheduling.plugins.max_score_picker import CountingPicker
from endpoint_picker.scheduling.registry import register


@register()
class RandomPicker(CountingPicker):
    type_name = "random-picker"

    def pick(self, cycle: CycleState, request: InferenceRequest,
             scored: list[ScoredEndpoint]) -> list[EndpointState]:
        n = min(self.max_endpoints, len(scored))
        return [s.state for s in self._rng.sample(scored, n)]
