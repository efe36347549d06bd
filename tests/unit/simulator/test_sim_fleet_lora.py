"""Mixed LoRA adapters: the spread follows the popularity, adapter prompts are per adapter, requests name
their adapter, and a LoRA-enabled fleet runs them (a fleet without LoRA refuses them)."""

from __future__ import annotations

from collections import Counter

import pytest

from simulator.engine.config import EngineConfig
from simulator.fleet import Arrivals, FleetSimulation, LeastLoaded, Length, LoraWorkload, RoundRobin, uniform_fleet


def _counts(w: LoraWorkload) -> Counter[str | None]:
    return Counter(r.lora_name for r in w.requests())


def test_zipf_spread_matches_the_popularity() -> None:
    w = LoraWorkload(20000, Arrivals(100.0), num_adapters=5, zipf_exponent=1.0, seed=2)
    shares = w.shares
    assert list(shares) == ["lora-0", "lora-1", "lora-2", "lora-3", "lora-4"] == list(w.adapters)
    harmonic = 1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5
    assert shares["lora-0"] == pytest.approx(1 / harmonic) and shares["lora-4"] == pytest.approx(1 / 5 / harmonic)
    counts = _counts(w)
    for name, share in shares.items():
        assert counts[name] / 20000 == pytest.approx(share, abs=0.015)
    assert counts["lora-0"] > counts["lora-1"] > counts["lora-2"] > counts["lora-4"]


def test_uniform_spread_and_base_model_share() -> None:
    w = LoraWorkload(12000, Arrivals(100.0), num_adapters=4, popularity="uniform", base_fraction=0.2, seed=1)
    assert w.shares == pytest.approx({None: 0.2, "lora-0": 0.2, "lora-1": 0.2, "lora-2": 0.2, "lora-3": 0.2})
    counts = _counts(w)
    assert set(counts) == {None, "lora-0", "lora-1", "lora-2", "lora-3"}
    assert all(c / 12000 == pytest.approx(0.2, abs=0.015) for c in counts.values())
    assert {r.label for r in w.requests() if r.lora_name is None} == {"base"}


def test_reproducible_and_seed_dependent() -> None:
    def key(seed: int) -> list[tuple[object, ...]]:
        return [(r.request_id, r.arrival_time, tuple(r.prompt_token_ids), r.max_tokens, r.lora_name)
                for r in LoraWorkload(200, Arrivals(20.0), seed=seed).requests()]

    assert key(1) == key(1)
    assert key(1) != key(2)


def test_requests_carry_their_adapter_and_chat_like_lengths() -> None:
    w = LoraWorkload(300, Arrivals(20.0), input_len=Length(40, 10, 20, 60), output_len=Length(7))
    for r in w.requests():
        assert r.lora_name is not None and r.label == r.lora_name
        assert r.engine_request().lora_name == r.lora_name
        assert 20 <= r.prompt_tokens <= 60 and r.max_tokens == 7
        assert r.messages() is None and r.api_path == "/v1/completions"
        assert r.group is None


def test_adapter_prompts_are_shared_within_an_adapter_only() -> None:
    w = LoraWorkload(300, Arrivals(20.0), num_adapters=3, adapter_prompt_len=32, input_len=Length(8), seed=4)
    prefixes: dict[str | None, set[tuple[int, ...]]] = {}
    for r in w.requests():
        assert r.prompt_tokens == 40
        prefixes.setdefault(r.lora_name, set()).add(tuple(r.prompt_token_ids[:32]))
        assert r.lora_name is not None and r.group == int(r.lora_name.rsplit("-", 1)[1])  # one group per adapter
    assert all(len(p) == 1 for p in prefixes.values())
    assert len({next(iter(p)) for p in prefixes.values()}) == 3


def test_validation_and_description() -> None:
    for bad in (dict(num_adapters=0), dict(popularity="pareto"), dict(zipf_exponent=-1.0), dict(base_fraction=1.0),
                dict(adapter_prompt_len=-1), dict(adapter_prefix="")):
        with pytest.raises(ValueError):
            LoraWorkload(1, Arrivals(1.0), **bad)  # type: ignore[arg-type]
    w = LoraWorkload(10, Arrivals(1.0), num_adapters=3)
    assert w.describe()["adapters"] == ["lora-0", "lora-1", "lora-2"]
    assert w.summary().startswith("lora: 3 adapters (zipf s=1: lora-0 55% .. lora-2 18%)")


def test_runs_on_a_lora_enabled_fleet_only() -> None:
    w = LoraWorkload(200, Arrivals(40.0), num_adapters=4, seed=3)
    fleet = uniform_fleet(3, EngineConfig(enable_lora=True, max_loras=2))
    assert all(spec.engine.enable_lora and spec.engine.max_loras == 2 for spec in fleet)
    sim = FleetSimulation(fleet, LeastLoaded())
    run = sim.run(w.requests())
    assert len(run.records) == 200
    assert sum(engine.lora.loads for engine in sim.engines) >= 4  # every adapter was loaded somewhere
    with pytest.raises(ValueError, match="LoRA is not enabled"):
        FleetSimulation(uniform_fleet(2), RoundRobin()).run(w.requests())
