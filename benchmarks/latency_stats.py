"""Summaries of streamed requests: percentiles, throughput, goodput under SLOs, spread over endpoints.

Why this module exists: the routing benchmark reports the same numbers for every target and every stage, and
those numbers must mean what inference-perf and ``vllm bench serve`` mean by them (latency-model.md §5):
percentiles by linear interpolation; throughput over the stage's span from its first send to its last
completion; goodput (DistServe) = requests per second that succeeded *and* met every configured bound.
Pure functions over :class:`benchmarks.stream_client.RequestResult`, so they are unit-tested directly.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from benchmarks.stream_client import RequestResult

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Slo:
    """Goodput bounds in seconds; None = not bounded. Parsed from ``ttft=0.5,tpot=0.05`` (``ms`` suffix ok)."""

    ttft: float | None = None
    tpot: float | None = None
    itl: float | None = None
    e2e: float | None = None

    @classmethod
    def parse(cls, text: str) -> Slo:
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("ttft", "tpot", "itl", "e2e"):
                raise ValueError(f"--slo: expected ttft=, tpot=, itl= or e2e= (seconds, or with ms), got {part!r}")
            raw = raw.strip().lower()
            try:
                value = float(raw[:-2]) / 1000 if raw.endswith("ms") else float(raw.removesuffix("s"))
            except ValueError:
                raise ValueError(f"--slo: {key} needs a number, got {raw!r}") from None
            if not value > 0:
                raise ValueError(f"--slo: {key} must be > 0")
            values[key] = value
        return cls(**values)

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.ttft, self.tpot, self.itl, self.e2e))

    def met_by(self, r: RequestResult) -> bool:
        if not r.ok:
            return False
        checks = ((self.ttft, r.ttft), (self.tpot, r.tpot), (self.itl, max(r.itl, default=0.0)), (self.e2e, r.e2e))
        return all(bound is None or (value is not None and value <= bound) for bound, value in checks)

    def __str__(self) -> str:
        parts = [f"{k}={v * 1000:g}ms" for k, v in asdict(self).items() if v is not None]
        return ",".join(parts) or "none"


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile with linear interpolation between closest ranks (numpy's default); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    return {f"p{p}": percentile(values, p) for p in PERCENTILES}


@dataclass
class Spread:
    """How requests spread over endpoints: counts per endpoint and their coefficient of variation."""

    per_endpoint: dict[str, int] = field(default_factory=dict)

    @property
    def cv(self) -> float:
        counts = list(self.per_endpoint.values())
        if len(counts) < 2 or not sum(counts):
            return 0.0
        return statistics.pstdev(counts) / statistics.fmean(counts)

    def to_dict(self) -> dict[str, object]:
        return {"per_endpoint": dict(sorted(self.per_endpoint.items())), "cv": round(self.cv, 4)}


@dataclass
class Summary:
    """One target's numbers over one set of requests (a stage or the whole run)."""

    requests: int
    ok: int
    errors: int
    duration: float
    request_throughput: float
    output_throughput: float
    goodput: float | None
    ttft: dict[str, float | None]
    tpot: dict[str, float | None]
    itl: dict[str, float | None]
    e2e: dict[str, float | None]
    client_cache_hit: float | None
    spread: Spread
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        doc = asdict(self)
        doc["spread"] = self.spread.to_dict()
        return doc


def summarize(results: Iterable[RequestResult], slo: Slo, endpoints: Sequence[str] = ()) -> Summary:
    """Summary of ``results``; ``endpoints`` lists every endpoint so that ones that got nothing count as 0."""
    rs = list(results)
    good = [r for r in rs if r.ok]
    ends = [r.sent + r.e2e for r in good if r.e2e is not None]
    duration = (max(ends) - min(r.sent for r in rs)) if ends else 0.0
    per_endpoint: Counter[str] = Counter({e: 0 for e in endpoints})
    per_endpoint.update(r.served_by for r in good if r.served_by)
    prompt = sum(r.prompt_tokens or 0 for r in good)
    cached = sum(r.cached_tokens or 0 for r in good)
    errors = [r.error or f"HTTP {r.status}" for r in rs if not r.ok]
    return Summary(
        requests=len(rs),
        ok=len(good),
        errors=len(errors),
        duration=duration,
        request_throughput=len(good) / duration if duration else 0.0,
        output_throughput=sum(r.output_tokens for r in good) / duration if duration else 0.0,
        goodput=(sum(slo.met_by(r) for r in good) / duration if duration else 0.0) if not slo.empty else None,
        ttft=percentiles([r.ttft for r in good if r.ttft is not None]),
        tpot=percentiles([t for r in good if (t := r.tpot) is not None]),
        itl=percentiles([gap for r in good for gap in r.itl]),
        e2e=percentiles([r.e2e for r in good if r.e2e is not None]),
        client_cache_hit=cached / prompt if prompt else None,
        spread=Spread(dict(per_endpoint)),
        error_samples=sorted(set(errors))[:5],
    )
