"""The simple policy: fewest requests in flight from this picker, random tie-break.

It stands in until the plugin framework lands, behind the same :class:`Scheduler` interface. Like upstream's
pickers (``maxNumOfEndpoints``) it returns one endpoint by default: gateways that route with ORIGINAL_DST
cannot parse a list. Proxies with the override_host policy can use more: the rest are ordered fallbacks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from endpoint_picker.datastore import Endpoint
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.interface import SchedulingResult


class LeastInFlightScheduler:
    def __init__(self, inflight: InFlightTracker, max_endpoints: int = 1, rng: random.Random | None = None) -> None:
        if max_endpoints < 1:
            raise ValueError("max_endpoints must be at least 1")
        self._inflight = inflight
        self._max_fallbacks = max_endpoints - 1
        self._rng = rng or random.Random()

    async def schedule(self, request: InferenceRequest, candidates: Sequence[Endpoint]) -> SchedulingResult:
        # Shuffle first so the stable sort breaks ties at random.
        ordered = self._rng.sample(candidates, len(candidates))
        ordered.sort(key=lambda ep: self._inflight.requests(ep.key))
        return SchedulingResult(primary=ordered[0], fallbacks=tuple(ordered[1 : 1 + self._max_fallbacks]))
