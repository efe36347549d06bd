"""A routing policy that runs the picker's real scheduler (``endpoint_picker.scheduling``) in the fleet simulator.

Why it exists: the fleet simulator exists to judge routers at fleet scale, and the router that matters is
this project's own -- the very ``FrameworkScheduler`` with the very plugins an ``EndpointPickerConfig``
names, not a re-implementation. :class:`PickerPolicy` is the adapter the ``policy`` module sketches:

- each simulated endpoint becomes an :class:`~endpoint_picker.datastore.Endpoint` (a synthetic pod IP,
  port 8000, the spec's labels), built once on the first decision;
- the engines' gauges, as the simulator exposes them in :class:`~simulator.fleet.policy.EndpointState`,
  go into a :class:`~endpoint_picker.datalayer.MetricsStore` as ``EndpointMetrics`` whose ``scraped_at`` is
  virtual time (the store's ``clock`` follows the simulation): with a scrape interval, ``scraped_at`` is the
  scrape's time and the scheduler's staleness threshold applies as in production; with live gauges
  (interval 0) every snapshot is current, so nothing is ever stale;
- an :class:`~endpoint_picker.inflight.InFlightTracker` is acquired for the chosen endpoint with the same
  token estimate the director uses, and released in ``on_finished``, which also runs the scheduler's
  response-complete hooks;
- each ``FleetRequest`` becomes an ``/v1/completions`` :class:`~endpoint_picker.request.InferenceRequest`
  whose prompt is ``FleetRequest.text`` (the built-in tokenizer's words, so the picker's text-based prefix
  index sees the prefixes the engines cache).

The scheduling coroutine is driven synchronously on one private event loop (``run_until_complete``): the
built-in data producers await nothing real, but the scheduler wraps them in ``asyncio.timeout``, which needs
a running task, so a bare ``coro.send(None)`` is not enough. Decisions are deterministic for a seed: the
config's random tie-breaking draws from ``random.Random(seed)`` and nothing reads the wall clock for a
decision (the producer time budget is wall time, but never expires for the built-in producers).

``PICKER_POLICIES`` are the named variants ``fleet-sim --policy`` offers; ``--policy-config PATH`` runs any
``EndpointPickerConfig`` YAML as policy ``epp-config``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import orjson

from endpoint_picker.datalayer import EndpointMetrics, MetricsStore
from endpoint_picker.datastore import Endpoint
from endpoint_picker.decisions import DecisionLog
from endpoint_picker.inflight import InFlightTracker, Lease
from endpoint_picker.request import InferenceRequest, attach_body, new_request
from endpoint_picker.scheduling import FrameworkScheduler, default_config, load_config_text
from endpoint_picker.scheduling.config import UPSTREAM_DEFAULT_CONFIG
from simulator.fleet.policy import EndpointState
from simulator.fleet.records import RequestRecord
from simulator.fleet.workload import FleetRequest

__all__ = ["EPP_PREFIX_LOAD_CONFIG", "EPP_PREFIX_TOKEN_LOAD_CONFIG", "PICKER_POLICIES", "PickerPolicy",
           "config_policy", "endpoint_address"]

# prefix 3 + queue 1 + kv 1 + the picker's own in-flight count 1: affinity first, live load as the tie-breaker.
EPP_PREFIX_LOAD_CONFIG = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: active-request-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 1}
  - {pluginRef: kv-cache-utilization-scorer, weight: 1}
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: active-request-scorer, weight: 1}
"""

# prefix 2 + queue 1 + token-load 1 (the picker's own in-flight token estimate, never stale).
EPP_PREFIX_TOKEN_LOAD_CONFIG = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: prefix-cache-scorer
- type: token-load-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 1}
  - {pluginRef: prefix-cache-scorer, weight: 2}
  - {pluginRef: token-load-scorer, weight: 1}
