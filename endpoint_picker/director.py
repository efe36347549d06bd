"""The director: turns a parsed request into a routing decision, and owns what happens around it.

Order per request: objective (priority) and model rewrite -> candidates (pool, narrowed by the proxy's subset
hint) -> admission -> scheduling -> in-flight accounting -> a :class:`RoutedRequest` that follows the response.
Requests without a body skip the rewrite and scheduling and get a random endpoint, as in the reference EPP.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence

import orjson

from endpoint_picker.datastore import Datastore, Endpoint
from endpoint_picker.datastore.model import host_of
from endpoint_picker.errors import PickerError, ServiceUnavailable
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.lifecycle import RoutedRequest
from endpoint_picker.metrics import PickerMetrics
from endpoint_picker.model_rewrite import ModelRewrites
from endpoint_picker.objectives import Objectives
from endpoint_picker.request import MODEL_REWRITE_HEADER, InferenceRequest, rewrite_model
from endpoint_picker.scheduling import Scheduler, SchedulingResult

log = logging.getLogger(__name__)


class Director:
    def __init__(self, datastore: Datastore, scheduler: Scheduler, inflight: InFlightTracker,
                 metrics: PickerMetrics, *, honour_subset_hint: bool = True, emit_endpoint_scores: bool = False,
                 objectives: Objectives | None = None, rewrites: ModelRewrites | None = None,
                 rng: random.Random | None = None) -> None:
        self._datastore = datastore
        self._objectives = objectives
        self._rewrites = rewrites
        self._scheduler = scheduler
        self._inflight = inflight
        self._metrics = metrics
        self._honour_subset_hint = honour_subset_hint
        self._emit_scores = emit_endpoint_scores
        self._rng = rng or random.Random()
        datastore.on_removed(inflight.forget)
        forget = getattr(scheduler, "forget", None)
        if forget is not None:
            datastore.on_removed(forget)
        self._on_done = getattr(scheduler, "response_complete", None)

    @property
    def metrics(self) -> PickerMetrics:
        return self._metrics

    async def route(self, request: InferenceRequest) -> RoutedRequest:
        """Pick endpoints for ``request``; raises :class:`PickerError` with the status the client should get."""
        m = self._metrics
        self._apply_objective_and_rewrite(request)
        mm = m.for_model(request.model, request.target_model or None)
        if request.has_body:
            mm.requests.inc()
            mm.request_sizes.observe(request.body_size)
        try:
            candidates = self._candidates(request)
            if request.has_body:
                t0 = time.perf_counter()
                result = await self._scheduler.schedule(request, candidates)
                m.scheduler_e2e.observe(time.perf_counter() - t0)
            else:
                result = SchedulingResult(primary=self._rng.choice(candidates), profile="header-only")
        except PickerError as exc:
            mm.error(exc.code)
            raise
        lease = self._inflight.acquire(result.primary.key, request.estimated_input_tokens)
        mm.running.inc()
        routed = RoutedRequest(request, result, lease, self._inflight, mm, time.monotonic(), self._on_done)
        if self._emit_scores and result.decision is not None:
            routed.scores = orjson.dumps(result.decision.scores_summary()).decode()
        return routed

    def _apply_objective_and_rewrite(self, request: InferenceRequest) -> None:
        """Priority from the named InferenceObjective (or the model's legacy criticality); then the model rewrite:
        the header ``x-gateway-model-name-rewrite`` forces a target, else the pool's rewrite rules draw one."""
        if self._objectives is not None:
            request.priority = self._objectives.priority(request.objective, request.model)
        if not request.has_body:
            return
        forced = request.headers.get(MODEL_REWRITE_HEADER)
        if forced:
            name, target = "header", forced
        elif self._rewrites:
            decision = self._rewrites.choose(request.model, self._rng)
            if decision is None:
                return
            name, target = decision.rewrite_name, decision.target
        else:
            return
        self._metrics.model_rewrite_decisions.labels(name, request.model, target).inc()
        rewrite_model(request, target)

    def reject(self, request: InferenceRequest, error: PickerError) -> None:
        """Count a request that failed before routing (e.g. a malformed body)."""
        self._metrics.for_model(request.model).error(error.code)

    def _candidates(self, request: InferenceRequest) -> Sequence[Endpoint]:
        endpoints = self._datastore.endpoints()
        if not endpoints:
            raise ServiceUnavailable("no endpoints available in the pool")
        hint = request.subset_hint
        if hint is not None and self._honour_subset_hint:
            # As the reference EPP: match on IP only, so every data-parallel port of a listed pod is eligible.
            hosts = {host_of(item) for item in hint}
            endpoints = tuple(ep for ep in endpoints if ep.address in hosts)
            if not endpoints:
                raise ServiceUnavailable("no endpoint of the pool is in the proxy's subset hint")
        return endpoints
