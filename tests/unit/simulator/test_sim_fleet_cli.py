"""``endpoint-picker fleet-sim``: flags to workload (all workloads, stages, the stand-alone workload flags), the
table, deterministic JSON, and bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from endpoint_picker.cli import build_parser
from simulator.fleet import (
    Arrivals,
    Length,
    LoraWorkload,
    MultiTurnWorkload,
    SharedPrefixWorkload,
    Stages,
    SyntheticWorkload,
)
from simulator.fleet.cli import add_workload_arguments, build_workload, main


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


def test_flags_build_multi_turn_lora_and_stages() -> None:
    w = build_workload(_args("--workload", "multi-turn", "--num-groups", "2", "--conversations-per-group", "3",
                             "--num-turns", "4", "--system-prompt-len", "32", "--question-len", "12",
                             "--output-len", "9", "--stages", "constant:2x5,4x5"))
    assert isinstance(w, MultiTurnWorkload)
    assert (w.num_groups, w.conversations_per_group, w.num_turns, w.system_prompt_len) == (2, 3, 4, 32)
    assert w.num_requests is None and w.request_count == 30
    assert w.arrivals == Stages.of([(2, 5), (4, 5)], "constant")
    lora = build_workload(_args("--workload", "lora", "--num-adapters", "3", "--adapter-popularity", "uniform",
                                "--base-model-fraction", "0.25", "--adapter-prompt-len", "16", "--input-len", "40",
                                "--rate", "7", "--num-requests", "50"))
    assert isinstance(lora, LoraWorkload)
    assert (lora.num_adapters, lora.popularity, lora.base_fraction, lora.adapter_prompt_len) == (3, "uniform", 0.25, 16)
    assert lora.input_len == Length(40) and lora.output_len == LoraWorkload(1, Arrivals(1.0)).output_len
    assert (lora.num_requests, lora.arrivals) == (50, Arrivals(7.0))
    staged = build_workload(_args("--workload", "mixed", "--stages", "3x10", "--arrival", "constant"))
    assert isinstance(staged, SyntheticWorkload) and staged.arrivals == Stages.of([(3, 10)], "constant")
    assert build_workload(_args()).num_requests == 2000  # type: ignore[attr-defined]


def test_workload_flags_stand_alone() -> None:
    parser = argparse.ArgumentParser()
    add_workload_arguments(parser)
    w = build_workload(parser.parse_args(["--workload", "shared-prefix", "--stages", "poisson:1x4,2x4"]))
    assert isinstance(w, SharedPrefixWorkload) and w.request_count == 12
    with pytest.raises(ValueError, match="give --rate or --stages"):
        build_workload(parser.parse_args([]))  # no --endpoints to derive a default rate from
    # String defaults (what a benchmark sets with set_defaults) go through the same parsing.
    parser.set_defaults(workload="shared-prefix", question_len="40", stages="constant:2x3")
    w = build_workload(parser.parse_args([]))
    assert isinstance(w, SharedPrefixWorkload) and w.question_len == Length(40) and w.request_count == 6


@pytest.mark.parametrize(("argv", "message"), [
    (["--stages", "5x10", "--rate", "3"], "--rate and --stages exclude each other"),
    (["--stages", "5x10", "--num-requests", "3"], "--num-requests and --stages exclude each other"),
    (["--stages", "5x10,10"], "stage 2 is '10', expected RATExDURATION"),
    (["--stages", "burst:5x10"], "unknown arrival kind 'burst'"),
    (["--stages", "5x0"], "stage duration must be"),
    (["--workload", "lora", "--no-enable-lora"], "needs LoRA-enabled engines"),
    (["--workload", "lora", "--base-model-fraction", "1"], "base_fraction must be in [0, 1)"),
    (["--workload", "multi-turn", "--system-prompt-len", "-1"], "system_prompt_len must be >= 0"),
])
def test_new_flags_bad_input_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "fleet-sim:" in err and message in err


def test_lora_workload_runs_on_lora_engines(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--endpoints", "2", "--workload", "lora", "--num-adapters", "3", "--max-loras", "2",
            "--stages", "constant:10x2,20x1", "--policy", "round-robin", "--json", "-"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["workload"]["type"] == "lora" and doc["workload"]["num_requests"] == 40
    assert doc["reports"][0]["requests"] == 40
    assert main(["--endpoints", "2", "--workload", "multi-turn", "--num-groups", "2", "--conversations-per-group",
                 "2", "--num-turns", "3", "--num-requests", "24", "--rate", "20", "--policy", "round-robin"]) == 0
    assert "multi-turn: 2 groups x 2 conversations x 3 turns" in capsys.readouterr().out
