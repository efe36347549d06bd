"""What every engine flavour's ``/metrics`` shares: the source of the numbers, buckets, the rendering.

Why it exists: vLLM, SGLang and trtllm-serve name their series differently but measure the same engine.
Each flavour is a ``ServerMetrics`` owned by one server (many servers share one process, so nothing is
global): gauges and counters are read from the engine when scraped (always current, no per-step
bookkeeping); histograms are observed from each ``StepDelivery``. Rendering uses the precomputed writer in
``exposition`` (prometheus_client's generic one is ~15x slower; see there). All latencies are model
seconds (what the simulated GPU server would report; with ``--time-scale`` != 1 they differ from what a
client's wall clock sees).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from simulator.engine.engine import Engine
from simulator.server.driver import StepDelivery
from simulator.server.metrics.exposition import Histogram, TextWriter

__all__ = [
    "E2E_BUCKETS",
    "ITERATION_TOKEN_BUCKETS",
    "ITL_BUCKETS",
    "TTFT_BUCKETS",
    "MetricsSource",
    "ServerMetrics",
    "buckets_1_2_5",
    "observe_all",
]

# vLLM 0.33 (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)
ITL_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
E2E_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)
ITERATION_TOKEN_BUCKETS: tuple[float, ...] = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def buckets_1_2_5(maximum: int) -> tuple[float, ...]:
    """vLLM's ``build_1_2_5_buckets``: 1, 2, 5, 10, 20, 50, ... up to ``maximum``."""
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > maximum:
                return tuple(out)
            out.append(float(value))
        exponent += 1


@dataclass(slots=True)
class MetricsSource:
    """What the metrics read besides the engine itself."""

    engine: Engine
    model_name: str
    # Requests waiting for a remote prefiller's KV (vLLM counts them as waiting, reason "deferred").
    deferred: Callable[[], int]
    # "prefill" / "decode" / "both" (SGLang's engine_type label).
    role: str = "both"


class ServerMetrics:
    """Base of one engine flavour's metrics: scrape-time gauges and counters, observed histograms."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source
        self.started = time.time()
        self.histograms: list[Histogram] = []

    def histogram(self, name: str, doc: str, labels: Mapping[str, str], buckets: Sequence[float]) -> Histogram:
        h = Histogram(name, doc, labels, buckets, self.started)
        self.histograms.append(h)
        return h

    def write_series(self, writer: TextWriter) -> None:
        """Gauges and counters read from the engine now (override)."""

    def observe(self, delivery: StepDelivery) -> None:
        """Record one engine step (override)."""

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        writer = TextWriter()
        self.write_series(writer)
        for h in self.histograms:
            h.write(writer)
        return writer.getvalue()


def observe_all(histogram: Histogram, values: Iterable[float]) -> None:
    for value in values:
        histogram.observe(value)
