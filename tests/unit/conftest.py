"""Shared pieces for unit tests: a director over an in-memory pool, with no sockets."""

from __future__ import annotations

import random

import pytest

from endpoint_picker.datalayer import MetricsStore
from endpoint_picker.datastore import Datastore, Endpoint
from endpoint_picker.decisions import DecisionLog
from endpoint_picker.director import Director
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.metrics import PickerMetrics
from endpoint_picker.scheduling import FrameworkScheduler, load_config_text

POOL = (
    Endpoint("ep-a", "10.0.0.1", 8000),
    Endpoint("ep-b", "10.0.0.2", 8000),
    Endpoint("ep-c", "10.0.0.3", 8000),
    Endpoint("ep-c1", "10.0.0.3", 8001),
)


# The data-plane tests want a predictable policy: fewest requests in flight, three endpoints in the answer.
LEAST_IN_FLIGHT = """
plugins:
- type: active-request-scorer
- type: max-score-picker
  parameters: {maxNumOfEndpoints: 3}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: active-request-scorer}, {pluginRef: max-score-picker}]
"""


class Picker:
    """The pieces a Session needs, wired like `endpoint-picker serve` does."""

    def __init__(self, endpoints: tuple[Endpoint, ...] = POOL, *, seed: int = 7, config: str = LEAST_IN_FLIGHT,
                 emit_endpoint_scores: bool = False) -> None:
        self.datastore = Datastore()
        self.datastore.replace_endpoints(endpoints)
        self.inflight = InFlightTracker()
        self.store = MetricsStore()
        self.metrics = PickerMetrics(self.inflight, self.datastore, self.store)
        self.decisions = DecisionLog()
        self.scheduler = FrameworkScheduler(load_config_text(config, rng=random.Random(seed)), self.inflight,
                                            self.store, self.decisions, plugin_timer=self.metrics.time_plugin)
        self.director = Director(self.datastore, self.scheduler, self.inflight, self.metrics,
                                 emit_endpoint_scores=emit_endpoint_scores, rng=random.Random(seed))

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return value or 0.0


@pytest.fixture
def picker() -> Picker:
    return Picker()
