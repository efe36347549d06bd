"""The step-time model against latency-model.md's acceptance table, and profile loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.engine.profile import (
    BLIS_LLAMA_3_1_8B_H100,
    BUILTIN_PROFILES,
    LLAMA_3_1_8B_H100,
    LatencyProfile,
    get_profile,
    load_profile,
    profile_from_mapping,
)

GPU_ONLY = LatencyProfile(step_cpu_s=0.0)


def prefill_ms(n: int, cached: int = 0) -> float:
    return GPU_ONLY.step_time(n, n * (cached + n / 2), 0, 0) * 1e3


def test_cold_and_warm_prefill_match_acceptance_checks() -> None:
    assert prefill_ms(1024) == pytest.approx(21.9 * 1.024 + 0.4, rel=0.02)  # idle 1k: ~22.8 ms before overhead
    assert prefill_ms(7200) == pytest.approx(178, rel=0.01)  # cold 6000 + 1200
    warm = prefill_ms(1200, cached=6000)
    assert warm == pytest.approx(32, rel=0.02)  # 6000-token prefix cached
    assert prefill_ms(7200) / warm == pytest.approx(5.5, rel=0.05)


def test_measured_prefill_points_within_fit_residual() -> None:
    measured = {1024: 22.2, 2048: 44.8, 4096: 93.8, 8192: 208.0}
    for n, ms in measured.items():
        assert prefill_ms(n) == pytest.approx(ms, rel=0.05)
    assert prefill_ms(64) == pytest.approx(5.8)  # the floor


def test_decode_steps() -> None:
    # ITL, 64 decodes at 2k context: 5.8 + 0.5 + 5.4 ms.
    assert GPU_ONLY.step_time(0, 0, 64, 64 * 2048) * 1e3 == pytest.approx(11.7, rel=0.02)
    measured = {(1, 1024): 5.79, (64, 1024): 8.89, (256, 1024): 19.08, (64, 4096): 17.15, (128, 2048): 17.78}
    for (b, length), ms in measured.items():
        assert GPU_ONLY.step_time(0, 0, b, b * length) * 1e3 == pytest.approx(ms, abs=0.3)


def test_prefill_decode_interference_spike() -> None:
    mixed = GPU_ONLY.step_time(8192, 8192 * 4096, 64, 64 * 2048) * 1e3
    assert mixed == pytest.approx(210, rel=0.03)


def test_cpu_efficiency_and_frontend_terms() -> None:
    p = LatencyProfile(efficiency=1.2, step_cpu_s=1e-3)
    assert p.step_time(0, 0, 0, 0) == pytest.approx(5.8e-3 * 1.2 + 1e-3)
    assert LLAMA_3_1_8B_H100.frontend_delay(1000) == pytest.approx(1e-3 + 2e-3)


def test_blis_linear_profile() -> None:
    t = BLIS_LLAMA_3_1_8B_H100.step_time(100, 1e9, 10, 10**9)
    assert t == pytest.approx(5752.7e-6 + 100 * 17.25e-6 + 10 * 6e-6)


def test_yaml_profile_overrides_default(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: llama-70b-tp4\nstep_floor_s: 0.025\nkv_cache_tokens: 900000\n", encoding="utf-8")
    p = load_profile(path)
    assert p.name == "llama-70b-tp4"
    assert p.step_floor_s == 0.025
    assert p.kv_cache_tokens == 900000
    assert p.prefill_per_token_s == LLAMA_3_1_8B_H100.prefill_per_token_s
    assert get_profile(str(path)) == p
    assert get_profile("llama-3.1-8b-h100") is LLAMA_3_1_8B_H100
    assert set(BUILTIN_PROFILES) == {"llama-3.1-8b-h100", "blis-llama-3.1-8b-h100"}


def test_bad_profiles_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        profile_from_mapping({"step_flor_s": 1})
    with pytest.raises(ValueError):
        profile_from_mapping({"kv_cache_tokens": 1.5})
    with pytest.raises(ValueError):
        profile_from_mapping({"step_floor_s": -1})
    with pytest.raises(ValueError):
        profile_from_mapping({"step_floor_s": "fast"})
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ValueError):
        load_profile(path)
