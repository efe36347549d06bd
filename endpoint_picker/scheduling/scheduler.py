"""The scheduler that runs an :class:`~endpoint_picker.scheduling.config.SchedulerConfig` for each request.

One cycle: build an :class:`EndpointState` per candidate (metrics snapshot, staleness, this picker's in-flight
counts) -> data producers (bounded by a time budget) -> admission (admitters, then legacy shedding of
sheddable requests while the pool is saturated) -> profiles chosen by the profile handler (filters ->
weighted scorers -> picker) -> pre-request hooks -> a decision record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from endpoint_picker.datalayer import MetricsStore
from endpoint_picker.datastore import Endpoint
from endpoint_picker.decisions import DecisionLog, DecisionRecord, ProfileDecision
from endpoint_picker.errors import ResourceExhausted
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.config import SchedulerConfig
from endpoint_picker.scheduling.framework import (
    CycleState,
    EndpointState,
    Plugin,
    ProfileResult,
    SchedulingProfile,
    ScoredEndpoint,
)
from endpoint_picker.scheduling.interface import SchedulingResult

log = logging.getLogger(__name__)

PluginTimer = Callable[[str, Plugin, float], None]


def _no_timer(extension_point: str, plugin: Plugin, seconds: float) -> None:
    return None


class FrameworkScheduler:
    def __init__(self, config: SchedulerConfig, inflight: InFlightTracker, metrics: MetricsStore,
                 decisions: DecisionLog, *, staleness_threshold: float = 2.0, producer_budget: float = 0.4,
                 plugin_timer: PluginTimer | None = None) -> None:
        self.config = config
        self._inflight = inflight
        self._metrics = metrics
        self._decisions = decisions
        self._staleness = staleness_threshold
        self._budget = producer_budget
        self._time = plugin_timer or _no_timer

    @property
    def decisions(self) -> DecisionLog:
        return self._decisions

    def states(self, candidates: Sequence[Endpoint]) -> list[EndpointState]:
        oldest = self._metrics.clock() - self._staleness
        get = self._metrics.get
        requests = self._inflight.requests
        tokens = self._inflight.tokens
        out = []
        for ep in candidates:
            key = ep.key
            m = get(key)
            out.append(EndpointState(ep, m, m is None or m.scraped_at < oldest, requests(key), tokens(key), key))
        return out

    async def schedule(self, request: InferenceRequest, candidates: Sequence[Endpoint]) -> SchedulingResult:
        t_start = time.perf_counter()
        cfg = self.config
        states = self.states(candidates)
        record = DecisionRecord(request.request_id, request.model, request.priority, [s.key for s in states])
        cycle = CycleState()
        timings = record.timings_us

        if cfg.producers:
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(self._budget):
                    for producer in cfg.producers:
                        p0 = time.perf_counter()
                        await producer.produce(cycle, request, states)
                        self._time("PrepareData", producer, time.perf_counter() - p0)
            except TimeoutError:
                log.warning("data producers exceeded their %.0f ms budget for request %s; scheduling without "
                            "the rest", self._budget * 1000, request.request_id)
            timings["producers"] = (time.perf_counter() - t0) * 1e6

        try:
            self._admit(cycle, request, states, record)
            results = self._run_profiles(cycle, request, states, record)
        except ResourceExhausted as exc:
            record.outcome = f"rejected: {exc.message}"
            timings["total"] = (time.perf_counter() - t_start) * 1e6
            self._decisions.add(record)
            raise

        primary = cfg.profile_handler.primary(results)
        record.primary_profile = primary
        targets = results[primary].targets
        for hook in cfg.pre_request:
            h0 = time.perf_counter()
            hook.pre_request(cycle, request, results, primary)
            self._time("PreRequest", hook, time.perf_counter() - h0)
        record.pick = targets[0].key
        record.fallbacks = [t.key for t in targets[1:]]
        timings["total"] = (time.perf_counter() - t_start) * 1e6
        self._decisions.add(record)
        return SchedulingResult(primary=targets[0].endpoint, fallbacks=tuple(t.endpoint for t in targets[1:]),
                                profile=primary, decision=record)

    def _admit(self, cycle: CycleState, request: InferenceRequest, states: list[EndpointState],
               record: DecisionRecord) -> None:
        for admitter in self.config.admitters:
            reason = admitter.admit(cycle, request, states)
            if reason is not None:
                raise ResourceExhausted(f"request cannot be admitted: {reason}")
        if request.priority < 0:
            saturation = self.config.saturation_detector.saturation(states)
            record.saturation = saturation
            if saturation >= 1.0:
                raise ResourceExhausted("system saturated, sheddable request dropped")

    def _run_profiles(self, cycle: CycleState, request: InferenceRequest, states: list[EndpointState],
                      record: DecisionRecord) -> dict[str, ProfileResult]:
        cfg = self.config
        results: dict[str, ProfileResult] = {}
        for _ in range(len(cfg.profiles) + 1):  # a handler may not loop forever
            chosen = cfg.profile_handler.pick_profiles(cycle, request, cfg.profiles, results)
            if not chosen:
                break
            for profile in chosen:
                results[profile.name] = self._run_profile(profile, cycle, request, states, record)
        primary = cfg.profile_handler.primary(results) if results else None
        if primary is None or not results[primary].targets:
            raise ResourceExhausted("no endpoint passed the scheduling filters")
        return results

    def _run_profile(self, profile: SchedulingProfile, cycle: CycleState, request: InferenceRequest,
                     states: list[EndpointState], record: DecisionRecord) -> ProfileResult:
        decision = ProfileDecision(profile.name, [s.key for s in states])
        record.profiles.append(decision)
        timings = record.timings_us
        endpoints = states
        for f in profile.filters:
            t0 = time.perf_counter()
            kept = f.filter(cycle, request, endpoints)
            elapsed = time.perf_counter() - t0
            self._time("Filter", f, elapsed)
            timings[f"{profile.name}/{f.name}"] = elapsed * 1e6
            if len(kept) != len(endpoints):
                keep = {id(e) for e in kept}
                decision.filtered.append((f.name, [e.key for e in endpoints if id(e) not in keep]))
            endpoints = kept
            if not endpoints:
                return ProfileResult(profile.name, [])

        n = len(endpoints)
        totals = [0.0] * n
        for ws in profile.scorers:
            t0 = time.perf_counter()
            raw = ws.scorer.score(cycle, request, endpoints)
            elapsed = time.perf_counter() - t0
            self._time("Scorer", ws.scorer, elapsed)
            timings[f"{profile.name}/{ws.scorer.name}"] = elapsed * 1e6
            clamped = [0.0 if (v != v or v < 0.0) else (1.0 if v > 1.0 else v) for v in raw]  # NaN -> 0
            if len(clamped) != n:
                raise RuntimeError(f"scorer {ws.scorer.name} returned {len(clamped)} scores for {n} endpoints")
            weight = ws.weight
            for i, v in enumerate(clamped):
                totals[i] += v * weight
            decision.scores.append((ws.scorer.name, weight, clamped))
        decision.scored = [e.key for e in endpoints]
        decision.totals = totals

        assert profile.picker is not None
        t0 = time.perf_counter()
        picked = profile.picker.pick(cycle, request, [ScoredEndpoint(e, t) for e, t in zip(endpoints, totals,
                                                                                          strict=True)])
        elapsed = time.perf_counter() - t0
        self._time("Picker", profile.picker, elapsed)
        timings[f"{profile.name}/{profile.picker.name}"] = elapsed * 1e6
        decision.picked = [e.key for e in picked]
        return ProfileResult(profile.name, picked)

    def forget(self, keys: frozenset[str]) -> None:
        """Endpoints left the pool: plugins with per-endpoint state drop it."""
        for plugin in self.config.plugins.values():
            forget = getattr(plugin, "forget", None)
            if forget is not None:
                forget(keys)

    def response_complete(self, request: InferenceRequest, served: str | None) -> None:
        for hook in self.config.response_complete:
            hook.response_complete(request, served)
