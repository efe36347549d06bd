"""Shared pieces for unit tests: a director over an in-memory pool, with no sockets."""

from __future__ import annotations

import random

import pytest

from endpoint_picker.datastore import Datastore, Endpoint
from endpoint_picker.director import Director
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.metrics import PickerMetrics
from endpoint_picker.scheduling import LeastInFlightScheduler

POOL = (
    Endpoint("ep-a", "10.0.0.1", 8000),
    Endpoint("ep-b", "10.0.0.2", 8000),
    Endpoint("ep-c", "10.0.0.3", 8000),
    Endpoint("ep-c1", "10.0.0.3", 8001),
)


class Picker:
    """The pieces a Session needs, wired like `endpoint-picker serve` does."""

    def __init__(self, endpoints: tuple[Endpoint, ...] = POOL, *, seed: int = 7) -> None:
        self.datastore = Datastore()
        self.datastore.replace_endpoints(endpoints)
        self.inflight = InFlightTracker()
        self.metrics = PickerMetrics(self.inflight, self.datastore)
        scheduler = LeastInFlightScheduler(self.inflight, max_endpoints=3, rng=random.Random(seed))
        self.director = Director(self.datastore, scheduler, self.inflight, self.metrics, rng=random.Random(seed))

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return value or 0.0


@pytest.fixture
def picker() -> Picker:
    return Picker()
