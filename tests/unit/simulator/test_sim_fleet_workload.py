"""Fleet workloads: reproducible from the seed, arrival processes, inference-perf's shared-prefix shape,
synthetic classes and length distributions."""

from __future__ import annotations

import itertools
import random

import pytest

from simulator.engine.tokenizer import encode
from simulator.fleet import Arrivals, Length, RequestClass, SharedPrefixWorkload, SyntheticWorkload


def _key(workload: SharedPrefixWorkload | SyntheticWorkload) -> list[tuple[object, ...]]:
    return [(r.request_id, r.arrival_time, tuple(r.prompt_token_ids), r.max_tokens, r.label)
            for r in workload.requests()]


def test_constant_arrivals_are_evenly_spaced() -> None:
    times = list(itertools.islice(Arrivals(4.0, "constant", start=1.0).times(random.Random(0)), 5))
    assert times == pytest.approx([1.0, 1.25, 1.5, 1.75, 2.0])


def test_poisson_arrivals_have_the_requested_mean_rate() -> None:
    times = list(itertools.islice(Arrivals(50.0).times(random.Random(3)), 20001))
    assert times == sorted(times)
    assert 20000 / times[-1] == pytest.approx(50.0, rel=0.03)


def test_infinite_rate_sends_everything_at_start() -> None:
    assert list(itertools.islice(Arrivals(float("inf")).times(random.Random(0)), 3)) == [0.0, 0.0, 0.0]


def test_bad_arrivals_are_rejected() -> None:
    with pytest.raises(ValueError):
        Arrivals(0.0)
    with pytest.raises(ValueError):
        Arrivals(1.0, "bursty")  # type: ignore[arg-type]


def test_length_fixed_and_distribution() -> None:
    rng = random.Random(0)
    assert Length(7).sample(rng) == 7
    dist = Length(100, 50, 20, 150)
    values = [dist.sample(rng) for _ in range(2000)]
    assert min(values) == 20 and max(values) == 150
    assert 90 < sum(values) / len(values) < 110


def test_length_parse() -> None:
    assert Length.parse("128") == Length(128)
    assert Length.parse("100,10") == Length(100, 10.0)
    assert Length.parse("100,10,50,200") == Length(100, 10.0, 50, 200)
    for bad in ("x", "1,2,3,4,5", "0"):
        with pytest.raises(ValueError):
            Length.parse(bad)


def test_shared_prefix_is_reproducible_and_seed_dependent() -> None:
    def make(seed: int) -> SharedPrefixWorkload:
        return SharedPrefixWorkload(60, Arrivals(10.0), num_groups=3, num_prompts_per_group=4, seed=seed)

    assert _key(make(1)) == _key(make(1))
    assert _key(make(1)) == _key(make(1))  # a workload replays: requests() is fresh every call
    assert _key(make(1)) != _key(make(2))


def test_shared_prefix_shape_matches_inference_perf() -> None:
    w = SharedPrefixWorkload(30, Arrivals(10.0), num_groups=3, num_prompts_per_group=5, system_prompt_len=40,
                             question_len=Length(8), output_len=Length(12), seed=7)
    requests = list(w.requests())
    prompts = {}
    for i, r in enumerate(requests):
        assert r.prompt_tokens == 48 and r.max_tokens == 12
        assert r.group is not None
        prompts.setdefault(i % 15, tuple(r.prompt_token_ids))
        assert tuple(r.prompt_token_ids) == prompts[i % 15]  # request i uses prompt i % N
    by_group: dict[int, set[tuple[int, ...]]] = {}
    for r in requests:
        assert r.group is not None
        by_group.setdefault(r.group, set()).add(tuple(r.prompt_token_ids[:40]))
    assert sorted(by_group) == [0, 1, 2]
    assert all(len(systems) == 1 for systems in by_group.values())  # one system prompt per group
    assert len({next(iter(s)) for s in by_group.values()}) == 3  # and the groups differ
    assert len(prompts) == 15  # every (group, question) pair distinct


def test_prompt_text_retokenizes_to_the_same_ids() -> None:
    r = next(iter(SharedPrefixWorkload(1, Arrivals(1.0), system_prompt_len=64).requests()))
    assert encode(r.text) == list(r.prompt_token_ids)


def test_synthetic_classes_follow_their_weights_and_lengths() -> None:
    w = SyntheticWorkload.preset("mixed", 4000, Arrivals(100.0), seed=5)
    requests = list(w.requests())
    heavy = [r for r in requests if r.label == "heavy"]
    assert 0.08 < len(heavy) / len(requests) < 0.12
    assert all(2000 <= r.prompt_tokens <= 8000 for r in heavy)
    assert all(32 <= r.prompt_tokens <= 512 for r in requests if r.label == "light")
    assert _key(w) == _key(SyntheticWorkload.preset("mixed", 4000, Arrivals(100.0), seed=5))


def test_synthetic_custom_class_and_errors() -> None:
    cls = RequestClass("only", 1.0, Length(10), Length(3))
    requests = list(SyntheticWorkload(5, Arrivals(1.0, "constant"), (cls,)).requests())
    assert [(r.prompt_tokens, r.max_tokens, r.arrival_time) for r in requests] == [(10, 3, float(i)) for i in range(5)]
    with pytest.raises(ValueError):
        SyntheticWorkload.preset("nope", 1, Arrivals(1.0))
    with pytest.raises(ValueError):
        SyntheticWorkload(1, Arrivals(1.0), ())
