"""A simulated server's Prometheus ``/metrics``, in the series names of the engine it pretends to be.

Why it exists: one place that maps ``--engine vllm|sglang|trtllm-serve`` to the metrics flavour; each
flavour lives in its own module (``vllm``, ``sglang``, ``trtllm``) over the shared base in ``common``.
"""

from __future__ import annotations

from simulator.server.metrics.common import MetricsSource, ServerMetrics
from simulator.server.metrics.sglang import SglangMetrics
from simulator.server.metrics.trtllm import TrtllmMetrics
from simulator.server.metrics.vllm import VllmMetrics

__all__ = ["MetricsSource", "ServerMetrics", "SglangMetrics", "TrtllmMetrics", "VllmMetrics", "make_metrics"]


def make_metrics(engine_kind: str, source: MetricsSource) -> ServerMetrics:
    if engine_kind == "vllm":
        return VllmMetrics(source)
    if engine_kind == "sglang":
        return SglangMetrics(source)
    if engine_kind == "trtllm-serve":
        return TrtllmMetrics(source)
    raise ValueError(f"unknown engine kind {engine_kind!r}")
