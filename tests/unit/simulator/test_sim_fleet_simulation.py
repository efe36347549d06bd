"""The fleet simulator's event loop: every request finishes, runs are deterministic, policies route as
specified, hooks fire, scrapes lag, and virtual time never waits on the wall clock."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from simulator.engine.events import BlockStored, KVCacheEvent
from simulator.fleet import (
    Arrivals,
    EndpointState,
    FleetReport,
    FleetRequest,
    FleetSimulation,
    LeastLoaded,
    RandomChoice,
    RequestRecord,
    RoundRobin,
    SharedPrefixWorkload,
    SyntheticWorkload,
    uniform_fleet,
)


def _mixed(n: int = 300, rate: float = 60.0, seed: int = 0) -> SyntheticWorkload:
    return SyntheticWorkload.preset("mixed", n, Arrivals(rate), seed=seed)


def _req(i: int, t: float, prompt: int = 32, out: int = 4, base: int = 0) -> FleetRequest:
    return FleetRequest(f"r{i}", t, list(range(base + 1000 * i, base + 1000 * i + prompt)), out)


def test_every_request_finishes_exactly_once() -> None:
    workload = _mixed()
    sim = FleetSimulation(uniform_fleet(4), LeastLoaded())
    run = sim.run(workload.requests())
    sent = {r.request_id: r for r in workload.requests()}
    assert sorted(r.request_id for r in run.records) == sorted(sent)
    for rec in run.records:
        assert rec.output_tokens == sent[rec.request_id].max_tokens  # ignore_eos: runs to max_tokens
        assert rec.prompt_tokens == sent[rec.request_id].prompt_tokens
        assert rec.finish_time >= rec.arrival_time + rec.ttft - 1e-12
    assert sum(e.routed for e in run.endpoints) == len(sent)
    assert all(e.routed == e.finished for e in run.endpoints)
    assert all(not engine.has_unfinished_requests() for engine in sim.engines)
    assert all(s.in_flight == 0 and s.in_flight_tokens == 0 for s in sim.states)


def test_same_seed_same_report_and_records() -> None:
    def once(seed: int) -> tuple[FleetReport, list[RequestRecord]]:
        run = FleetSimulation(uniform_fleet(3), LeastLoaded()).run(_mixed(seed=seed).requests())
        return FleetReport.of(run, "mixed"), run.records

    a, b = once(11), once(11)
    assert a == b
    assert a[0].to_dict() == b[0].to_dict()
    assert once(12)[0] != a[0]


def test_round_robin_takes_turns() -> None:
    requests = [_req(i, 0.01 * i) for i in range(10)]
    run = FleetSimulation(uniform_fleet(4), RoundRobin()).run(requests)
    by_id = {r.request_id: r.endpoint for r in run.records}
    assert [by_id[f"r{i}"] for i in range(10)] == [i % 4 for i in range(10)]
    assert [e.routed for e in run.endpoints] == [3, 3, 2, 2]


def _states(*loads: tuple[int, int, float]) -> list[EndpointState]:
    return [EndpointState(i, f"e{i}", 16, 100, in_flight=f, waiting=w, kv_usage=kv)
            for i, (f, w, kv) in enumerate(loads)]


def test_least_loaded_prefers_fewest_in_flight_then_queue_then_kv() -> None:
    req = _req(0, 0.0)
    assert LeastLoaded().choose(req, _states((3, 0, 0.1), (1, 5, 0.9), (2, 0, 0.0))) == 1
    assert LeastLoaded().choose(req, _states((1, 2, 0.1), (1, 1, 0.9), (1, 1, 0.5))) == 2
    policy = LeastLoaded()  # full ties rotate
    idle = _states((0, 0, 0.0), (0, 0, 0.0), (0, 0, 0.0))
    assert [policy.choose(req, idle) for _ in range(4)] == [0, 1, 2, 0]


def test_random_policy_is_seeded() -> None:
    idle = _states(*[(0, 0, 0.0)] * 8)
    req = _req(0, 0.0)
    a = RandomChoice(3)
    b = RandomChoice(3)
    picks = [a.choose(req, idle) for _ in range(50)]
    assert picks == [b.choose(req, idle) for _ in range(50)]
    assert len(set(picks)) > 4


def test_least_loaded_beats_round_robin_when_heavy_requests_line_up() -> None:
    # Every other request is heavy: round-robin sends all of them to endpoint 0.
    requests = []
    for i in range(80):
        heavy = i % 2 == 0
        requests.append(_req(i, 0.05 * i, prompt=3000 if heavy else 64, out=200 if heavy else 8))
    rr = FleetReport.of(FleetSimulation(uniform_fleet(2), RoundRobin()).run(requests))
    ll = FleetReport.of(FleetSimulation(uniform_fleet(2), LeastLoaded()).run(requests))
    assert rr.spread.per_endpoint == (40, 40)
    assert ll.ttft.p90 < rr.ttft.p90
    assert ll.e2e.mean < rr.e2e.mean
    assert ll.tpot.p90 < rr.tpot.p90
    assert ll.throughput_rps > rr.throughput_rps


def test_bad_policy_choice_out_of_order_and_duplicate_requests_are_errors() -> None:
    class Bad:
        name = "bad"

        def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
            return len(endpoints)

    with pytest.raises(ValueError, match="chose endpoint 2 of 2"):
        FleetSimulation(uniform_fleet(2), Bad()).run([_req(0, 0.0)])
    with pytest.raises(ValueError, match="arrival order"):
        FleetSimulation(uniform_fleet(2), RoundRobin()).run([_req(0, 1.0), _req(1, 0.5)])
    with pytest.raises(ValueError, match="duplicate"):
        FleetSimulation(uniform_fleet(2), RoundRobin()).run([_req(0, 0.0), _req(0, 0.0)])
    sim = FleetSimulation(uniform_fleet(1), RoundRobin())
    sim.run([])
    with pytest.raises(RuntimeError):
        sim.run([])


def test_hooks_see_finishes_and_kv_events() -> None:
    class Observing(RoundRobin):
        def __init__(self) -> None:
            super().__init__()
            self.finished: list[tuple[str, int]] = []
            self.stored: dict[int, int] = {}

        def on_finished(self, request: FleetRequest, index: int, record: RequestRecord) -> None:
            assert record.request_id == request.request_id and record.endpoint == index
            self.finished.append((request.request_id, index))

        def on_kv_events(self, index: int, events: Sequence[KVCacheEvent], time: float) -> None:
            self.stored[index] = self.stored.get(index, 0) + sum(
                len(e.block_hashes) for e in events if isinstance(e, BlockStored))

    policy = Observing()
    requests = [_req(i, 0.01 * i, prompt=64, out=4) for i in range(6)]
    FleetSimulation(uniform_fleet(2), policy).run(requests)
    assert sorted(policy.finished) == sorted((f"r{i}", i % 2) for i in range(6))
    assert policy.stored == {0: 12, 1: 12}  # 3 requests x 64 prompt tokens / 16 per block, per endpoint


def test_scraped_metrics_lag_and_live_metrics_do_not() -> None:
    class Watching(RoundRobin):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[float, float, int]] = []

        def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
            self.seen.append((request.arrival_time, endpoints[0].metrics_time, endpoints[0].running))
            return 0

    requests = [_req(i, 0.013 * i, prompt=200, out=50) for i in range(40)]
    scraped = Watching()
    FleetSimulation(uniform_fleet(1), scraped, scrape_interval=0.1).run(requests)
    for arrival, metrics_time, _ in scraped.seen:
        assert metrics_time <= arrival + 1e-9
        assert metrics_time == pytest.approx(round(metrics_time / 0.1) * 0.1)  # a scrape tick
        assert arrival - metrics_time < 0.1 + 1e-9
    live = Watching()
    FleetSimulation(uniform_fleet(1), live).run(requests)
    assert len({m for _, m, _ in live.seen}) > len({m for _, m, _ in scraped.seen})
    assert max(r for _, _, r in live.seen) > 0


def test_virtual_time_does_not_wait() -> None:
    requests = [_req(0, 0.0), _req(1, 5000.0)]
    run = FleetSimulation(uniform_fleet(2), RoundRobin()).run(requests)
    assert run.end_time > 5000.0
    assert run.wall_seconds < 5.0
    late = next(r for r in run.records if r.request_id == "r1")
    assert late.ttft < 0.05  # an idle engine jumps to the arrival instead of stepping through the gap


def test_shared_prefix_hits_the_cache_on_one_endpoint() -> None:
    w = SharedPrefixWorkload(40, Arrivals(20.0), num_groups=2, num_prompts_per_group=2, system_prompt_len=160,
                             seed=1)
    run = FleetSimulation(uniform_fleet(1), RoundRobin()).run(w.requests())
    report = FleetReport.of(run, w.name)
    e = run.endpoints[0]
    assert e.prefix_cache_hits / e.prefix_cache_queries == pytest.approx(report.prefix_cache_hit_rate)
    # Four distinct 210-token prompts (13 full blocks = 208 tokens each), each cold once, then hits.
    assert report.prefix_cache_hit_rate == pytest.approx((36 * 208 + 160 * 2) / (40 * 210))


def test_prompt_longer_than_the_engine_is_rejected() -> None:
    from simulator.engine import EngineConfig

    with pytest.raises(ValueError, match="max_model_len"):
        FleetSimulation(uniform_fleet(1, EngineConfig(num_gpu_blocks=5)), RoundRobin()).run([_req(0, 0.0, 100)])


def test_the_policy_never_sees_the_future() -> None:
    class Causal(LeastLoaded):
        def __init__(self) -> None:
            super().__init__()
            self.last_finish = 0.0
            self.checked = 0

        def choose(self, request: FleetRequest, endpoints: Sequence[EndpointState]) -> int:
            assert self.last_finish <= request.arrival_time
            assert all(e.metrics_time <= request.arrival_time for e in endpoints)
            self.checked += 1
            return super().choose(request, endpoints)

        def on_finished(self, request: FleetRequest, index: int, record: RequestRecord) -> None:
            self.last_finish = max(self.last_finish, record.finish_time)

    policy = Causal()
    FleetSimulation(uniform_fleet(3), policy).run(_mixed(n=200, rate=80.0).requests())
    assert policy.checked == 200 and policy.last_finish > 0
