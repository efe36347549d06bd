"""The fleet simulator: N engine cores, one router, one workload, a discrete-event loop in virtual time.

Why it exists: to measure a routing policy at hundreds of endpoints and thousands of requests per second
without sockets, processes or wall-clock waits -- and to get the same answer every time. The loop never
sleeps and never reads a clock for simulation purposes; it jumps from event to event:

- an **arrival** (the workload's next request): the policy chooses an endpoint from the current
  :class:`EndpointState` list, the request is added to that engine (it reaches the scheduler after the
  frontend delay), the router's in-flight accounting is updated;
- an **engine step**: the endpoint whose next event time is earliest runs one ``Engine.step()``; what the
  step did (finished requests, gauges, KV events) becomes visible when the step *ends* -- only then do its
  finished requests become :class:`RequestRecord` and leave the in-flight count, and its gauges reach the
  endpoint's state (live metrics) -- so a routing decision never sees the future;
- a **scrape** (only with ``scrape_interval > 0``): every endpoint's gauges as of its latest finished step
  are copied into its state at once, which is what a router polling ``/metrics`` sees between scrapes.

Events are ordered by (time, kind: arrival < scrape < step, endpoint index), so ties are deterministic.
Engines live in a heap keyed by their next event (step end, or when an idle engine's next request is
ready) with lazy invalidation (a version per engine). A request arriving while its engine is mid-step
waits for the next step, as in vLLM, where a request arriving during a forward joins the next schedule.

The run ends when the workload is exhausted and every engine is idle; every routed request has then
finished (a prompt longer than an engine's ``max_model_len`` is rejected when it is routed).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from simulator.engine.config import EngineConfig
from simulator.engine.engine import Engine, StepResult
from simulator.engine.hashing import PromptHashCache
from simulator.fleet.policy import EndpointState, RoutingPolicy
from simulator.fleet.records import EndpointSummary, RequestRecord
from simulator.fleet.workload import FleetRequest

__all__ = ["EndpointSpec", "FleetRun", "FleetSimulation", "uniform_fleet"]

_SCRAPE = 0
_STEP = 1


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One simulated model server of the fleet."""

    name: str
    engine: EngineConfig = field(default_factory=EngineConfig)
    labels: Mapping[str, str] = field(default_factory=dict)


def uniform_fleet(
    count: int,
    engine: EngineConfig | None = None,
    *,
    name: str = "sim",
    labels: Callable[[int], Mapping[str, str]] | None = None,
) -> list[EndpointSpec]:
    """``count`` identical endpoints ``<name>-0..``; engine seeds offset by index (as ``fleet_configs`` does)."""
    if count < 1:
        raise ValueError("a fleet needs at least one endpoint")
    base = engine or EngineConfig()
    return [
        EndpointSpec(f"{name}-{i}", replace(base, seed=base.seed + i), dict(labels(i)) if labels else {})
        for i in range(count)
    ]


@dataclass(slots=True)
class FleetRun:
    """Everything a run produced. ``wall_seconds`` and ``cpu_seconds`` describe the simulator, not the fleet."""

    policy: str
    records: list[RequestRecord]
    endpoints: list[EndpointSummary]
    end_time: float
    steps: int
    wall_seconds: float
    # CPU time of this process during the run (what a busy machine does not inflate).
    cpu_seconds: float = 0.0
    # Wall seconds inside the policy (``choose`` and its hooks) and inside the engines (adding requests,
    # steps); the rest of ``wall_seconds`` is the event loop and the records.
    policy_seconds: float = 0.0
    engine_seconds: float = 0.0

    @property
    def requests_per_wall_second(self) -> float:
        return len(self.records) / self.wall_seconds if self.wall_seconds > 0 else math.inf

    @property
    def requests_per_cpu_second(self) -> float:
        return len(self.records) / self.cpu_seconds if self.cpu_seconds > 0 else math.inf


