"""``endpoint-picker fleet-sim``: flags to workload, the table, deterministic JSON, and bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from endpoint_picker.cli import build_parser
from simulator.fleet import SharedPrefixWorkload, SyntheticWorkload
from simulator.fleet.cli import build_workload, main


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["fleet-sim", *argv])


def test_flags_build_the_workload() -> None:
    w = build_workload(_args("--workload", "shared-prefix", "--num-groups", "3", "--prompts-per-group", "2",
                             "--system-prompt-len", "64", "--question-len", "20,5", "--output-len", "7",
                             "--rate", "5", "--arrival", "constant", "--num-requests", "9"))
    assert isinstance(w, SharedPrefixWorkload)
    assert (w.num_groups, w.num_prompts_per_group, w.system_prompt_len, w.num_requests) == (3, 2, 64, 9)
    assert w.question_len.std_dev == 5 and w.output_len.mean == 7
    assert (w.arrivals.rate, w.arrivals.kind) == (5.0, "constant")
    mixed = build_workload(_args("--endpoints", "4", "--heavy-fraction", "0.25"))
    assert isinstance(mixed, SyntheticWorkload)
    assert mixed.arrivals.rate == 40.0  # default 10 x endpoints
    assert [c.weight for c in mixed.classes] == [0.75, 0.25]
    decode = build_workload(_args("--workload", "decode-heavy", "--input-len", "100"))
    assert isinstance(decode, SyntheticWorkload) and decode.classes[0].input_len.mean == 100


def test_table_and_timing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--endpoints", "2", "--num-requests", "40", "--workload", "prefill-heavy", "--per-endpoint"]) == 0
    out, err = capsys.readouterr()
    assert "| round-robin |" in out and "| least-loaded |" in out
    assert "| round-robin | 20 | 20 |" in out
    assert "simulated req/s" in err


def test_json_is_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--endpoints", "3", "--num-requests", "60", "--workload", "shared-prefix", "--policy", "random",
            "least-loaded", "--slo-ttft", "0.05", "--scrape-interval", "0.05"]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert main([*argv, "--json", str(first)]) == 0
    assert main([*argv, "--json", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    doc = json.loads(first.read_text())
    assert [r["policy"] for r in doc["reports"]] == ["random", "least-loaded"]
    assert doc["reports"][0]["requests"] == 60 and doc["reports"][0]["goodput_rps"] is not None
    capsys.readouterr()
    assert main([*argv, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workload", "mixed", "--input-len", "10"]) == 2
    assert main(["--heavy-fraction", "1.5"]) == 2
    assert main(["--profile", "/nonexistent/profile.yaml"]) == 2
    assert "fleet-sim:" in capsys.readouterr().err
