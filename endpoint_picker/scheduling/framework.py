"""The plugin framework: the extension points of a scheduling cycle, with the upstream EPP's concepts.

A cycle runs data producers, then the profile handler picks profiles; each profile runs its filters in order,
then its weighted scorers (each score clamped to [0, 1], multiplied by the weight, summed), then its picker.
Plugins are small classes registered under the upstream type strings (see :mod:`registry`); they read what
they need from :class:`EndpointState` (one per candidate, built once per cycle) and share per-cycle data
through :class:`CycleState`.

Scorers may also update their previous cycle's scores instead of recomputing every endpoint's
(:meth:`Scorer.score_delta`): when a cycle's candidates are the very endpoints of the previous cycle, in the
same order, the scheduler says which positions hold a new :class:`EndpointState` (:class:`CandidateDelta`) --
between two requests only a few endpoints' metrics or in-flight counts move, out of hundreds.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from endpoint_picker.datalayer import EndpointMetrics
from endpoint_picker.datastore import Endpoint
from endpoint_picker.request import InferenceRequest


@dataclass(slots=True)
class EndpointState:
    """One candidate endpoint as plugins see it during a cycle."""

    endpoint: Endpoint
    metrics: EndpointMetrics | None  # None: never scraped
    stale: bool  # metrics missing or older than the staleness threshold: treat as saturated
    inflight_requests: int  # this picker's own count, which scraped metrics lag behind
    inflight_tokens: int
    key: str  # endpoint.key, copied: plugins read it in their inner loops


class CycleState(dict[str, Any]):
    """Data shared by the plugins of one scheduling cycle (e.g. prefix matches from a producer)."""


# CycleState key of the cycle's CandidateDelta, set by the scheduler before the data producers run.
CANDIDATES_KEY = "Candidates"


@dataclass(slots=True)
class CandidateDelta:
    """This cycle's candidates against the previous cycle's.

    Every cycle has a new ``generation``. When the candidates are the previous cycle's endpoints in the same
    order, ``previous`` is that cycle's generation and ``changed`` lists the positions whose
    :class:`EndpointState` object was replaced (every other position holds the very same object); otherwise
    ``previous`` is None. ``index`` maps endpoint key to position when the scheduler has it (else None).
    """

    generation: int
    previous: int | None = None
    changed: list[int] = field(default_factory=list)
    index: dict[str, int] | None = None


class Category(enum.StrEnum):
    """What a scorer optimises for (upstream's scorer categories)."""

    AFFINITY = "Affinity"
    DISTRIBUTION = "Distribution"
    BALANCE = "Balance"


class Plugin:
    """Base of every plugin: ``type_name`` is the upstream type string, ``name`` the configured instance name."""

    type_name: ClassVar[str] = ""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Filter(Plugin):
    def filter(self, cycle: CycleState, request: InferenceRequest,
               endpoints: list[EndpointState]) -> list[EndpointState]:
        raise NotImplementedError


class Scorer(Plugin):
    category: ClassVar[Category] = Category.DISTRIBUTION

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        """One score per endpoint, in the order given; the framework clamps to [0, 1]."""
        raise NotImplementedError

    def score_delta(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState],
                    delta: CandidateDelta | None) -> tuple[list[float], list[int] | None]:
        """What the scheduler calls: the scores, and the positions whose score may differ from this scorer's
        scores of cycle ``delta.previous`` (None: any may differ).

        ``delta`` is None when ``endpoints`` is not the cycle's full candidate list (a filter removed some).
        The default scores every endpoint. A scorer that keeps its previous scores may update them in place
        and return that list; it must return exactly what :meth:`score` would, and the caller does not keep
        the list past the call.
        """
        return self.score(cycle, request, endpoints), None


@dataclass(slots=True)
class ScoredEndpoint:
    state: EndpointState
    score: float


class Picker(Plugin):
    def pick(self, cycle: CycleState, request: InferenceRequest,
             scored: list[ScoredEndpoint]) -> list[EndpointState]:
        """The chosen endpoints, best first (the rest are the proxy's fallbacks)."""
        raise NotImplementedError

    def pick_scored(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState],
                    totals: list[float]) -> list[EndpointState]:
        """What the scheduler calls: ``pick`` over ``endpoints`` with their total scores (parallel lists).

        A picker that can choose from the two lists directly overrides this to skip building a
        :class:`ScoredEndpoint` per endpoint per cycle; it must choose exactly as ``pick`` would.
        """
        return self.pick(cycle, request, [ScoredEndpoint(e, t) for e, t in zip(endpoints, totals, strict=True)])


class DataProducer(Plugin):
    """Prepares per-request data before scheduling (may await, within the cycle's budget)."""

    async def produce(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> None:
        raise NotImplementedError


class Admitter(Plugin):
    def admit(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> str | None:
        """None to admit, or the reason to deny."""
        raise NotImplementedError


@dataclass(slots=True)
class ProfileResult:
    """What one profile chose (empty when its filters removed every endpoint)."""

    profile: str
    targets: list[EndpointState]


class PreRequest(Plugin):
    """Runs after scheduling, before the request is forwarded (e.g. to remember where a prefix went)."""

    def pre_request(self, cycle: CycleState, request: InferenceRequest, results: dict[str, ProfileResult],
                    primary: str) -> None:
        raise NotImplementedError


class ResponseComplete(Plugin):
    """Runs when the response finished (or the stream ended): release per-request state."""

    def response_complete(self, request: InferenceRequest, served: str | None) -> None:
        raise NotImplementedError


class SaturationDetector(Plugin):
    """Pool saturation in [0, ∞): at or above 1.0 the pool is saturated (legacy admission sheds priority < 0)."""

    def saturation(self, endpoints: Sequence[EndpointState]) -> float:
        raise NotImplementedError


@dataclass(slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


@dataclass(slots=True)
class SchedulingProfile:
    name: str
    filters: list[Filter] = field(default_factory=list)
    scorers: list[WeightedScorer] = field(default_factory=list)
    picker: Picker | None = None


class ProfileHandler(Plugin):
    def pick_profiles(self, cycle: CycleState, request: InferenceRequest, profiles: dict[str, SchedulingProfile],
                      results: dict[str, ProfileResult]) -> list[SchedulingProfile]:
        """The profiles to run next given what ran so far; an empty list ends the cycle."""
        raise NotImplementedError

    def primary(self, results: dict[str, ProfileResult]) -> str:
        """Which profile's result goes to the proxy."""
        raise NotImplementedError
