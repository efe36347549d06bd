"""Prefix cache: block-granular hits, the recomputed last token, LRU eviction order, usage and counters."""

from __future__ import annotations

import pytest

from simulator.engine import BlockRemoved, Engine, EngineConfig, EngineRequest, RequestResult, StepResult
from simulator.engine.hashing import compute_block_hashes


def finish(engine: Engine, request: EngineRequest) -> tuple[RequestResult, list[StepResult]]:
    engine.add_request(request)
    steps: list[StepResult] = []
    while engine.has_unfinished_requests():
        steps.append(engine.step())
    results = [r for s in steps for r in s.finished if r.request_id == request.request_id]
    assert len(results) == 1
    return results[0], steps


def small_engine(blocks: int = 9) -> Engine:
    # Block size 4 and 8 usable blocks keep the block bookkeeping easy to follow by hand.
    return Engine(EngineConfig(block_size=4, num_gpu_blocks=blocks, max_model_len=32, enable_kv_cache_events=True))


def tokens(base: int, n: int) -> list[int]:
    return list(range(base, base + n))


def test_hits_are_whole_blocks_and_last_token_is_recomputed() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100))
    prompt = tokens(0, 32)
    first, _ = finish(engine, EngineRequest("a", prompt, max_tokens=1))
    second, _ = finish(engine, EngineRequest("b", prompt, max_tokens=1))
    assert first.cached_tokens == 0
    assert second.cached_tokens == 16  # at most 31 tokens may hit: one whole block
    longer, _ = finish(engine, EngineRequest("c", [*prompt, 7, 7, 7], max_tokens=1))
    assert longer.cached_tokens == 32
    m = engine.metrics()
    assert m.prefix_cache_queries == 32 + 32 + 35
    assert m.prefix_cache_hits == 0 + 16 + 32
    assert m.prompt_tokens_cached == 48


def test_lru_evicts_least_recent_prefix_tail_first() -> None:
    engine = small_engine()
    finish(engine, EngineRequest("a", tokens(100, 8), max_tokens=1))
    finish(engine, EngineRequest("b", tokens(200, 8), max_tokens=1))
    finish(engine, EngineRequest("c", tokens(300, 8), max_tokens=1))
    # Each request freed its blocks tail first onto the LRU tail; unused blocks come first.
    assert engine.kv.free_queue_ids() == [7, 8, 2, 1, 4, 3, 6, 5]
    assert engine.metrics().kv_cache_usage_perc == 0.0  # unreferenced cached blocks count as free
    _, steps = finish(engine, EngineRequest("d", tokens(400, 16), max_tokens=1))
    removed = [e.block_hashes[0] for s in steps for e in s.kv_events if isinstance(e, BlockRemoved)]
    a_hashes = compute_block_hashes(tokens(100, 8), 4)
    assert removed == [a_hashes[1], a_hashes[0]]  # "a" was least recent; its tail block went first
    b_again, _ = finish(engine, EngineRequest("b2", tokens(200, 8), max_tokens=1))
    a_again, _ = finish(engine, EngineRequest("a2", tokens(100, 8), max_tokens=1))
    assert a_again.cached_tokens == 0
    assert b_again.cached_tokens == 4


def test_a_hit_refreshes_recency() -> None:
    engine = small_engine()
    finish(engine, EngineRequest("a", tokens(100, 8), max_tokens=1))
    finish(engine, EngineRequest("b", tokens(200, 8), max_tokens=1))
    finish(engine, EngineRequest("c", tokens(300, 8), max_tokens=1))
    touched, _ = finish(engine, EngineRequest("a+", [*tokens(100, 8), 1, 2, 3, 4], max_tokens=1))
    assert touched.cached_tokens == 8
    _, steps = finish(engine, EngineRequest("d", tokens(400, 16), max_tokens=1))
    removed = {e.block_hashes[0] for s in steps for e in s.kv_events if isinstance(e, BlockRemoved)}
    b_hashes = set(compute_block_hashes(tokens(200, 8), 4))
    c_tail = compute_block_hashes(tokens(300, 8), 4)[1]
    assert removed == b_hashes | {c_tail}
    assert finish(engine, EngineRequest("a3", [*tokens(100, 8), 1, 2, 3, 4, 5], max_tokens=1))[0].cached_tokens == 12


def test_usage_counts_referenced_blocks_only() -> None:
    engine = Engine(EngineConfig(block_size=16, num_gpu_blocks=101))
    engine.add_request(EngineRequest("r", tokens(0, 160), max_tokens=50))
    engine.step()
    m = engine.metrics()
    assert m.num_requests_running == 1
    # 160 prompt tokens hold 10 blocks; the first generated token's slot comes with the next step.
    assert m.kv_cache_usage_perc == pytest.approx(10 / 100)
    while engine.has_unfinished_requests():
        engine.step()
    m = engine.metrics()
    assert m.kv_cache_usage_perc == 0.0
    assert m.num_cached_blocks == (160 + 49) // 16  # every full block computed stays cached
    assert m.num_free_blocks == 100


def test_prefix_caching_disabled_means_no_hits() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100, enable_prefix_caching=False, enable_kv_cache_events=True))
    finish(engine, EngineRequest("a", tokens(0, 64), max_tokens=1))
    again, steps = finish(engine, EngineRequest("b", tokens(0, 64), max_tokens=1))
    assert again.cached_tokens == 0
    assert all(not s.kv_events for s in steps)
    assert engine.metrics().prefix_cache_queries == 0


def test_uncached_partial_blocks_are_reused_first() -> None:
    engine = small_engine()
    finish(engine, EngineRequest("a", tokens(100, 6), max_tokens=1))
    # Block 1 (full, cached) joins the LRU tail; block 2 (partial, never matchable) goes to the head.
    assert engine.kv.free_queue_ids() == [2, 3, 4, 5, 6, 7, 8, 1]
