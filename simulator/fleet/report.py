"""The fleet simulator's report: latency percentiles, throughput, cache hit rate and load spread.

Why it exists: router comparisons in GIE, llm-d and inference-perf are read off the same few numbers --
TTFT / TPOT / end-to-end percentiles, request and output-token throughput, prefix-cache hit rate,
goodput at SLOs -- so a run is reduced to exactly those, computed deterministically from the records
(no wall-clock numbers in here), and rendered as a markdown table (one row per policy) or JSON.

Definitions (inference-perf's ``docs/metrics.md``):

- TTFT: arrival to first token (includes the frontend delay and queueing); TPOT: (last token - first
  token) / (output tokens - 1), over requests with at least two output tokens; E2E: arrival to last token.
- Percentiles: linear interpolation between closest ranks (numpy's default, which inference-perf uses).
- Duration: first arrival to last finish. Throughput: requests, input tokens, output tokens / duration.
- Prefix-cache hit rate: cached prompt tokens / prompt tokens (``usage.prompt_tokens_details``).
- Goodput (with SLOs): requests meeting every given bound (TTFT, TPOT) / duration.
- Spread: requests routed per endpoint -- min, max, and coefficient of variation (population sd / mean).
- Busy: mean fraction of the duration the endpoints spent in engine steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from simulator.fleet.records import RequestRecord
from simulator.fleet.simulation import FleetRun

__all__ = ["Distribution", "FleetReport", "Slo", "Spread", "markdown_table", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linear interpolation; NaN when empty."""
    if not 0 <= q <= 100:
        raise ValueError("percentile must be in 0..100")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass(frozen=True, slots=True)
class Distribution:
    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        data = sorted(values)
        if not data:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(len(data), math.fsum(data) / len(data), percentile(data, 50), percentile(data, 90),
                   percentile(data, 99), data[-1])


@dataclass(frozen=True, slots=True)
class Spread:
    per_endpoint: tuple[int, ...]
    min: int
    max: int
    mean: float
    cv: float

    @classmethod
    def of(cls, counts: Sequence[int]) -> Spread:
        if not counts:
            return cls((), 0, 0, 0.0, 0.0)
        mean = sum(counts) / len(counts)
        var = sum((c - mean) ** 2 for c in counts) / len(counts)
        cv = math.sqrt(var) / mean if mean > 0 else 0.0
        return cls(tuple(counts), min(counts), max(counts), mean, cv)


@dataclass(frozen=True, slots=True)
class Slo:
    """Per-request bounds in seconds (None = not bounded)."""

    ttft: float | None = None
    tpot: float | None = None

    def met(self, r: RequestRecord) -> bool:
        if self.ttft is not None and r.ttft > self.ttft:
            return False
        return not (self.tpot is not None and r.tpot is not None and r.tpot > self.tpot)

    @property
    def active(self) -> bool:
        return self.ttft is not None or self.tpot is not None


@dataclass(frozen=True, slots=True)
class FleetReport:
    policy: str
    workload: str
    endpoints: int
    requests: int
    duration_s: float
    throughput_rps: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    ttft: Distribution
    tpot: Distribution
    e2e: Distribution
    queue: Distribution
    prefix_cache_hit_rate: float
    preemptions: int
    busy: float
    spread: Spread
    goodput_rps: float | None = None

    @classmethod
    def of(cls, run: FleetRun, workload: str = "", slo: Slo | None = None) -> FleetReport:
        records = run.records
        if records:
            start = min(r.arrival_time for r in records)
            end = max(r.finish_time for r in records)
        else:
            start = end = 0.0
        duration = end - start

        def rate(x: float) -> float:
            return x / duration if duration > 0 else 0.0

        prompt = sum(r.prompt_tokens for r in records)
        cached = sum(r.cached_tokens for r in records)
        output = sum(r.output_tokens for r in records)
        goodput = None
        if slo is not None and slo.active:
            goodput = rate(sum(1 for r in records if slo.met(r)))
        busy = (math.fsum(e.busy_time for e in run.endpoints) / (len(run.endpoints) * duration)
                if duration > 0 and run.endpoints else 0.0)
        return cls(
            policy=run.policy,
            workload=workload,
            endpoints=len(run.endpoints),
            requests=len(records),
            duration_s=duration,
            throughput_rps=rate(len(records)),
            input_tokens_per_s=rate(prompt),
            output_tokens_per_s=rate(output),
            ttft=Distribution.of(r.ttft for r in records),
            tpot=Distribution.of(r.tpot for r in records if r.tpot is not None),
            e2e=Distribution.of(r.e2e for r in records),
            queue=Distribution.of(r.queue_time for r in records),
            prefix_cache_hit_rate=cached / prompt if prompt else 0.0,
            preemptions=sum(e.preemptions for e in run.endpoints),
            busy=busy,
            spread=Spread.of([e.routed for e in run.endpoints]),
            goodput_rps=goodput,
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (NaN, for empty distributions, becomes None)."""
        return _clean(asdict(self))


def _clean(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1e3:.1f}"


def _s(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def markdown_table(reports: Sequence[FleetReport]) -> str:
    """One row per report: the comparison table."""
    goodput = any(r.goodput_rps is not None for r in reports)
    head = ["policy", "req/s", "out tok/s", "TTFT p50 ms", "TTFT p90 ms", "TTFT p99 ms", "TPOT p50 ms",
            "TPOT p90 ms", "TPOT p99 ms", "E2E p50 s", "E2E p90 s", "E2E p99 s", "cache hit", "preempt",
            "busy", "req/endpoint min-max (CV)"]
    if goodput:
        head.append("goodput req/s")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in reports:
        row = [
            r.policy, f"{r.throughput_rps:.1f}", f"{r.output_tokens_per_s:.0f}",
            _ms(r.ttft.p50), _ms(r.ttft.p90), _ms(r.ttft.p99),
            _ms(r.tpot.p50), _ms(r.tpot.p90), _ms(r.tpot.p99),
            _s(r.e2e.p50), _s(r.e2e.p90), _s(r.e2e.p99),
            f"{r.prefix_cache_hit_rate:.1%}", str(r.preemptions), f"{r.busy:.0%}",
            f"{r.spread.min}-{r.spread.max} ({r.spread.cv:.2f})",
        ]
        if goodput:
            row.append("-" if r.goodput_rps is None else f"{r.goodput_rps:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
