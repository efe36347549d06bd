"""The fleet report's arithmetic: percentiles, throughput over the run's span, cache hit rate, goodput,
spread, JSON and the markdown table -- checked against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest

from simulator.fleet import Distribution, FleetReport, FleetRun, RequestRecord, Slo, Spread, markdown_table, percentile
from simulator.fleet.records import EndpointSummary


def test_percentile_interpolates_linearly_between_ranks() -> None:
    data = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 50) == 3.0
    assert percentile(data, 90) == pytest.approx(4.6)
    assert percentile(data, 100) == 5.0
    assert percentile([10.0, 20.0], 25) == pytest.approx(12.5)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(data, 101)


def test_distribution_and_spread() -> None:
    d = Distribution.of([4.0, 1.0, 3.0, 2.0])
    assert (d.count, d.mean, d.p50, d.max) == (4, 2.5, 2.5, 4.0)
    assert d.p99 == pytest.approx(3.97)
    assert Distribution.of([]).count == 0
    s = Spread.of([2, 4, 6])
    assert (s.min, s.max, s.mean) == (2, 6, 4.0)
    assert s.cv == pytest.approx(math.sqrt(8 / 3) / 4)
    assert Spread.of([0, 0]).cv == 0.0


def _record(i: int, endpoint: int, arrival: float, ttft: float, finish: float, out: int, prompt: int = 100,
            cached: int = 0) -> RequestRecord:
    tpot = None if out < 2 else (finish - arrival - ttft) / (out - 1)
    return RequestRecord(f"r{i}", endpoint, "", arrival, finish, ttft, tpot, 0.0, prompt, cached, out, 0)


def _run() -> FleetRun:
    records = [
        _record(0, 0, 0.0, 0.1, 1.0, 10, cached=0),
        _record(1, 1, 1.0, 0.3, 2.0, 8, cached=50),
        _record(2, 0, 2.0, 0.2, 4.0, 1, cached=100),
    ]
    endpoints = [EndpointSummary(0, "a", 2, 2, 0, 0, 1, 10, 2.0), EndpointSummary(1, "b", 1, 1, 0, 0, 0, 5, 1.0)]
    return FleetRun("p", records, endpoints, end_time=4.0, steps=15, wall_seconds=0.5)


def test_report_numbers() -> None:
    report = FleetReport.of(_run(), "w", Slo(ttft=0.25, tpot=0.1))
    assert report.requests == 3 and report.endpoints == 2
    assert report.duration_s == 4.0  # first arrival 0.0 to last finish 4.0
    assert report.throughput_rps == pytest.approx(0.75)
    assert report.output_tokens_per_s == pytest.approx(19 / 4)
    assert report.input_tokens_per_s == pytest.approx(300 / 4)
    assert report.ttft.p50 == pytest.approx(0.2) and report.ttft.max == pytest.approx(0.3)
    assert report.tpot.count == 2  # the single-token request has no TPOT
    assert report.tpot.mean == pytest.approx((0.9 / 9 + 0.7 / 7) / 2)
    assert report.e2e.p50 == pytest.approx(1.0)
    assert report.prefix_cache_hit_rate == pytest.approx(150 / 300)
    assert report.preemptions == 1
    assert report.busy == pytest.approx(3.0 / (2 * 4.0))
    assert report.spread.per_endpoint == (2, 1)
    # r0: ttft 0.1, tpot 0.1 -> good; r1: ttft 0.3 -> bad; r2: ttft 0.2, no tpot -> good.
    assert report.goodput_rps == pytest.approx(2 / 4)


def test_report_of_an_empty_run_and_json() -> None:
    empty = FleetReport.of(FleetRun("p", [], [EndpointSummary(0, "a", 0, 0, 0, 0, 0, 0, 0.0)], 0.0, 0, 0.0))
    assert empty.requests == 0 and empty.throughput_rps == 0.0 and empty.goodput_rps is None
    doc = empty.to_dict()
    assert doc["ttft"]["p50"] is None  # type: ignore[index]
    json.dumps(doc, allow_nan=False)


def test_markdown_table_has_one_row_per_report() -> None:
    a = FleetReport.of(_run(), "w")
    b = FleetReport.of(FleetRun("q", _run().records, _run().endpoints, 4.0, 15, 0.5), "w", Slo(ttft=1.0))
    table = markdown_table([a, b]).splitlines()
    assert len(table) == 4
    assert table[0].startswith("| policy | req/s") and table[0].endswith("goodput req/s |")
    assert table[2].startswith("| p | 0.8 | 5 | 200.0 |")
    assert table[2].endswith("| 1-2 (0.33) | - |")
    assert table[3].startswith("| q |") and table[3].endswith("| 0.8 |")
