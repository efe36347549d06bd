"""Scores carried over from one scheduling cycle to the next (see ``Scorer.score_delta``).

Why it exists: a scorer's score of an endpoint usually depends on that endpoint's state alone, or on it and
an aggregate over all candidates (a minimum, a maximum). When the candidates are the previous cycle's and only
a few states were replaced, such a scorer can update those positions -- and recompute everything only when
the aggregate moved -- with exactly the arithmetic of a full pass. These helpers hold the previous scores and
check that a delta really follows them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CandidateDelta, CycleState, EndpointState, Scorer

__all__ = ["MinMaxInverseScorer", "PerEndpointScorer", "ScoreMemo", "Tally"]


class ScoreMemo:
    """A scorer's scores of cycle ``generation`` (None: of no cycle a delta can follow)."""

    __slots__ = ("generation", "scores")

    def __init__(self) -> None:
        self.generation: int | None = None
        self.scores: list[float] = []

    def follows(self, delta: CandidateDelta | None, n: int) -> bool:
        """Whether ``delta`` is relative to the cycle these scores are of, over ``n`` endpoints."""
        return (delta is not None and delta.previous is not None and delta.previous == self.generation
                and len(self.scores) == n)

    def keep(self, delta: CandidateDelta | None, scores: list[float]) -> list[float]:
        """Remember a full pass's scores as those of this cycle (of no cycle without a delta)."""
        self.generation = None if delta is None else delta.generation
        self.scores = scores
        return scores


class Tally(Counter[Hashable]):
    """How many endpoints have each value: the minimum and maximum in O(distinct values), not O(endpoints)."""

    def replace(self, old: Hashable, new: Hashable) -> None:
        if old == new:
            return
        n = self[old] - 1
        if n > 0:
            self[old] = n
        else:
            del self[old]
        self[new] += 1


class PerEndpointScorer(Scorer):
    """A scorer whose score of an endpoint is ``score_one(state)``; across cycles only replaced states are
    rescored. Subclasses may override ``score`` with an equivalent comprehension (faster than a call per
    endpoint); the tests hold the two to the same results."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._memo = ScoreMemo()

    def score_one(self, e: EndpointState) -> float:
        raise NotImplementedError

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        return list(map(self.score_one, endpoints))

    def score_delta(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState],
                    delta: CandidateDelta | None) -> tuple[list[float], list[int] | None]:
        memo = self._memo
        if delta is not None and memo.follows(delta, len(endpoints)):
            scores = memo.scores
            one = self.score_one
            for i in delta.changed:
                scores[i] = one(endpoints[i])
            memo.generation = delta.generation
            return scores, delta.changed
        return memo.keep(delta, self.score(cycle, request, endpoints)), None


def min_max_inverse(values: list[float | None]) -> list[float]:
    """Lower is better; None (unknown) scores 0; all known values equal score 1."""
    if None not in values:  # the usual case, with fewer passes
        lo, hi = min(values, default=0), max(values, default=0)
        if hi == lo:
            return [1.0] * len(values)
        span = hi - lo
        return [(hi - v) / span for v in values]  # type: ignore[operator]  # no None here
    known = [v for v in values if v is not None]
    if not known:
        return [0.0] * len(values)
    lo, hi = min(known), max(known)
    if hi == lo:
        return [0.0 if v is None else 1.0 for v in values]
    span = hi - lo
    return [0.0 if v is None else (hi - v) / span for v in values]


def _known_bounds(tally: Tally) -> tuple[Hashable, Hashable] | None:
    """(min, max) of the values other than None (None when there are none): what min_max_inverse scales by."""
    known = [v for v in tally if v is not None]
    return (min(known), max(known)) if known else None  # type: ignore[type-var]


_UNSET = object()


class MinMaxInverseScorer(Scorer):
    """``min_max_inverse`` of a per-endpoint value (``value_of``; None = unknown). Across cycles only replaced
    states are re-read, and only their scores are redone unless the minimum or maximum of the known values
    moved (a tally of the values gives those in O(distinct values))."""

    value_of: Callable[[EndpointState], float | None]

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._memo = ScoreMemo()
        self._values: list[float | None] = []
        self._tally = Tally()  # of _values, None included
        self._bounds: object = _UNSET  # _known_bounds of the scores in the memo

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        return min_max_inverse(list(map(self.value_of, endpoints)))

    def score_delta(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState],
                    delta: CandidateDelta | None) -> tuple[list[float], list[int] | None]:
        memo = self._memo
        values = self._values
        tally = self._tally
        if delta is not None and self._bounds is not _UNSET and memo.follows(delta, len(endpoints)):
            value_of = self.value_of
            for i in delta.changed:
                new = value_of(endpoints[i])
                tally.replace(values[i], new)
                values[i] = new
            bounds = _known_bounds(tally)
            if bounds == self._bounds:  # the same scale: only the changed values score differently
                scores = memo.scores
                if bounds is None:
                    for i in delta.changed:
                        scores[i] = 0.0
                else:
                    lo, hi = bounds
                    span = hi - lo  # type: ignore[operator]
                    for i in delta.changed:
                        v = values[i]
                        scores[i] = 0.0 if v is None else (1.0 if hi == lo else (hi - v) / span)  # type: ignore[operator]
                memo.generation = delta.generation
                return scores, delta.changed
        else:
            values = self._values = list(map(self.value_of, endpoints))
            tally = self._tally = Tally(values)
        self._bounds = _known_bounds(tally)
        return memo.keep(delta, min_max_inverse(values)), None
