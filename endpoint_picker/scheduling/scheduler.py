"""The scheduler that runs an :class:`~endpoint_picker.scheduling.config.SchedulerConfig` for each request.

One cycle: build an :class:`EndpointState` per candidate (metrics snapshot, staleness, this picker's in-flight
counts) -> data producers (bounded by a time budget) -> admission (admitters, then legacy shedding of
sheddable requests while the pool is saturated) -> profiles chosen by the profile handler (filters ->
weighted scorers -> picker) -> pre-request hooks -> a decision record.

The cycle is linear in the number of candidates, so at hundreds of endpoints its constant matters. Between
two requests only the few endpoints whose metrics were scraped or whose in-flight counts moved have changed
(the metrics store's and the in-flight tracker's change journals say which), so the scheduler carries work
over from the previous cycle instead of redoing it:

- endpoint states are kept and rebuilt only for changed endpoints (or all of them when some metrics may
  have gone stale, or the scheduler fell behind a journal);
- when the candidates are the previous cycle's endpoints in the same order, the new state list is the old one
  with the changed positions replaced, and a :class:`CandidateDelta` names those positions: scorers that
  implement ``score_delta`` update their previous scores there, and the scheduler re-clamps and re-adds only
  the positions whose scores moved. Totals are computed with the same additions in the same order either
  way, so the results are bit-for-bit those of a full cycle; decision records get copies of the lists.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import add, attrgetter, is_, mul

from endpoint_picker.datalayer import MetricsStore
from endpoint_picker.datastore import Endpoint
from endpoint_picker.decisions import DecisionLog, DecisionRecord, ProfileDecision
from endpoint_picker.errors import ResourceExhausted
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.config import SchedulerConfig
from endpoint_picker.scheduling.framework import (
    CANDIDATES_KEY,
    CandidateDelta,
    CycleState,
    EndpointState,
    Plugin,
    ProfileResult,
    SchedulingProfile,
)
from endpoint_picker.scheduling.interface import SchedulingResult

log = logging.getLogger(__name__)

PluginTimer = Callable[[str, Plugin, float], None]

_KEY = attrgetter("key")
_ENDPOINT = attrgetter("endpoint")


def _no_timer(extension_point: str, plugin: Plugin, seconds: float) -> None:
    return None


@dataclass(slots=True)
class _Candidates:
    """The previous cycle's candidates and their states (lists handed to plugins are never mutated)."""

    candidates: Sequence[Endpoint]
    endpoints: list[Endpoint]  # a copy, to tell whether a mutable candidates sequence still holds the same
    keys: list[str]
    states: list[EndpointState]
    index: dict[str, int] | None  # key -> position, built on first need
    generation: int


@dataclass(slots=True)
class _ProfileMemo:
    """One profile's clamped scores (one list per scorer) and totals as of cycle ``generation``."""

    generation: int
    clamped: list[list[float]]
    totals: list[float]


