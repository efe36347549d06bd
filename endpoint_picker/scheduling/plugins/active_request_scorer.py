"""``active-request-scorer`` (llm-d): prefer endpoints with fewer requests in flight from this picker.

count <= idleThreshold -> 1.0; else (max - count) / max * maxBusyScore, max over the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CandidateDelta, Category, CycleState, EndpointState, Scorer
from endpoint_picker.scheduling.plugins._delta import ScoreMemo, Tally
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register

_INFLIGHT = attrgetter("inflight_requests")


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
        # The previous cycle's counts and their maximum, for score_delta.
        self._memo = ScoreMemo()
        self._counts: list[int] = []
        self._tally = Tally()  # of _counts
        self._top = 0

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        return self._scores(list(map(_INFLIGHT, endpoints)))

    def _scores(self, counts: list[int]) -> list[float]:
        top = max(counts, default=0)
        idle = self._idle
        if top <= idle:  # every count is idle
            return [1.0] * len(counts)
        busy = self._busy
        return [1.0 if c <= idle else (top - c) / top * busy for c in counts]

    def score_delta(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState],
                    delta: CandidateDelta | None) -> tuple[list[float], list[int] | None]:
        memo = self._memo
        counts = self._counts
        if delta is not None and memo.follows(delta, len(endpoints)):
            tally = self._tally
            for i in delta.changed:
                new = endpoints[i].inflight_requests
                tally.replace(counts[i], new)
                counts[i] = new
            top = max(tally, default=0)
            if top == self._top:  # same maximum: only the changed counts score differently
                scores = memo.scores
                idle = self._idle
                busy = self._busy
                for i in delta.changed:
                    c = counts[i]
                    scores[i] = 1.0 if c <= idle else (top - c) / top * busy
                memo.generation = delta.generation
                return scores, delta.changed
        else:
            counts = self._counts = list(map(_INFLIGHT, endpoints))
            self._tally = Tally(counts)
        self._top = max(counts, default=0)
        return memo.keep(delta, self._scores(counts)), None
