"""Continuous batching: token budget, decode-first chunked prefill, sequence limit, KV admission gate,
FCFS without overtaking, preemption by recompute, abort, idle clock jumps and determinism."""

from __future__ import annotations

import random

import pytest

from simulator.engine import Engine, EngineConfig, EngineRequest, LatencyProfile, RequestResult, StepResult


def drive(engine: Engine, requests: list[EngineRequest]) -> tuple[dict[str, RequestResult], list[StepResult]]:
    """Feed requests at their arrival times and step until everything finished."""
    pending = sorted(requests, key=lambda r: (r.arrival_time or 0.0, r.request_id))
    results: dict[str, RequestResult] = {}
    steps: list[StepResult] = []
    i = 0
    while i < len(pending) or engine.has_unfinished_requests():
        t = engine.next_event_time()
        while i < len(pending) and (t is None or (pending[i].arrival_time or 0.0) <= t):
            engine.add_request(pending[i])
            i += 1
            t = engine.next_event_time()
        step = engine.step()
        steps.append(step)
        for r in step.finished:
            results[r.request_id] = r
    return results, steps


def prompt(base: int, n: int) -> list[int]:
    return list(range(base, base + n))


def test_token_budget_is_respected_and_used() -> None:
    engine = Engine(EngineConfig(max_num_batched_tokens=64, num_gpu_blocks=200))
    reqs = [EngineRequest(f"r{i}", prompt(1000 * i, 50), max_tokens=5, arrival_time=0.0) for i in range(6)]
    results, steps = drive(engine, reqs)
    assert len(results) == 6
    assert all(s.num_scheduled_tokens <= 64 for s in steps)
    assert max(s.num_scheduled_tokens for s in steps) == 64
    assert any(s.num_decode_tokens and s.num_prefill_tokens for s in steps)  # mixed steps exist
    assert all(r.output_tokens == 5 for r in results.values())


def test_decodes_go_first_and_feel_the_prefill_chunk() -> None:
    engine = Engine(EngineConfig(max_num_batched_tokens=512, num_gpu_blocks=500))
    engine.add_request(EngineRequest("short", prompt(0, 10), max_tokens=30, arrival_time=0.0))
    engine.step()  # "short" prefilled, now decoding
    engine.step()
    plain_itl = engine.step().duration
    engine.add_request(EngineRequest("long", prompt(5000, 2000), max_tokens=1, arrival_time=engine.now))
    chunk_steps = []
    while engine.has_unfinished_requests():
        s = engine.step()
        if s.num_prefill_tokens:
            chunk_steps.append(s)
    assert [s.num_prefill_tokens for s in chunk_steps] == [511, 511, 511, 467]
    assert all(s.num_decode_tokens == 1 for s in chunk_steps)
    assert all(s.duration > 1.5 * plain_itl for s in chunk_steps[:3])  # interference: decode ITL stretched


def test_max_num_seqs_caps_the_running_batch() -> None:
    engine = Engine(EngineConfig(max_num_seqs=2, num_gpu_blocks=200))
    reqs = [EngineRequest(f"r{i}", prompt(100 * i, 20), max_tokens=3, arrival_time=0.0) for i in range(5)]
    engine_steps = []
    for r in reqs:
        engine.add_request(r)
    waiting_seen = 0
    while engine.has_unfinished_requests():
        engine_steps.append(engine.step())
        m = engine.metrics()
        assert m.num_requests_running <= 2
        waiting_seen = max(waiting_seen, m.num_requests_waiting)
    assert waiting_seen == 3
    assert all(s.num_scheduled_requests <= 2 for s in engine_steps)


def small_kv(**overrides: object) -> EngineConfig:
    # 12 usable blocks of 4 tokens = 48 tokens of KV.
    base: dict[str, object] = dict(block_size=4, num_gpu_blocks=13, max_model_len=48)
    base.update(overrides)
    return EngineConfig(**base)  # type: ignore[arg-type]


def test_preemption_recomputes_the_newest_request() -> None:
    engine = Engine(small_kv())
    reqs = [
        EngineRequest("a-old", prompt(0, 8), max_tokens=28, arrival_time=0.0),
        EngineRequest("b-new", prompt(100, 8), max_tokens=28, arrival_time=0.0),
    ]
    results, steps = drive(engine, reqs)
    preempted = [rid for s in steps for rid in s.preempted]
    assert preempted and set(preempted) == {"b-new"}
    assert results["a-old"].num_preemptions == 0
    assert results["b-new"].num_preemptions == len(preempted)
    assert engine.metrics().num_preemptions == len(preempted)
    assert results["a-old"].output_tokens == results["b-new"].output_tokens == 28
    # Resuming hit the prefix cache: what survived of its own freed blocks.
    assert engine.metrics().preempted_prefix_cache_hits > 0
    # The old request was never slowed down by losing its KV: it finishes first.
    assert results["a-old"].finish_time < results["b-new"].finish_time
    assert engine.metrics().preempted_prefix_cache_queries > 0
    assert engine.metrics().kv_cache_usage_perc == 0.0


def test_admission_needs_room_for_the_whole_prompt_and_is_fcfs() -> None:
    engine = Engine(small_kv(max_num_batched_tokens=8))
    reqs = [
        EngineRequest("big-running", prompt(0, 24), max_tokens=12, arrival_time=0.0),
        EngineRequest("needs-10-blocks", prompt(100, 40), max_tokens=1, arrival_time=0.05),
        EngineRequest("tiny", prompt(200, 4), max_tokens=1, arrival_time=0.06),
    ]
    results, _ = drive(engine, reqs)
    big, needy, tiny = results["big-running"], results["needs-10-blocks"], results["tiny"]
    # The 40-token prompt's first 8-token chunk would fit, but the whole prompt must: it waits for "big".
    assert needy.first_scheduled_time is not None and needy.first_scheduled_time >= big.finish_time
    # "tiny" fits all along but does not overtake the head of the queue.
    assert tiny.first_scheduled_time is not None and tiny.first_scheduled_time >= needy.first_scheduled_time


