"""The fleet-scale benchmark runs a tiny sweep, reports every field, and its quality numbers repeat exactly.

No timing assertions: how fast the simulation runs is what the benchmark measures, not what a unit test checks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks.fleet_scale import Point, add_arguments, main, parse_point, run, sweep_points

TINY = ["--endpoints", "8", "--rate-per-endpoint", "2", "--duration", "2", "--policy", "round-robin", "epp-default",
        "--system-prompt-len", "64", "--question-len", "16", "--output-len", "8"]


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_sweep_points_and_point_syntax() -> None:
    assert sweep_points([64, 8], [1, 4]) == [Point(8, 8), Point(8, 32), Point(64, 64), Point(64, 256)]
    assert parse_point("1000x1000") == Point(1000, 1000.0)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_point("1000")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_point("0x5")


def test_tiny_sweep_reports_every_field_and_repeats_its_quality_exactly() -> None:
    lines: list[str] = []
    doc = run(_args([*TINY, "--repeat", "2"]), progress=lines.append)
    rows = doc["points"]
    assert [(r["policy"], r["endpoints"], r["rate_rps"]) for r in rows] == [("round-robin", 8, 16.0),
                                                                          ("epp-default", 8, 16.0)]
    for r in rows:
        assert r["requests"] == 32
        assert r["simulated_s"] >= 1.5
        for key in ("wall_s", "cpu_s", "speed", "policy_us_per_request", "engine_us_per_request",
                    "loop_us_per_request", "requests_per_wall_s", "setup_s", "engine_steps"):
            assert r[key] >= 0, key
        assert r["repeats"] == 2 and len(r["wall_s_all"]) == 2 and r["deterministic"]
        q = r["quality"]
        assert q["requests"] == 32 and q["endpoints"] == 8
        for key in ("ttft", "tpot", "e2e"):
            assert set(q[key]) >= {"p50", "p90", "p99"}
        assert 0.0 <= q["prefix_cache_hit_rate"] <= 1.0
        assert q["goodput_rps"] is not None and q["throughput_rps"] > 0
        assert "per_endpoint" not in q["spread"] and {"min", "max", "cv"} <= set(q["spread"])
    assert rows[0]["schedule_us_per_request"] is None and rows[1]["schedule_us_per_request"] > 0
    assert any("2/2" in line for line in lines)  # progress reported

    again = run(_args(TINY), progress=lambda _line: None)["points"]
    assert [r["quality"] for r in again] == [r["quality"] for r in rows]  # same seed, same numbers
    other_seed = run(_args([*TINY, "--seed", "1"]), progress=lambda _line: None)["points"]
    assert [r["quality"] for r in other_seed] != [r["quality"] for r in rows]


def test_main_prints_tables_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fleet.json"
    # A leading "--" (what a pass-through subcommand parser may hand over) is ignored.
    assert main(["--", *TINY, "--policy", "round-robin", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speed (sim s / wall s)" in printed and "TTFT p50 / p90 / p99 ms" in printed
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "fleet-scale" and len(doc["points"]) == 1
