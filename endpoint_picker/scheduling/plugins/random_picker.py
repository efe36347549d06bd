"""``random-picker``: uniform choice, ignoring scores."""

from __future__ import annotations

import random

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, EndpointState, Picker, ScoredEndpoint
from endpoint_picker.scheduling.plugins.max_score_picker import PickerParams
from endpoint_picker.scheduling.registry import PluginContext, register


@register()
class RandomPicker(Picker):
    type_name = "random-picker"
    Params = PickerParams

    def __init__(self, name: str, params: PickerParams, context: PluginContext) -> None:
        super().__init__(name)
        self.max_endpoints = params.max_num_of_endpoints
        self._rng: random.Random = context.rng

    def pick(self, cycle: CycleState, request: InferenceRequest,
             scored: list[ScoredEndpoint]) -> list[EndpointState]:
        n = min(self.max_endpoints, len(scored))
        return [s.state for s in self._rng.sample(scored, n)]