def test_abort_everywhere() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100, max_num_seqs=1))
    engine.add_request(EngineRequest("run", prompt(0, 64), max_tokens=100, arrival_time=0.0))
    engine.add_request(EngineRequest("wait", prompt(100, 64), max_tokens=5, arrival_time=0.0))
    engine.add_request(EngineRequest("later", prompt(200, 64), max_tokens=5, arrival_time=10.0))
    engine.step()
    assert engine.num_running == 1 and engine.num_waiting == 1
    assert engine.metrics().kv_cache_usage_perc > 0
    running = engine.abort("run")
    assert running is not None and running.finish_reason == "abort" and running.output_tokens == 1
    assert engine.metrics().kv_cache_usage_perc == 0.0
    waiting = engine.abort("wait")
    assert waiting is not None and waiting.first_scheduled_time is None
    later = engine.abort("later")
    assert later is not None and later.first_token_time is None
    assert engine.abort("nope") is None
    assert not engine.has_unfinished_requests()
    assert engine.next_event_time() is None
    assert engine.metrics().request_success == {"abort": 3}
    assert engine.step().idle


def test_idle_engine_jumps_to_the_next_ready_request() -> None:
    profile = LatencyProfile()
    engine = Engine(EngineConfig(num_gpu_blocks=100))
    engine.add_request(EngineRequest("r", prompt(0, 100), max_tokens=1, arrival_time=5.0))
    ready = 5.0 + profile.frontend_delay(100)
    assert engine.next_event_time() == pytest.approx(ready)
    step = engine.step()
    assert step.start_time == pytest.approx(ready)
    assert step.finished[0].queue_time == pytest.approx(0.0)


def test_duplicate_and_oversized_requests_are_rejected() -> None:
    engine = Engine(small_kv())
    engine.add_request(EngineRequest("r", prompt(0, 8), max_tokens=1))
    with pytest.raises(ValueError):
        engine.add_request(EngineRequest("r", prompt(0, 8), max_tokens=1))
    with pytest.raises(ValueError):
        engine.add_request(EngineRequest("huge", prompt(0, 49), max_tokens=1))
    with pytest.raises(ValueError):
        EngineConfig(block_size=4, num_gpu_blocks=13, max_model_len=49)


def test_stop_length_and_max_model_len() -> None:
    engine = Engine(small_kv())
    results, _ = drive(
        engine,
        [
            EngineRequest("eos", prompt(0, 8), max_tokens=10, output_len=3, arrival_time=0.0),
            EngineRequest("cap", prompt(100, 8), max_tokens=4, arrival_time=0.0),
            EngineRequest("ctx", prompt(200, 40), max_tokens=100, arrival_time=1.0),
            EngineRequest("echo", prompt(300, 4), max_tokens=3, output_token_ids=[7, 8], arrival_time=2.0),
        ],
    )
    assert (results["eos"].finish_reason, results["eos"].output_tokens) == ("stop", 3)
    assert (results["cap"].finish_reason, results["cap"].output_tokens) == ("length", 4)
    assert (results["ctx"].finish_reason, results["ctx"].output_tokens) == ("length", 8)
    assert results["echo"].output_token_ids[:2] == [7, 8] and results["echo"].output_tokens == 3
    m = engine.metrics()
    assert m.request_success == {"stop": 1, "length": 3}
    assert m.prompt_tokens == 8 + 8 + 40 + 4
    assert m.generation_tokens == 3 + 4 + 8 + 3


def random_workload(seed: int, n: int = 40) -> list[EngineRequest]:
    rng = random.Random(seed)
    prefixes = [prompt(10_000 * k, 64) for k in range(4)]
    t = 0.0
    reqs = []
    for i in range(n):
        t += rng.expovariate(200.0)
        body = [rng.randrange(50_000) for _ in range(rng.randrange(1, 40))]
        reqs.append(
            EngineRequest(f"q{i}", rng.choice(prefixes) + body, max_tokens=rng.randrange(1, 40), arrival_time=t)
        )
    return reqs


def fingerprint(engine_seed: int) -> tuple[object, ...]:
    cfg = EngineConfig(
        block_size=16,
        num_gpu_blocks=20,
        max_model_len=300,
        max_num_batched_tokens=128,
        enable_kv_cache_events=True,
        seed=engine_seed,
        profile=LatencyProfile(jitter=0.05),
    )
    engine = Engine(cfg)
    results, steps = drive(engine, random_workload(7))
    return (
        sorted(
            (r.request_id, tuple(r.output_token_ids), tuple(r.token_times), r.cached_tokens)
            for r in results.values()
        ),
        [(s.start_time, s.end_time, tuple(s.tokens), tuple(s.kv_events), tuple(s.preempted)) for s in steps],
        engine.metrics(),
    )


def test_deterministic_for_a_seed() -> None:
    first = fingerprint(3)
    assert first == fingerprint(3)
    metrics = first[2]
    assert metrics.num_preemptions > 0 and metrics.prefix_cache_hits > 0  # the workload exercises both
    other = fingerprint(4)
    assert other[0] != first[0]
