"""``max-score-picker`` (the default): highest total score first; ties broken at random by a prior shuffle."""

from __future__ import annotations

import random
from dataclasses import dataclass

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, EndpointState, Picker, ScoredEndpoint
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register


@dataclass(frozen=True, slots=True)
class PickerParams:
    max_num_of_endpoints: int = 1

    def check(self) -> None:
        if self.max_num_of_endpoints < 1:
            raise ParamError("maxNumOfEndpoints", "must be at least 1")


class CountingPicker(Picker):
    """What every built-in picker shares: ``maxNumOfEndpoints`` and the picker's random source."""

    Params = PickerParams

    def __init__(self, name: str, params: PickerParams, context: PluginContext) -> None:
        super().__init__(name)
        self.max_endpoints = params.max_num_of_endpoints
        self._rng: random.Random = context.rng


@register()
class MaxScorePicker(CountingPicker):
    type_name = "max-score-picker"

    def pick(self, cycle: CycleState, request: InferenceRequest,
             scored: list[ScoredEndpoint]) -> list[EndpointState]:
        rng = self._rng
        if self.max_endpoints == 1:
            best = max(s.score for s in scored)
            ties = [s for s in scored if s.score == best]
            return [ties[0].state if len(ties) == 1 else rng.choice(ties).state]
        random = rng.random
        ranked = sorted(scored, key=lambda s: (-s.score, random()))  # the random key breaks ties
        return [s.state for s in ranked[: self.max_endpoints]]