class FrameworkScheduler:
    def __init__(self, config: SchedulerConfig, inflight: InFlightTracker, metrics: MetricsStore,
                 decisions: DecisionLog, *, staleness_threshold: float = 2.0, producer_budget: float = 0.4,
                 plugin_timer: PluginTimer | None = None, incremental: bool = True) -> None:
        """``incremental=False`` rebuilds every state and recomputes every score in every cycle: the same results
        (the tests hold the two to that), for comparison."""
        self.config = config
        self._inflight = inflight
        self._metrics = metrics
        self._decisions = decisions
        self._staleness = staleness_threshold
        self._budget = producer_budget
        self._time = plugin_timer or _no_timer
        # Endpoint states of earlier cycles by key, valid while the journals report no write for the key
        # and the staleness cutoff stays at or below _min_fresh (the lowest scrape time of a fresh state).
        self._cache: dict[str, EndpointState] = {}
        self._metrics_cursor = metrics.changes.cursor
        self._inflight_cursor = inflight.changes.cursor
        self._min_fresh = math.inf
        self._oldest = -math.inf
        self._generation = 0
        self._incremental = incremental
        self._previous: _Candidates | None = None
        self._memos: dict[str, _ProfileMemo] = {}

    @property
    def decisions(self) -> DecisionLog:
        return self._decisions

    def states(self, candidates: Sequence[Endpoint]) -> list[EndpointState]:
        """One state per candidate, in order: metrics snapshot, staleness now, this picker's in-flight counts."""
        return self._states(candidates)[0]

    def _state(self, ep: Endpoint, key: str, oldest: float) -> EndpointState:
        m = self._metrics.get(key)
        stale = m is None or m.scraped_at < oldest
        if not stale and m is not None and m.scraped_at < self._min_fresh:
            self._min_fresh = m.scraped_at
        inflight = self._inflight
        state = EndpointState(ep, m, stale, inflight.requests(key), inflight.tokens(key), key)
        self._cache[key] = state
        return state

    def _states(self, candidates: Sequence[Endpoint]) -> tuple[list[EndpointState], list[str], CandidateDelta]:
        """The candidates' states and keys, and how they differ from the previous cycle's. States are immutable
        in practice (plugins only read them), so one object serves every cycle until its endpoint's metrics or
        counts change or its metrics go stale."""
        oldest = self._metrics.clock() - self._staleness
        cache = self._cache
        metrics_log = self._metrics.changes
        inflight_log = self._inflight.changes
        changed_metrics = metrics_log.since(self._metrics_cursor)
        changed_inflight = inflight_log.since(self._inflight_cursor)
        self._metrics_cursor = metrics_log.cursor
        self._inflight_cursor = inflight_log.cursor
        self._generation += 1
        generation = self._generation
        changed: set[str] | None = None
        if (not self._incremental or changed_metrics is None or changed_inflight is None
                or oldest > self._min_fresh or oldest < self._oldest or len(cache) > 2 * len(candidates) + 64):
            # Fallen behind a journal, a fresh state may have gone stale, the clock went back, or endpoints
            # that left are piling up: start over.
            cache.clear()
            self._min_fresh = math.inf
        else:
            changed = {*changed_metrics, *changed_inflight}
        self._oldest = oldest

        previous = self._previous
        if changed is not None and previous is not None and self._same_candidates(candidates, previous):
            index = previous.index
            if index is None:
                index = previous.index = {key: i for i, key in enumerate(previous.keys)}
            states = previous.states.copy()
            positions = []
            for key in changed:
                i = index.get(key)
                if i is None:
                    cache.pop(key, None)  # not a candidate: its view is out of date
                else:
                    states[i] = self._state(states[i].endpoint, key, oldest)
                    positions.append(i)
            self._previous = _Candidates(candidates, previous.endpoints, previous.keys, states, index, generation)
            return states, previous.keys, CandidateDelta(generation, previous.generation, positions, index)

        if changed:
            for key in changed:
                old = cache.get(key)
                if old is not None:
                    self._state(old.endpoint, key, oldest)
        keys = list(map(_KEY, candidates))
        out = list(map(cache.get, keys))
        # all(out): no endpoint without a state; then every state must be of this very Endpoint object (a
        # changed pod with the same address is a new object).
        if not all(out) or not all(map(is_, map(_ENDPOINT, out), candidates)):
            for i, ep in enumerate(candidates):
                st = out[i]
                if st is None or st.endpoint is not ep:
                    out[i] = self._state(ep, keys[i], oldest)
        states = out  # type: ignore[assignment]  # every None was replaced
        self._previous = _Candidates(candidates, list(candidates), keys, states, None, generation)
        return states, keys, CandidateDelta(generation)

    @staticmethod
    def _same_candidates(candidates: Sequence[Endpoint], previous: _Candidates) -> bool:
        """The very Endpoint objects of the previous cycle, in the same order (a tuple cannot have changed)."""
        if candidates is previous.candidates and isinstance(candidates, tuple):
            return True
        return len(candidates) == len(previous.endpoints) and all(map(is_, candidates, previous.endpoints))

    async def schedule(self, request: InferenceRequest, candidates: Sequence[Endpoint]) -> SchedulingResult:
        t_start = time.perf_counter()
        cfg = self.config
        states, keys, delta = self._states(candidates)
        record = DecisionRecord(request.request_id, request.model, request.priority, keys)
        cycle = CycleState()
        cycle[CANDIDATES_KEY] = delta
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
            results = self._run_profiles(cycle, request, states, keys, delta, record)
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
                      keys: list[str], delta: CandidateDelta, record: DecisionRecord) -> dict[str, ProfileResult]:
        cfg = self.config
        results: dict[str, ProfileResult] = {}
        for _ in range(len(cfg.profiles) + 1):  # a handler may not loop forever
            chosen = cfg.profile_handler.pick_profiles(cycle, request, cfg.profiles, results)
            if not chosen:
                break
            for profile in chosen:
                results[profile.name] = self._run_profile(profile, cycle, request, states, keys, delta, record)
        primary = cfg.profile_handler.primary(results) if results else None
        if primary is None or not results[primary].targets:
            raise ResourceExhausted("no endpoint passed the scheduling filters")
        return results

    def _run_profile(self, profile: SchedulingProfile, cycle: CycleState, request: InferenceRequest,
                     states: list[EndpointState], keys: list[str], delta: CandidateDelta,
                     record: DecisionRecord) -> ProfileResult:
        # Records only read their key lists, so the cycle's one list serves every place that names the
        # candidates.
        decision = ProfileDecision(profile.name, keys)
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
        # Scorers see the delta only over the full candidate list; the clamped scores and totals of the
        # previous cycle are reused only if they are that very cycle's.
        full = endpoints is states
        scorer_delta = delta if full else None
        memo = self._memos.get(profile.name) if full else None
        reuse = (memo is not None and delta.previous is not None and memo.generation == delta.previous
                 and len(memo.clamped) == len(profile.scorers) and len(memo.totals) == n)
        moved: set[int] | None = set() if reuse else None  # positions whose clamped score may have changed
        clamped_lists: list[list[float]] = []
        weights: list[float] = []
        for k, ws in enumerate(profile.scorers):
            t0 = time.perf_counter()
            raw, changed = ws.scorer.score_delta(cycle, request, endpoints, scorer_delta)
            elapsed = time.perf_counter() - t0
            self._time("Scorer", ws.scorer, elapsed)
            timings[f"{profile.name}/{ws.scorer.name}"] = elapsed * 1e6
            if len(raw) != n:
                raise RuntimeError(f"scorer {ws.scorer.name} returned {len(raw)} scores for {n} endpoints")
            if moved is not None and changed is not None:
                assert memo is not None
                clamped = memo.clamped[k]
                for i in changed:
                    v = raw[i]
                    clamped[i] = 0.0 if (v != v or v < 0.0) else (1.0 if v > 1.0 else v)  # NaN -> 0
                moved.update(changed)
            else:
                clamped = [0.0 if (v != v or v < 0.0) else (1.0 if v > 1.0 else v) for v in raw]  # NaN -> 0
                moved = None
            weight = ws.weight
            clamped_lists.append(clamped)
            weights.append(weight)
            decision.scores.append((ws.scorer.name, weight, list(clamped)))  # a copy: the memo list moves on
        if moved is None:
            # totals[i] = 0.0 + c1[i] * w1 + c2[i] * w2 + ..., added in scorer order, as lazy maps: one list at
            # the end instead of one per scorer, and no product where the weight is 1 (x * 1.0 == x exactly).
            summed: Iterable[float] = repeat(0.0, n)
            for clamped, weight in zip(clamped_lists, weights, strict=True):
                summed = map(add, summed, clamped if weight == 1.0 else map(mul, clamped, repeat(weight)))
            totals = list(summed)
        else:
            assert memo is not None
            totals = memo.totals
            for i in moved:
                t = 0.0
                for clamped, weight in zip(clamped_lists, weights, strict=True):
                    t += clamped[i] * weight
                totals[i] = t
        if full:
            self._memos[profile.name] = _ProfileMemo(delta.generation, clamped_lists, totals)
        decision.scored = keys if full else list(map(_KEY, endpoints))
        decision.totals = list(totals) if full else totals

        assert profile.picker is not None
        t0 = time.perf_counter()
        picked = profile.picker.pick_scored(cycle, request, endpoints, totals)
        elapsed = time.perf_counter() - t0
        self._time("Picker", profile.picker, elapsed)
        timings[f"{profile.name}/{profile.picker.name}"] = elapsed * 1e6
        decision.picked = [e.key for e in picked]
        return ProfileResult(profile.name, picked)

    def forget(self, keys: frozenset[str]) -> None:
        """Endpoints left the pool: plugins with per-endpoint state drop it."""
        for key in keys:
            self._cache.pop(key, None)
        self._previous = None
        for plugin in self.config.plugins.values():
            forget = getattr(plugin, "forget", None)
            if forget is not None:
                forget(keys)

    def response_complete(self, request: InferenceRequest, served: str | None) -> None:
        for hook in self.config.response_complete:
            hook.response_complete(request, served)
