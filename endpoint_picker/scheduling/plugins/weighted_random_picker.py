"""``weighted-random-picker``: A-Res reservoir sampling with key U^(1/score); all-zero scores -> uniform.

Endpoints scoring 0 are chosen only when nothing scores above 0 (their key would be 0).
"""

from __future__ import annotations

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, EndpointState, ScoredEndpoint
from endpoint_picker.scheduling.plugins.max_score_picker import CountingPicker
from endpoint_picker.scheduling.registry import register


@register()
class WeightedRandomPicker(CountingPicker):
    type_name = "weighted-random-picker"

    def pick(self, cycle: CycleState, request: InferenceRequest,
             scored: list[ScoredEndpoint]) -> list[EndpointState]:
        rng = self._rng
        if not any(s.score > 0 for s in scored):
            return [s.state for s in rng.sample(scored, min(self.max_endpoints, len(scored)))]
        keyed = [((rng.random() ** (1.0 / s.score)) if s.score > 0 else -rng.random(), s) for s in scored]
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        return [s.state for _, s in keyed[: self.max_endpoints]]
