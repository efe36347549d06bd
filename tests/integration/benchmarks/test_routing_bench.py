"""The routing benchmark end to end on a tiny scale: the streaming client against a real simulated server, and
two targets (Envoy round robin, Envoy + this picker) replaying the same small workload in two stages."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from benchmarks.latency_stats import Slo
from benchmarks.routing import make_plan, run_target, stage_plans
from benchmarks.routing_report import write_results
from benchmarks.sim_fleet import FleetSpec, SimFleetProcess
from benchmarks.stream_client import StreamRequest, new_session, send
from benchmarks.targets import make_target
from simulator.fleet.arrivals import Arrivals
from simulator.fleet.shared_prefix import SharedPrefixWorkload
from simulator.fleet.workload import Length
from simulator.server.config import DEFAULT_MODEL


async def test_stream_client_times_a_real_simulated_server(tmp_path: Path) -> None:
    async with SimFleetProcess(FleetSpec(replicas=1), tmp_path / "fleet.log") as fleet, new_session() as session:
        prompt = "hello " * 300
        first = await send(session, fleet.urls[0], StreamRequest("a", DEFAULT_MODEL, 8, prompt=prompt))
        second = await send(session, fleet.urls[0], StreamRequest("b", DEFAULT_MODEL, 8, messages=[
            {"role": "user", "content": "hi"}]))
        again = await send(session, fleet.urls[0], StreamRequest("c", DEFAULT_MODEL, 8, prompt=prompt))
        bad = await send(session, fleet.urls[0], StreamRequest("d", "no-such-model", 8, prompt="x"))
        counters = await fleet.cache_counters()
    for r in (first, second, again):
        assert r.ok and r.ttft is not None and r.e2e is not None and r.e2e >= r.ttft, r
        assert r.output_tokens == 8 and r.output_chunks == 8 and len(r.itl) == 7
        assert r.served_by == fleet.addresses[0]
    assert first.prompt_tokens == again.prompt_tokens and (again.cached_tokens or 0) > (first.cached_tokens or 0)
    assert counters.queries > 0 and counters.hits >= (again.cached_tokens or 0)
    assert not bad.ok and bad.status == 404 and bad.error and "404" in bad.error


async def test_two_targets_replay_the_same_staged_workload(tmp_path: Path) -> None:
    workload = SharedPrefixWorkload(num_requests=24, arrivals=Arrivals(24, "constant"), num_groups=3,
                                    num_prompts_per_group=4, system_prompt_len=600, question_len=Length(40),
                                    output_len=Length(6))
    requests = list(workload.requests())
    stages = stage_plans(requests, [(12.0, 0.5), (24.0, 0.5)])
    # Constant 24 req/s: the first 12 arrive in the first half second; relabel them as a two-stage plan.
    for r in requests:
        r.stage = 0 if r.arrival_time < 0.5 else 1
    plan = make_plan(requests, DEFAULT_MODEL)
    lines: list[str] = []
    runs = [await run_target(make_target(name, tmp_path / "peers"), FleetSpec(replicas=2), plan, stages, tmp_path,
                             model=DEFAULT_MODEL, progress=lines.append) for name in ("round-robin", "epp-default")]
    for run in runs:
        assert run.error is None, (run.error, lines)
        assert len(run.results) == 24 and all(r.ok for r in run.results), [r.error for r in run.results]
        assert {r.stage for r in run.results} == {0, 1}
        assert set(run.cpu_percent) >= {"fleet", "envoy", "load_generator"}
        assert all(c.queries > 0 for c in run.stage_cache.values())
    rr = {r.served_by for r in runs[0].results}
    assert len(rr) == 2  # round robin uses both servers
    assert "picker" in runs[1].cpu_percent

    text = write_results(tmp_path / "out", {"summary": workload.summary()}, runs, stages, Slo.parse("ttft=2"),
                         [])
    assert "| round-robin | 12 |" in text and "| epp-default | 24 |" in text
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [t["name"] for t in doc["targets"]] == ["round-robin", "epp-default"]
    assert len(doc["targets"][1]["requests"]) == 24
    for png in ("ttft.png", "throughput.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
    # No process left behind: the fleets' and targets' ports are closed again.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        for run in runs:
            url = run.results[0].served_by
            try:
                async with session.get(f"http://{url}/health"):
                    raise AssertionError(f"{url} still answers after the run")
            except aiohttp.ClientError:
                pass
