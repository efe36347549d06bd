"""The routing-policy interface of the fleet simulator, and the per-endpoint state a policy decides on.

Why it exists: the fleet simulator's purpose is to evaluate routers -- today two simple ones, later the
picker's real scheduler -- at sizes no test bench reaches. So the interface is the smallest thing a router
needs: ``choose(request, endpoints) -> index`` into ``endpoints``, where each :class:`EndpointState` carries

- the router's own accounting, always current: requests and tokens routed there and not yet finished
  (``in_flight``, ``in_flight_tokens``), and ``routed`` in total;
- the engine's gauges as a ``/metrics`` scrape would show them (``running``, ``waiting``, ``kv_usage``, the
  prefix-cache counters), taken at ``metrics_time`` -- live (the end of the endpoint's latest engine step)
  or, with a scrape interval, as of the last periodic scrape;
- static facts: name, labels (role, topology), block size, KV capacity.

States are live views owned by the simulator: read them during ``choose``, copy what must be kept.

Optional hooks (looked up with ``getattr``; a policy implements only what it needs):

- ``on_finished(request, index, record)`` -- a request completed (response-complete bookkeeping);
- ``on_kv_events(index, events, time)`` -- the engine's KV-cache events of one step (BlockStored /
  BlockRemoved / AllBlocksCleared, as published on ZMQ); defining it switches event generation on;
- ``on_gauges(indices)`` -- called right before every ``choose`` with the indices of the endpoints whose
  gauges (running, waiting, KV usage, prefix-cache counters; with a scrape interval also ``metrics_time``)
  changed since the previous decision (repeats possible; the list is only valid during the call), so a
  policy that copies gauges need not compare every endpoint per decision.

Adapting the picker's scheduler (``endpoint_picker/scheduling``) takes one small class (``picker_policy``): build its
``Endpoint`` and ``EndpointMetrics`` (``scraped_at=metrics_time`` on a virtual clock) from each
``EndpointState`` once, an ``InferenceRequest`` from ``FleetRequest.text`` (or the token ids), run the
scheduling cycle, map the chosen endpoint's key back to its index, and forward ``on_finished`` /
``on_kv_events`` to its response hooks and precise prefix index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from simulator.engine.events import KVCacheEvent
from simulator.fleet.workload import FleetRequest

if TYPE_CHECKING:
    from simulator.fleet.records import RequestRecord

__all__ = ["EndpointState", "FinishObserver", "GaugeObserver", "KVEventObserver", "RoutingPolicy"]


@dataclass(slots=True)
class EndpointState:
    index: int
    name: str
    block_size: int
    num_gpu_blocks: int
    labels: Mapping[str, str] = field(default_factory=dict)
    # The router's accounting.
    in_flight: int = 0
    # Prompt + max_tokens of the in-flight requests.
    in_flight_tokens: int = 0
    routed: int = 0
    # Engine gauges and counters as of metrics_time (vLLM's names without the prefix).
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    metrics_time: float = 0.0


@runtime_checkable
class RoutingPolicy(Protocol):
    """Chooses one endpoint per request."""

    @property
    def name(self) -> str: ...

    def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
        """Index into ``endpoints`` of the endpoint that serves ``request``."""
        ...


class FinishObserver(Protocol):
    def on_finished(self, request: FleetRequest, index: int, record: RequestRecord) -> None: ...


class KVEventObserver(Protocol):
    def on_kv_events(self, index: int, events: Sequence[KVCacheEvent], time: float) -> None: ...


class GaugeObserver(Protocol):
    def on_gauges(self, indices: Sequence[int]) -> None: ...