"""

MODEL = "sim-model"
_TEXT_CACHE = 4096
_PATH = "/v1/completions"


def endpoint_address(index: int) -> str:
    """A unique synthetic pod IP per endpoint index (10.x.y.z, up to 2**24 endpoints)."""
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


class PickerPolicy:
    """``RoutingPolicy`` over a real :class:`FrameworkScheduler` (see the module docstring).

    ``config_text`` is an ``EndpointPickerConfig`` YAML (None: the product's ``default_config``).
    ``scrape_interval`` must match the simulation's: 0 means live gauges (never stale).
    """

    def __init__(
        self,
        config_text: str | None = None,
        *,
        name: str = "epp-default",
        seed: int = 0,
        scrape_interval: float = 0.0,
        staleness_threshold: float = 2.0,
        model: str = MODEL,
    ) -> None:
        self.name = name
        self.model = model
        self._live = scrape_interval <= 0
        self._now = 0.0
        self.store = MetricsStore(clock=self._clock)
        self.inflight = InFlightTracker()
        rng = random.Random(f"{seed}:picker-policy")
        config = load_config_text(config_text, source=name, rng=rng) if config_text else default_config(rng)
        self.scheduler = FrameworkScheduler(
            config, self.inflight, self.store, DecisionLog(capacity=64),
            staleness_threshold=math.inf if self._live else staleness_threshold,
        )
        # A tuple, as the director passes the pool: the scheduler then knows the candidates did not change.
        self._endpoints: tuple[Endpoint, ...] = ()
        self._index: dict[str, int] = {}
        self._pushed: list[tuple[int, int, float, int, int, float] | None] = []
        # Endpoints whose gauges changed since the last decision, as the simulation said (on_gauges); None when
        # it did not say (then every endpoint is compared).
        self._dirty: set[int] | None = None
        self._leases: dict[str, tuple[Lease, InferenceRequest]] = {}
        self._texts: dict[int, tuple[Sequence[int], str]] = {}
        self._loop = asyncio.new_event_loop()
        weakref.finalize(self, self._loop.close)
        # Cost accounting: decisions, wall seconds in the adapter's choose(), and inside schedule().
        self.decisions = 0
        self.choose_seconds = 0.0
        self.schedule_seconds = 0.0

    def _clock(self) -> float:
        return self._now

    def close(self) -> None:
        self._loop.close()

    # -- RoutingPolicy --------------------------------------------------------------------------------

    def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
        t0 = time.perf_counter()
        self._now = request.arrival_time
        dirty = self._dirty
        self._dirty = None
        if len(self._endpoints) != len(endpoints):
            self._build(endpoints)
            dirty = None
        self._push_metrics(endpoints, range(len(endpoints)) if dirty is None else sorted(dirty))
        ireq = new_request(_PATH, {"x-request-id": request.request_id}, None)
        attach_body(ireq, orjson.dumps({"model": self.model, "prompt": self._text(request),
                                        "max_tokens": request.max_tokens}))
        t1 = time.perf_counter()
        if asyncio._get_running_loop() is not None:
            raise RuntimeError("PickerPolicy drives the scheduler on its own event loop: run the simulation outside "
                               "a running loop (e.g. in asyncio.to_thread)")
        result = self._loop.run_until_complete(self.scheduler.schedule(ireq, self._endpoints))
        t2 = time.perf_counter()
        key = result.primary.key
        self._leases[request.request_id] = (self.inflight.acquire(key, ireq.estimated_input_tokens), ireq)
        self.decisions += 1
        self.schedule_seconds += t2 - t1
        self.choose_seconds += time.perf_counter() - t0
        return self._index[key]

    def on_gauges(self, indices: Sequence[int]) -> None:
        """The simulation's notice, before a decision, of the endpoints whose gauges changed since the last."""
        if self._dirty is None:
            self._dirty = set(indices)
        else:
            self._dirty.update(indices)

    def on_finished(self, request: FleetRequest, index: int, record: RequestRecord) -> None:
        held = self._leases.pop(request.request_id, None)
        if held is None:
            return
        lease, ireq = held
        lease.release()
        self.scheduler.response_complete(ireq, self._endpoints[index].key)

    # -- helpers --------------------------------------------------------------------------------------

    def _text(self, request: FleetRequest) -> str:
        """``request.text``, decoded once per prompt object (workloads reuse one token list per prompt)."""
        ids = request.prompt_token_ids
        hit = self._texts.get(id(ids))
        if hit is not None and hit[0] is ids:
            return hit[1]
        text = request.text
        if len(self._texts) >= _TEXT_CACHE:
            self._texts.pop(next(iter(self._texts)))
        self._texts[id(ids)] = (ids, text)  # holding ids keeps its id() from being reused
        return text

    @property
    def in_flight(self) -> int:
        """Requests the adapter holds leases for (0 after a completed run)."""
        return len(self._leases)

    def _build(self, endpoints: Sequence[EndpointState]) -> None:
        if self._endpoints:
            raise ValueError("the fleet changed size between decisions")
        self._endpoints = tuple(Endpoint(st.name, endpoint_address(i), 8000, dict(st.labels))
                                for i, st in enumerate(endpoints))
        self._index = {ep.key: i for i, ep in enumerate(self._endpoints)}
        self._pushed = [None] * len(endpoints)

    def _push_metrics(self, endpoints: Sequence[EndpointState], indices: Iterable[int]) -> None:
        """Write a new snapshot for every endpoint of ``indices`` (in order) whose gauges (or scrape time) changed
        since its last one."""
        pushed = self._pushed
        live = self._live
        put = self.store.put
        eps = self._endpoints
        for i in indices:
            st = endpoints[i]
            # Live gauges never go stale, so their step time need not trigger a new snapshot.
            gauges = (st.running, st.waiting, st.kv_usage, st.prefix_cache_queries, st.prefix_cache_hits,
                      0.0 if live else st.metrics_time)
            if gauges == pushed[i]:
                continue
            pushed[i] = gauges
            put(eps[i].key, EndpointMetrics(
                scraped_at=self._now if live else st.metrics_time,
                waiting_queue_size=st.waiting,
                running_requests=st.running,
                kv_cache_usage=st.kv_usage,
                block_size=st.block_size,
                num_gpu_blocks=st.num_gpu_blocks,
                prefix_cache_queries=st.prefix_cache_queries,
                prefix_cache_hits=st.prefix_cache_hits,
            ))

    @property
    def mean_choose_us(self) -> float:
        return self.choose_seconds / self.decisions * 1e6 if self.decisions else 0.0

    @property
    def mean_schedule_us(self) -> float:
        return self.schedule_seconds / self.decisions * 1e6 if self.decisions else 0.0


def _named(name: str, config: str | None) -> Callable[[int, float], PickerPolicy]:
    def factory(seed: int, scrape_interval: float = 0.0) -> PickerPolicy:
        return PickerPolicy(config, name=name, seed=seed, scrape_interval=scrape_interval)
    return factory


PICKER_POLICIES: dict[str, Callable[[int, float], PickerPolicy]] = {
    "epp-default": _named("epp-default", None),
    "epp-upstream-default": _named("epp-upstream-default", UPSTREAM_DEFAULT_CONFIG),
    "epp-prefix-load": _named("epp-prefix-load", EPP_PREFIX_LOAD_CONFIG),
    "epp-prefix-token-load": _named("epp-prefix-token-load", EPP_PREFIX_TOKEN_LOAD_CONFIG),
}


def config_policy(path: str | Path, seed: int = 0, scrape_interval: float = 0.0) -> PickerPolicy:
    """``--policy-config PATH``: any EndpointPickerConfig YAML, as policy ``epp-config:<file name>``."""
    p = Path(path)
    return PickerPolicy(p.read_text(encoding="utf-8"), name=f"epp-config:{p.name}", seed=seed,
                        scrape_interval=scrape_interval)
