"""A lone request's TTFT and TPOT follow the latency model's formula; cache hits and chunking change them."""

from __future__ import annotations

import pytest

from simulator.engine import Engine, EngineConfig, EngineRequest, LatencyProfile, RequestResult

PROFILE = LatencyProfile()


def run_alone(engine: Engine, request: EngineRequest) -> RequestResult:
    engine.add_request(request)
    while True:
        step = engine.step()
        for result in step.finished:
            if result.request_id == request.request_id:
                return result


def prefill_time(chunks: list[int], cached: int = 0) -> float:
    total = 0.0
    done = cached
    for n in chunks:
        total += PROFILE.step_time(n, n * (done + n / 2), 0, 0)
        done += n
    return total


def test_single_request_ttft_and_tpot_match_formula() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=500))
    n = 1000
    result = run_alone(engine, EngineRequest("r", list(range(n)), max_tokens=20, arrival_time=0.0))
    expected_ttft = PROFILE.frontend_delay(n) + prefill_time([n])
    assert result.ttft == pytest.approx(expected_ttft, rel=1e-9)
    # The j-th token (j >= 2) comes from a decode step over a context of n + j - 1 tokens.
    expected_itls = [PROFILE.step_time(0, 0, 1, n + j - 1) for j in range(2, 21)]
    assert result.inter_token_latencies == pytest.approx(expected_itls, rel=1e-9)
    assert result.tpot == pytest.approx(sum(expected_itls) / 19, rel=1e-9)
    assert result.output_tokens == 20 and result.finish_reason == "length"
    # Magnitudes from latency-model.md: ~25 ms idle TTFT for 1k tokens, ~6 ms ITL at batch 1.
    assert 0.020 < result.ttft < 0.030
    assert 0.0058 < result.tpot < 0.0070


def test_prefix_hit_cuts_ttft_as_the_model_predicts() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=1000))
    prefix = list(range(100_000, 106_000))
    cold = run_alone(engine, EngineRequest("cold", prefix + list(range(1200)), max_tokens=1, arrival_time=0.0))
    start = engine.now
    warm = run_alone(
        engine, EngineRequest("warm", prefix + list(range(5000, 6200)), max_tokens=1, arrival_time=start)
    )
    assert cold.cached_tokens == 0
    assert warm.cached_tokens == 6000  # 375 whole blocks
    assert cold.ttft == pytest.approx(PROFILE.frontend_delay(7200) + prefill_time([7200]), rel=1e-9)
    assert warm.ttft == pytest.approx(PROFILE.frontend_delay(7200) + prefill_time([1200], cached=6000), rel=1e-9)
    # Engine time alone (without the frontend): ~178 ms cold vs ~32 ms warm.
    assert cold.first_token_time - cold.ready_time == pytest.approx(0.178 + 0.0005, rel=0.02)
    assert warm.first_token_time - warm.ready_time == pytest.approx(0.032 + 0.0005, rel=0.03)


def test_long_prompt_is_chunked_by_the_token_budget() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=2000))
    n = 20_000
    engine.add_request(EngineRequest("long", list(range(n)), max_tokens=2, arrival_time=0.0))
    steps = []
    while engine.has_unfinished_requests():
        steps.append(engine.step())
    assert [s.num_prefill_tokens for s in steps[:3]] == [8192, 8192, 3616]
    assert steps[0].tokens == [] and steps[1].tokens == []
    assert len(steps[2].tokens) == 1
    first_token_time = steps[2].end_time
    assert first_token_time == pytest.approx(PROFILE.frontend_delay(n) + prefill_time([8192, 8192, 3616]), rel=1e-9)
