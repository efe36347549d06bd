"""When requests arrive: Poisson or constant-rate arrival times on the virtual clock.

Why it exists: inference-perf and ``vllm bench serve`` load a server either with exponential gaps
(Poisson) or evenly spaced ones (constant); queueing -- and so every latency percentile -- depends on
which. Kept apart from what the requests contain so the same prompts can be replayed at another rate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["ArrivalKind", "Arrivals"]

ArrivalKind = Literal["poisson", "constant"]


@dataclass(frozen=True, slots=True)
class Arrivals:
    """``rate`` requests per (virtual) second from ``start``; ``rate = inf`` sends everything at ``start``."""

    rate: float
    kind: ArrivalKind = "poisson"
    start: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError("arrival rate must be > 0")
        if self.kind not in ("poisson", "constant"):
            raise ValueError(f"unknown arrival kind {self.kind!r}")

    def times(self, rng: random.Random) -> Iterator[float]:
        """An endless, non-decreasing sequence of arrival times (the first at ``start``)."""
        t = self.start
        if math.isinf(self.rate):
            while True:
                yield t
        gap = 1.0 / self.rate
        poisson = self.kind == "poisson"
        while True:
            yield t
            t += rng.expovariate(self.rate) if poisson else gap

    def __str__(self) -> str:
        return f"{self.kind} {self.rate:g} req/s"

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "rate": self.rate}
