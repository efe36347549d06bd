"""Built-in routing policies: round-robin, random and least-loaded.

Why it exists: they are the baselines every router comparison starts from (GIE and llm-d benchmark
against a plain Service, i.e. random / round-robin, and a load-only scorer), and the yardstick the
picker's scheduler will be measured against in the fleet simulator.

- ``round-robin``: endpoints in turn, blind to load.
- ``random``: uniformly at random from a seeded RNG (what a Kubernetes Service does).
- ``least-loaded``: the fewest requests in flight by the router's own count (which, unlike scraped gauges,
  already includes the requests it routed a moment ago); ties go to the shorter waiting queue, then the
  lower KV usage, then the endpoint after the previous pick (so an idle fleet is filled in turn).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from simulator.fleet.policy import EndpointState, RoutingPolicy
from simulator.fleet.workload import FleetRequest

__all__ = ["POLICIES", "LeastLoaded", "RandomChoice", "RoundRobin", "make_policy"]


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
        index = self._next % len(endpoints)
        self._next = index + 1
        return index


class RandomChoice:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(f"{seed}:random-policy")

    def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
        return int(self._rng.random() * len(endpoints))


class LeastLoaded:
    name = "least-loaded"

    def __init__(self) -> None:
        self._last = -1

    def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
        n = len(endpoints)
        start = (self._last + 1) % n
        best = start
        b = endpoints[start]
        best_key = (b.in_flight, b.waiting, b.kv_usage)
        for k in range(1, n):
            i = start + k
            if i >= n:
                i -= n
            e = endpoints[i]
            if e.in_flight > best_key[0]:
                continue
            key = (e.in_flight, e.waiting, e.kv_usage)
            if key < best_key:
                best, best_key = i, key
        self._last = best
        return best


POLICIES: dict[str, Callable[[int], RoutingPolicy]] = {
    "round-robin": lambda seed: RoundRobin(),
    "random": lambda seed: RandomChoice(seed),
    "least-loaded": lambda seed: LeastLoaded(),
}


def make_policy(name: str, seed: int = 0) -> RoutingPolicy:
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; one of {', '.join(POLICIES)}") from None
    return factory(seed)
