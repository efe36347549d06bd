"""Summaries of streamed requests: percentiles, throughput over the stage span, goodput under SLOs, spread."""

from __future__ import annotations

import pytest

from benchmarks.latency_stats import Slo, percentile, summarize
from benchmarks.stream_client import RequestResult


def result(i: int, *, sent: float, ttft: float, e2e: float, out: int, served: str, cached: int = 0,
           status: int = 200, error: str | None = None) -> RequestResult:
    r = RequestResult(f"r{i}", 0, "", sent, status=status, error=error, ttft=ttft, e2e=e2e,
                      itl=[(e2e - ttft) / max(1, out - 1)] * (out - 1), output_chunks=out, prompt_tokens=100,
                      completion_tokens=out, cached_tokens=cached, served_by=served)
    return r


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(1, 101))), 90) == pytest.approx(90.1)


def test_slo_parse_accepts_seconds_and_ms_and_names_bad_parts() -> None:
    slo = Slo.parse("ttft=500ms, tpot=0.05")
    assert slo.ttft == 0.5 and slo.tpot == 0.05 and slo.e2e is None
    assert str(slo) == "ttft=500ms,tpot=50ms"
    assert Slo.parse("").empty
    with pytest.raises(ValueError, match="ttfb"):
        Slo.parse("ttfb=1")
    with pytest.raises(ValueError, match="tpot needs a number"):
        Slo.parse("tpot=fast")
    with pytest.raises(ValueError, match="must be > 0"):
        Slo.parse("e2e=0")


def test_summary_throughput_goodput_cache_and_spread() -> None:
    rs = [
        result(0, sent=0.0, ttft=0.1, e2e=1.0, out=10, served="a", cached=50),
        result(1, sent=0.5, ttft=0.3, e2e=1.5, out=10, served="a", cached=0),   # ends at 2.0
        result(2, sent=1.0, ttft=0.9, e2e=1.0, out=10, served="b", cached=100),  # misses the TTFT bound
        result(3, sent=1.5, ttft=0.0, e2e=0.0, out=0, served="b", status=503, error="HTTP 503: no endpoints"),
    ]
    s = summarize(rs, Slo(ttft=0.5), endpoints=["a", "b", "c"])
    assert (s.requests, s.ok, s.errors) == (4, 3, 1)
    assert s.duration == pytest.approx(2.0)  # first send 0.0 to last completion 2.0
    assert s.request_throughput == pytest.approx(1.5)
    assert s.output_throughput == pytest.approx(15.0)
    assert s.goodput == pytest.approx(1.0)  # 2 good requests in 2 s
    assert s.client_cache_hit == pytest.approx(150 / 300)
    assert s.spread.per_endpoint == {"a": 2, "b": 1, "c": 0}
    assert s.spread.cv == pytest.approx(0.8165, abs=1e-3)
    assert s.ttft["p50"] == pytest.approx(0.3)
    assert s.tpot["p50"] == pytest.approx(0.9 / 9)  # TPOTs 0.9/9, 1.2/9, 0.1/9
    assert s.error_samples == ["HTTP 503: no endpoints"]
    assert summarize(rs, Slo(), ["a"]).goodput is None


def test_tpot_needs_two_tokens() -> None:
    assert result(0, sent=0, ttft=0.1, e2e=0.1, out=1, served="a").tpot is None
    assert result(0, sent=0, ttft=0.1, e2e=0.3, out=3, served="a").tpot == pytest.approx(0.1)


def test_progress_bar() -> None:
    from benchmarks.routing import bar

    assert bar(0, 10, width=10) == "[..........]   0%"
    assert bar(5, 10, width=10) == "[#####.....]  50%"
    assert bar(10, 10, width=10) == "[##########] 100%"
    assert bar(0, 0, width=4) == "[####] 100%"
