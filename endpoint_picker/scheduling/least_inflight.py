"""The simple policy: fewest requests in flight from this picker, random tie-break.

It stands in until the plugin framework lands, behind the same :class:`Scheduler` interface.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from endpoint_picker.datastore import Endpoint
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.interface import SchedulingResult


class LeastInFlightScheduler:
    def __init__(self, inflight: InFlightTracker, max_fallbacks: int = 2, rng: random.Random | None = None) -> None:
        self._inflight = inflight
        self._max_fallbacks = max_fallbacks
        self._rng = rng or random.Random()

    async def schedule(self, request: InferenceRequest, candidates: Sequence[Endpoint]) -> SchedulingResult:
        # Shuffle first so the stable sort breaks ties at random.
        ordered = self._rng.sample(candidates, len(candidates))
        ordered.sort(key=lambda ep: self._inflight.requests(ep.key))
        return SchedulingResult(primary=ordered[0], fallbacks=tuple(ordered[1 : 1 + self._max_fallbacks]))
