"""Staged arrivals: the CLI syntax and its errors, per-stage counts, windows and rates, and every workload
driven by stages (request count from rate x duration, each request knowing its stage)."""

from __future__ import annotations

import itertools
import random
import statistics
from dataclasses import replace

import pytest

from simulator.fleet import (
    Arrivals,
    Length,
    LoraWorkload,
    MultiTurnWorkload,
    SharedPrefixWorkload,
    Stage,
    Stages,
    SyntheticWorkload,
)
from simulator.fleet.load import schedule


def test_parse_the_cli_form() -> None:
    s = Stages.parse("poisson:5x30,10x30,15x30")
    assert s == Stages((Stage(5, 30), Stage(10, 30), Stage(15, 30)), "poisson")
    assert Stages.parse(" constant : 2.5x4s , 1x2 ") == Stages.of([(2.5, 4), (1, 2)], "constant")
    assert Stages.parse("3x10", default_kind="constant").kind == "constant"
    assert Stages.parse("3X10").stages == (Stage(3, 10),)


@pytest.mark.parametrize(("text", "message"), [
    ("", "no stage given"),
    ("poisson:", "no stage given"),
    ("bursty:5x30", "unknown arrival kind 'bursty'"),
    ("5x30,10", "stage 2 is '10', expected RATExDURATION"),
    ("5x30,x30", "stage 2 is 'x30'"),
    ("5x", "stage 1 is '5x'"),
    ("fivex30", "stage 1 ('fivex30') needs numbers"),
    ("5x30,0x10", "stage 2: stage rate must be a finite number > 0"),
    ("infx10", "stage 1: stage rate must be a finite number > 0"),
    ("5x-1", "stage 1: stage duration must be"),
    ("0.1x2", "sends no request"),
])
def test_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="bad stages") as exc:
        Stages.parse(text)
    assert message in str(exc.value)


def test_counts_boundaries_and_description() -> None:
    s = Stages.of([(5, 30), (10.5, 2), (0.25, 6)], "constant", start=1.0)
    assert s.counts == (150, 21, 2)  # 10.5 x 2 = 21; 0.25 x 6 = 1.5 rounds half up to 2
    assert s.num_requests == 173 and s.duration == 38
    assert s.boundaries == ((1.0, 31.0), (31.0, 33.0), (33.0, 39.0))
    assert str(s) == "constant stages 5x30s, 10.5x2s, 0.25x6s (req/s x s)"
    assert s.describe() == {"kind": "constant", "stages": [{"rate": 5, "duration": 30}, {"rate": 10.5, "duration": 2},
                                                           {"rate": 0.25, "duration": 6}]}
    with pytest.raises(ValueError):
        Stages(())
    with pytest.raises(ValueError):
        Stages.of([(1, 1)], "bursty")  # type: ignore[arg-type]


def test_constant_stages_are_evenly_spaced_inside_their_windows() -> None:
    s = Stages.of([(4, 1), (2, 2)], "constant")
    assert list(s.times(random.Random(0))) == [(0.0, 0), (0.25, 0), (0.5, 0), (0.75, 0),
                                               (1.0, 1), (1.5, 1), (2.0, 1), (2.5, 1)]


def test_poisson_stages_have_exact_counts_and_the_stage_rate() -> None:
    s = Stages.of([(50, 40), (200, 20), (100, 30)])
    out = list(s.times(random.Random(4)))
    assert [t for t, _ in out] == sorted(t for t, _ in out)
    for k, ((lo, hi), stage) in enumerate(zip(s.boundaries, s.stages, strict=True)):
        times = [t for t, i in out if i == k]
        assert len(times) == stage.count
        assert all(lo <= t < hi for t in times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert statistics.fmean(gaps) == pytest.approx(1 / stage.rate, rel=0.05)
        # Exponential-like gaps: standard deviation close to the mean (a constant process has 0).
        assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.1)
    assert list(s.times(random.Random(4))) == out
    assert list(s.times(random.Random(5))) != out


def test_schedule_keeps_arrivals_as_before_and_checks_the_pair() -> None:
    arrivals = Arrivals(10.0)
    expected = arrivals.times(random.Random(1))
    assert list(schedule(5, arrivals, random.Random(1))) == [(next(expected), 0) for _ in range(5)]
    with pytest.raises(ValueError, match="follows from the stages"):
        SharedPrefixWorkload(10, Stages.parse("1x5"))
    with pytest.raises(ValueError, match="num_requests is required"):
        SyntheticWorkload(None, Arrivals(1.0))
    with pytest.raises(ValueError, match="num_requests must be >= 0"):
        SyntheticWorkload(-1, Arrivals(1.0))
    with pytest.raises(TypeError):
        SyntheticWorkload(1, 5.0)  # type: ignore[arg-type]
    assert SharedPrefixWorkload(5, Stages.parse("1x5")).request_count == 5  # a matching count is accepted


STAGES = Stages.parse("poisson:20x2,40x2,60x1")


@pytest.mark.parametrize("make", [
    lambda load: SharedPrefixWorkload(None, load, num_groups=2, num_prompts_per_group=3, system_prompt_len=8,
                                      question_len=Length(4), output_len=Length(3), seed=1),
    lambda load: SyntheticWorkload.preset("mixed", None, load, seed=1),
    lambda load: MultiTurnWorkload(None, load, num_groups=2, conversations_per_group=3, num_turns=3,
                                   system_prompt_len=8, question_len=Length(4), output_len=Length(3), seed=1),
    lambda load: LoraWorkload(None, load, num_adapters=3, seed=1),
], ids=["shared-prefix", "mixed", "multi-turn", "lora"])
def test_every_workload_runs_in_stages(make) -> None:  # type: ignore[no-untyped-def]
    w = make(STAGES)
    requests = list(w.requests())
    assert w.request_count == len(requests) == 40 + 80 + 60
    assert [sum(1 for r in requests if r.stage == k) for k in range(3)] == [40, 80, 60]
    assert [r.stage for r in requests] == sorted(r.stage for r in requests)
    for r in requests:
        lo, hi = STAGES.boundaries[r.stage]
        assert lo <= r.arrival_time < hi
    again = [(r.request_id, r.arrival_time, r.stage, tuple(r.prompt_token_ids)) for r in make(STAGES).requests()]
    assert again == [(r.request_id, r.arrival_time, r.stage, tuple(r.prompt_token_ids)) for r in requests]
    assert w.describe()["arrivals"] == STAGES.describe()
    assert w.describe()["num_requests"] == 180
    assert "poisson stages 20x2s, 40x2s, 60x1s" in w.summary()
    # Driven by one rate instead, the same recipe sends num_requests, all in stage 0.
    single = list(replace(w, num_requests=7, arrivals=Arrivals(5.0)).requests())
    assert len(single) == 7 and all(r.stage == 0 for r in single)
