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

    def pick_scored(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState],
                    totals: list[float]) -> list[EndpointState]:
        if self.max_endpoints != 1 or len(endpoints) != len(totals):
            return super().pick_scored(cycle, request, endpoints, totals)
        best = max(totals)
        if best != best:  # NaN: index() would match it by identity, where pick() compares
            return super().pick_scored(cycle, request, endpoints, totals)
        first = totals.index(best)
        try:
            totals.index(best, first + 1)
        except ValueError:  # the only one
            return [endpoints[first]]
        # The same tie list, in the same order, as pick() builds: the same draw from the same generator.
        return [self._rng.choice([e for e, t in zip(endpoints, totals, strict=True) if t == best])]