class FleetSimulation:
    """``FleetSimulation(uniform_fleet(64), LeastLoaded()).run(workload.requests())``. One run per instance."""

    def __init__(
        self,
        endpoints: Sequence[EndpointSpec],
        policy: RoutingPolicy,
        *,
        scrape_interval: float = 0.0,
    ) -> None:
        if not endpoints:
            raise ValueError("a fleet needs at least one endpoint")
        if scrape_interval < 0:
            raise ValueError("scrape_interval must be >= 0")
        self.policy = policy
        self.scrape_interval = scrape_interval
        self._on_finished = getattr(policy, "on_finished", None)
        self._on_kv_events = getattr(policy, "on_kv_events", None)
        self._on_gauges = getattr(policy, "on_gauges", None)
        # Endpoints whose state gauges were written since the last decision (only for on_gauges).
        self._changed: list[int] = []
        self.specs = list(endpoints)
        self.engines: list[Engine] = []
        # Workloads reuse one token list per prompt and never change it, so a prompt's block digests are
        # computed once for the whole fleet rather than by every engine it is routed to.
        prompt_hashes = PromptHashCache()
        self.states: list[EndpointState] = []
        for i, spec in enumerate(self.specs):
            cfg = spec.engine
            if self._on_kv_events is not None and not cfg.enable_kv_cache_events:
                cfg = replace(cfg, enable_kv_cache_events=True)
            engine = Engine(cfg, prompt_hashes=prompt_hashes)
            self.engines.append(engine)
            self.states.append(EndpointState(i, spec.name, cfg.block_size, cfg.gpu_blocks, dict(spec.labels)))
        # Gauges as of each engine's latest finished step (what the next scrape reads).
        self._latest: list[tuple[int, int, float, int, int, float]] = [(0, 0, 0.0, 0, 0, 0.0)] * len(self.specs)
        self._busy = [0.0] * len(self.specs)
        self._finished = [0] * len(self.specs)
        self._ran = False

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, requests: Iterable[FleetRequest]) -> FleetRun:
        if self._ran:
            raise RuntimeError("a FleetSimulation runs once; build a new one")
        self._ran = True
        wall_start = time.perf_counter()
        cpu_start = time.process_time()
        engines = self.engines
        states = self.states
        policy = self.policy
        choose = policy.choose
        n = len(engines)
        on_finished = self._on_finished
        on_kv_events = self._on_kv_events
        on_gauges = self._on_gauges
        changed = self._changed
        live = self.scrape_interval <= 0
        latest = self._latest
        clock = time.perf_counter
        policy_s = 0.0
        engine_s = 0.0

        heap: list[tuple[float, int, int, int]] = []
        heappush = heapq.heappush
        heappop = heapq.heappop
        heapreplace = heapq.heapreplace
        versions = [0] * n
        scheduled: list[float | None] = [None] * n
        # The result of the step each engine is running, applied when it ends.
        pending: list[StepResult | None] = [None] * n
        in_flight: dict[str, tuple[FleetRequest, int]] = {}
        records: list[RequestRecord] = []
        busy = self._busy
        finished_count = self._finished
        steps = 0
        busy_engines = 0  # engines with a pending heap entry

        it = iter(requests)
        nxt = next(it, None)
        last_arrival = -math.inf
        if self.scrape_interval > 0 and nxt is not None:
            heapq.heappush(heap, (nxt.arrival_time, _SCRAPE, -1, 0))

        while True:
            if nxt is not None and (not heap or nxt.arrival_time <= heap[0][0]):
                req = nxt
                t = req.arrival_time
                if t < last_arrival:
                    raise ValueError(f"request {req.request_id} arrives at {t} before the previous one "
                                     f"({last_arrival}): workloads must be in arrival order")
                last_arrival = t
                c0 = clock()
                if on_gauges is not None:
                    on_gauges(changed)
                    changed.clear()
                i = choose(req, states)
                c1 = clock()
                policy_s += c1 - c0
                if not 0 <= i < n:
                    raise ValueError(f"policy {policy.name} chose endpoint {i} of {n}")
                engine = engines[i]
                if req.request_id in in_flight:
                    raise ValueError(f"duplicate request id {req.request_id!r}")
                engine.add_request(req.engine_request())  # ValueError if the prompt exceeds max_model_len
                engine_s += clock() - c1
                needed = req.prompt_tokens + req.max_tokens
                in_flight[req.request_id] = (req, i)
                st = states[i]
                st.in_flight += 1
                st.in_flight_tokens += needed
                st.routed += 1
                t_next = engine.next_event_time()
                old = scheduled[i]
                if t_next is not None and (old is None or t_next < old):
                    if old is None:
                        busy_engines += 1
                    versions[i] += 1
                    scheduled[i] = t_next
                    heappush(heap, (t_next, _STEP, i, versions[i]))
                nxt = next(it, None)
                continue

            if not heap:
                break
            # The earliest event stays on the heap until it is known whether a successor replaces it: an engine
            # that steps again right away costs one sift of the heap instead of a pop and a push.
            t, kind, i, version = heap[0]
            if kind == _SCRAPE:
                self._scrape_all(t)
                if nxt is not None or busy_engines:
                    heapreplace(heap, (t + self.scrape_interval, _SCRAPE, -1, 0))
                else:
                    heappop(heap)
                continue
            if version != versions[i]:
                heappop(heap)
                continue
            engine = engines[i]
            done = pending[i]
            if done is not None:  # the step that ends now: its results become visible
                pending[i] = None
                st = states[i]
                for res in done.finished:
                    req, idx = in_flight.pop(res.request_id)
                    record = RequestRecord.of(req, idx, res)
                    records.append(record)
                    finished_count[i] += 1
                    st.in_flight -= 1
                    st.in_flight_tokens -= req.prompt_tokens + req.max_tokens
                    if on_finished is not None:
                        c0 = clock()
                        on_finished(req, idx, record)
                        policy_s += clock() - c0
                if done.kv_events:
                    if on_kv_events is not None:
                        c0 = clock()
                        on_kv_events(i, done.kv_events, t)
                        policy_s += clock() - c0
                    engine.drain_kv_events()
                # The engine's gauges at the end of the step: into its state (live) or held for the next scrape.
                running, waiting, kv_usage, queries, hits = engine.gauges()
                if live:
                    # Most steps move no gauge (a decode step within a block): write and announce only changes.
                    if (running != st.running or waiting != st.waiting or kv_usage != st.kv_usage
                            or queries != st.prefix_cache_queries or hits != st.prefix_cache_hits):
                        st.running = running
                        st.waiting = waiting
                        st.kv_usage = kv_usage
                        st.prefix_cache_queries = queries
                        st.prefix_cache_hits = hits
                        if on_gauges is not None:
                            changed.append(i)
                    st.metrics_time = t
                else:
                    latest[i] = (running, waiting, kv_usage, queries, hits, t)
            t_next = engine.next_event_time()
            if t_next is None:
                heappop(heap)
                scheduled[i] = None
                busy_engines -= 1
                continue
            if t_next <= t:  # work to do now: run the step, publish its results when it ends
                c0 = clock()
                result = engine.step()
                engine_s += clock() - c0
                steps += 1
                busy[i] += result.end_time - result.start_time
                pending[i] = result
                t_next = result.end_time
            versions[i] += 1
            scheduled[i] = t_next
            heapreplace(heap, (t_next, _STEP, i, versions[i]))

        if in_flight:  # pragma: no cover - an engine bug, not a workload error
            raise RuntimeError(f"{len(in_flight)} requests never finished, e.g. {next(iter(in_flight))}")
        end_time = max((e.now for e in engines), default=0.0)
        summaries = []
        for i, engine in enumerate(engines):
            c = engine.counters
            summaries.append(EndpointSummary(
                index=i,
                name=states[i].name,
                routed=states[i].routed,
                finished=finished_count[i],
                prefix_cache_queries=c.prefix_cache_queries,
                prefix_cache_hits=c.prefix_cache_hits,
                preemptions=c.num_preemptions,
                steps=c.num_steps,
                busy_time=busy[i],
            ))
        return FleetRun(policy.name, records, summaries, end_time, steps, time.perf_counter() - wall_start,
                        time.process_time() - cpu_start, policy_s, engine_s)

    # -- metrics --------------------------------------------------------------------------------------

    def _scrape_all(self, t: float) -> None:
        for st, gauges in zip(self.states, self._latest, strict=True):
            st.running, st.waiting, st.kv_usage, st.prefix_cache_queries, st.prefix_cache_hits, _ = gauges
            st.metrics_time = t
        if self._on_gauges is not None:
            self._changed.extend(range(len(self.states)))
