"""Shortcuts of the fleet simulator that must not change a result: the KV block pool built on first use, prompt
digests shared by the engines of a fleet, and gauge-change notices (``on_gauges``) sparing the picker policy a
comparison of every endpoint per decision."""

from __future__ import annotations

import random
from collections.abc import Sequence

from simulator.engine import Engine, EngineConfig, EngineRequest, PromptHashCache
from simulator.fleet import Arrivals, FleetSimulation, Length, SharedPrefixWorkload, uniform_fleet
from simulator.fleet.picker_policy import PICKER_POLICIES, PickerPolicy
from simulator.fleet.policy import EndpointState
from simulator.fleet.records import RequestRecord
from simulator.fleet.workload import FleetRequest


def test_kv_blocks_are_created_on_first_use() -> None:
    engine = Engine(EngineConfig())
    kv = engine.kv
    assert len(kv.blocks) == 1  # the null block only, of ~29k
    assert kv.num_free_blocks == kv.usable_blocks and kv.usage == 0.0
    engine.add_request(EngineRequest("a", list(range(100, 140)), max_tokens=2))
    while engine.has_unfinished_requests():
        engine.step()
    assert len(kv.blocks) == 1 + 3  # 40 prompt + 2 output tokens in blocks of 16
    assert [b.block_id for b in kv.blocks] == list(range(4))
    assert kv.num_free_blocks == kv.usable_blocks == len(kv.free_queue_ids())


def test_kv_free_queue_stays_consistent_under_pressure() -> None:
    rng = random.Random(5)
    engine = Engine(EngineConfig(block_size=4, num_gpu_blocks=20, max_num_seqs=6, max_num_batched_tokens=64))
    kv = engine.kv
    prefixes = [list(range(1000 * g, 1000 * g + 12)) for g in range(4)]
    for i in range(120):
        prompt = rng.choice(prefixes) + [rng.randrange(10**6) for _ in range(rng.randrange(1, 20))]
        engine.add_request(EngineRequest(f"r{i}", prompt, max_tokens=rng.randrange(1, 30), arrival_time=engine.now))
        for _ in range(rng.randrange(0, 4)):
            engine.step()
            free = kv.free_queue_ids()
            assert len(free) == len(set(free)) == kv.num_free_blocks
            held = {b.block_id for s in engine._running for b in s.blocks}
            assert not held & set(free) and 0 not in free
            assert kv.usage == 1.0 - len(free) / kv.usable_blocks
    while engine.has_unfinished_requests():
        engine.step()
    assert kv.num_free_blocks == kv.usable_blocks
    assert engine.metrics().num_preemptions > 0 and engine.metrics().prefix_cache_hits > 0


def test_engines_sharing_prompt_digests_hash_exactly_as_alone() -> None:
    cache = PromptHashCache(capacity=3)
    cfg = EngineConfig(block_size=4, num_gpu_blocks=64)
    shared = [Engine(cfg, prompt_hashes=cache) for _ in range(2)]
    alone = Engine(cfg)
    prompt = list(range(500, 522))  # 5 full blocks
    for i, engine in enumerate([*shared, alone]):
        engine.add_request(EngineRequest(f"r{i}", prompt, max_tokens=1))
    digests = [e._seqs[f"r{i}"].block_hashes for i, e in enumerate([*shared, alone])]
    assert digests[0] == digests[1] == digests[2] and len(digests[0]) == 5
    assert digests[0] is not digests[1]  # each request its own list: output blocks are appended to it
    assert len(cache) == 1
    prompt.extend([1, 2, 3])  # a mutated list of another length is hashed again
    shared[0].add_request(EngineRequest("grown", prompt, max_tokens=1))
    grown = Engine(cfg)
    grown.add_request(EngineRequest("g", prompt, max_tokens=1))
    assert shared[0]._seqs["grown"].block_hashes == grown._seqs["g"].block_hashes
    salted = list(range(900, 912))
    shared[1].add_request(EngineRequest("s", salted, max_tokens=1, cache_salt="x"))
    assert len(cache) == 1  # extra keys: not cached
    for k in range(3):
        shared[1].add_request(EngineRequest(f"f{k}", list(range(k * 100, k * 100 + 8)), max_tokens=1))
    assert len(cache) <= 3


class WithoutGaugeNotices:
    """A picker policy whose simulation cannot tell it which gauges changed: it compares them all."""

    def __init__(self, inner: PickerPolicy) -> None:
        self.inner = inner
        self.name = inner.name

    def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
        return self.inner.choose(request, endpoints)

    def on_finished(self, request: FleetRequest, index: int, record: RequestRecord) -> None:
        self.inner.on_finished(request, index, record)


def test_gauge_notices_change_no_decision() -> None:
    workload = SharedPrefixWorkload(300, Arrivals(150), num_groups=6, num_prompts_per_group=4, system_prompt_len=200,
                                    question_len=Length(40, 10, 10, 80), output_len=Length(20, 5, 5, 40), seed=2)
    engine = EngineConfig(num_gpu_blocks=200)
    for scrape in (0.0, 0.05):
        notified = PICKER_POLICIES["epp-default"](1, scrape)
        plain = WithoutGaugeNotices(PICKER_POLICIES["epp-default"](1, scrape))
        a = FleetSimulation(uniform_fleet(6, engine), notified, scrape_interval=scrape).run(workload.requests())
        b = FleetSimulation(uniform_fleet(6, engine), plain, scrape_interval=scrape).run(workload.requests())
        assert a.records == b.records and a.endpoints == b.endpoints
        notified.close()
        plain.inner.close()
