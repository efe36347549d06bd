"""Real ``/metrics`` pages of the simulator's three engine flavours, built without sockets, and
prometheus_client's reading of a page -- the reference the data layer's targeted parser is held to."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from simulator.engine import Engine, EngineConfig, EngineRequest
from simulator.server.driver import RequestStream, StepDelivery
from simulator.server.metrics import MetricsSource, ServerMetrics, make_metrics

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KINDS = ("vllm", "sglang", "trtllm-serve")


def _step(engine: Engine, metrics: ServerMetrics, streams: dict[str, RequestStream]) -> None:
    step = engine.step()
    ttfts, itls = [], []
    for rid, _token in step.tokens:
        s = streams[rid]
        if s.last_token_time is None:
            ttfts.append(step.end_time - s.arrival_time)
        else:
            itls.append(step.end_time - s.last_token_time)
        s.last_token_time = step.end_time
    finished = [(res, streams[res.request_id]) for res in step.finished]
    metrics.observe(StepDelivery(step, ttfts, itls, finished))


def build(kind: str, *, lora: bool = False, deferred: int = 1) -> tuple[Engine, ServerMetrics]:
    """An engine that has served a few requests (histograms filled) and now runs 2 and queues 3 more."""
    engine = Engine(EngineConfig(num_gpu_blocks=500, max_num_seqs=2, enable_lora=lora, max_loras=2))
    metrics = make_metrics(kind, MetricsSource(engine, MODEL, lambda: deferred, "both"))
    streams: dict[str, RequestStream] = {}

    def add(rid: str, prompt: list[int], max_tokens: int, adapter: str | None = None) -> None:
        streams[rid] = RequestStream(rid, len(prompt), max_tokens, 0.0)
        engine.add_request(EngineRequest(rid, prompt, max_tokens=max_tokens, lora_name=adapter))

    for i in range(4):
        add(f"done-{i}", list(range(40 + i)), 3, "sql-lora" if lora and i % 2 else None)
    for _ in range(1000):
        if not engine.has_unfinished_requests():
            break
        _step(engine, metrics, streams)
    for i in range(5):
        add(f"live-{i}", list(range(100, 164)), 50, ("sql-lora", "chat-lora")[i % 2] if lora else None)
    _step(engine, metrics, streams)
    return engine, metrics


def engine_page(kind: str, *, lora: bool = False) -> bytes:
    return build(kind, lora=lora)[1].render()


def reference(page: bytes) -> dict[str, list[tuple[dict[str, str], float, float | None]]]:
    """prometheus_client's samples per sample name: (labels, value as float, timestamp in seconds)."""
    out: dict[str, list[tuple[dict[str, str], float, float | None]]] = {}
    for family in text_string_to_metric_families(page.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value), s.timestamp))
    return out


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b
