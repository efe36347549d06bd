"""KV-cache events: what BlockStored/BlockRemoved/AllBlocksCleared carry, when, and that replaying them
reproduces the engine's cache exactly."""

from __future__ import annotations

import random
from collections import Counter

from simulator.engine import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Engine,
    EngineConfig,
    EngineRequest,
    KVCacheEvent,
    StepResult,
    to_event_hash,
)
from simulator.engine.hashing import compute_block_hashes


def run(engine: Engine) -> list[StepResult]:
    steps = []
    while engine.has_unfinished_requests():
        steps.append(engine.step())
    return steps


def events_of(steps: list[StepResult]) -> list[KVCacheEvent]:
    return [e for s in steps for e in s.kv_events]


def test_chunked_prefill_stores_blocks_per_step_with_parent_chain() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100, max_num_batched_tokens=40, enable_kv_cache_events=True))
    prompt = [random.Random(1).randrange(100_000) for _ in range(100)]
    engine.add_request(EngineRequest("r", prompt, max_tokens=1))
    steps = run(engine)
    stored = [e for e in events_of(steps) if isinstance(e, BlockStored)]
    expected = compute_block_hashes(prompt, 16)
    # Chunks of 40 tokens complete blocks 0-1, 2-4, 5 (the 4-token tail is never stored).
    assert [e.block_hashes for e in stored] == [expected[0:2], expected[2:5], expected[5:6]]
    assert [e.parent_block_hash for e in stored] == [None, expected[1], expected[4]]
    assert [e.token_ids for e in stored] == [prompt[0:32], prompt[32:80], prompt[80:96]]
    assert all(e.block_size == 16 and e.medium == "GPU" and e.lora_id is None for e in stored)
    assert all(e.extra_keys == [None] * len(e.block_hashes) for e in stored)
    assert [len(s.kv_events) for s in steps] == [1, 1, 1]


def test_decode_filled_blocks_are_stored_when_computed() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100, enable_kv_cache_events=True))
    prompt = list(range(10))
    engine.add_request(EngineRequest("r", prompt, max_tokens=40))
    steps = run(engine)
    result = steps[-1].finished[0]
    all_tokens = prompt + result.output_token_ids
    stored = [e for e in events_of(steps) if isinstance(e, BlockStored)]
    # KV exists for 10 + 39 tokens: three full blocks, each stored in the step that computed its last token.
    assert [e.block_hashes for e in stored] == [[h] for h in compute_block_hashes(all_tokens[:48], 16)]
    assert [e.token_ids for e in stored] == [all_tokens[0:16], all_tokens[16:32], all_tokens[32:48]]
    step_of = [i for i, s in enumerate(steps) for e in s.kv_events]
    assert step_of == [6, 22, 38]  # step k computes token 10 + k - 1 (prefill is step 0)


def test_replaying_events_reproduces_the_cache() -> None:
    engine = Engine(
        EngineConfig(block_size=4, num_gpu_blocks=25, max_model_len=64, max_num_batched_tokens=32,
                     enable_kv_cache_events=True, seed=5)
    )
    rng = random.Random(11)
    prefixes = [[rng.randrange(1000) for _ in range(12)] for _ in range(5)]
    t = 0.0
    for i in range(60):
        t += rng.expovariate(50.0)
        body = [rng.randrange(1000) for _ in range(rng.randrange(1, 20))]
        engine.add_request(
            EngineRequest(f"r{i}", rng.choice(prefixes) + body, max_tokens=rng.randrange(1, 20), arrival_time=t)
        )
    replica: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    stored_ever: set[int] = set()
    while engine.has_unfinished_requests():
        engine.step()
        for batch in engine.drain_kv_events():
            for event in batch.events:
                kinds[type(event).__name__] += 1
                if isinstance(event, BlockStored):
                    replica.update(event.block_hashes)
                    stored_ever.update(event.block_hashes)
                elif isinstance(event, BlockRemoved):
                    assert event.block_hashes[0] in stored_ever
                    replica.subtract(event.block_hashes)
    assert kinds["BlockStored"] > 0 and kinds["BlockRemoved"] > 0
    truth = Counter(
        to_event_hash(b.block_hash) for b in engine.kv.blocks if b.block_hash is not None
    )
    assert +replica == truth


def test_reset_prefix_cache_emits_all_blocks_cleared_only_when_idle() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100, enable_kv_cache_events=True))
    engine.add_request(EngineRequest("r", list(range(64)), max_tokens=3))
    engine.step()
    assert engine.reset_prefix_cache() is False
    run(engine)
    engine.drain_kv_events()
    assert engine.reset_prefix_cache() is True
    batches = engine.drain_kv_events()
    assert [b.events for b in batches] == [[AllBlocksCleared()]]
    assert engine.metrics().num_cached_blocks == 0
    engine.add_request(EngineRequest("again", list(range(64)), max_tokens=1))
    assert run(engine)[0].finished[0].cached_tokens == 0


def test_batches_are_stamped_and_drained_once() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100, enable_kv_cache_events=True))
    engine.add_request(EngineRequest("r", list(range(40)), max_tokens=1))
    steps = run(engine)
    batches = engine.drain_kv_events()
    assert [b.ts for b in batches] == [s.end_time for s in steps if s.kv_events]
    assert engine.drain_kv_events() == []
    assert len(engine.kv_events) == 0


def test_cbor_algo_and_byte_hashes() -> None:
    prompt = list(range(32))
    engine = Engine(EngineConfig(num_gpu_blocks=100, enable_kv_cache_events=True,
                                 prefix_caching_hash_algo="sha256_cbor"))
    engine.add_request(EngineRequest("r", prompt, max_tokens=1))
    stored = events_of(run(engine))[0]
    assert isinstance(stored, BlockStored)
    assert stored.block_hashes == [2233398808101521225, 17911472383915781900]
    raw = Engine(EngineConfig(num_gpu_blocks=100, enable_kv_cache_events=True, kv_events_int_hashes=False))
    raw.add_request(EngineRequest("r", prompt, max_tokens=1))
    stored_raw = events_of(run(raw))[0]
    assert isinstance(stored_raw, BlockStored)
    assert all(isinstance(h, bytes) and len(h) == 32 for h in stored_raw.block_hashes)
    assert [to_event_hash(h) for h in stored_raw.block_hashes] == compute_block_hashes(prompt, 16)  # type: ignore[arg-type]


def test_events_off_by_default() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100))
    engine.add_request(EngineRequest("r", list(range(64)), max_tokens=2))
    assert events_of(run(engine)) == []
    assert engine.drain_kv_events() == []
