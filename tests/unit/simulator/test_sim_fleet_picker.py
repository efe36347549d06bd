"""The picker's real scheduler as a fleet-simulator routing policy: routes, deterministic, releases, prefix affinity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from endpoint_picker.cli import build_parser
from simulator.engine.config import EngineConfig
from simulator.fleet import (
    Arrivals,
    FleetReport,
    FleetRun,
    FleetSimulation,
    Length,
    RoundRobin,
    SharedPrefixWorkload,
    uniform_fleet,
)
from simulator.fleet.cli import fleet_sim_main, main
from simulator.fleet.picker_policy import EPP_PREFIX_LOAD_CONFIG, PICKER_POLICIES, PickerPolicy
from simulator.fleet.policy import RoutingPolicy

# Small engines: 8 groups x 512-token system prompts (4096 tokens) do not fit one endpoint's 1920-token cache,
# so a router that spreads every group over every endpoint keeps evicting what it needs.
ENGINE = EngineConfig(num_gpu_blocks=120)


def _workload(n: int = 160, rate: float = 40.0) -> SharedPrefixWorkload:
    return SharedPrefixWorkload(n, Arrivals(rate), num_groups=8, num_prompts_per_group=4, system_prompt_len=512,
                                question_len=Length(48), output_len=Length(16), seed=3)


def _run(policy: RoutingPolicy, n: int = 160) -> FleetRun:
    return FleetSimulation(uniform_fleet(4, ENGINE), policy).run(_workload(n).requests())


def test_routes_every_request_and_releases_in_flight() -> None:
    policy = PICKER_POLICIES["epp-default"](0, 0.0)
    run = _run(policy, 60)
    assert len(run.records) == 60 and run.policy == "epp-default"
    assert {r.endpoint for r in run.records} <= set(range(4))
    assert policy.decisions == 60 and policy.in_flight == 0
    assert policy.inflight.total_requests() == 0
    # The scheduler saw the engines' gauges, stamped with virtual time.
    snapshot = policy.store.snapshot()
    assert len(snapshot) == 4 and all(m.block_size == 16 for m in snapshot.values())
    policy.close()


def test_on_finished_releases_the_lease() -> None:
    policy = PickerPolicy(seed=1)
    sim = FleetSimulation(uniform_fleet(2, ENGINE), policy)
    req = next(_workload(1).requests())
    i = policy.choose(req, sim.states)
    key = policy._endpoints[i].key
    assert policy.inflight.requests(key) == 1 and policy.in_flight == 1
    policy.on_finished(req, i, None)  # type: ignore[arg-type]  # the record is not read
    assert policy.inflight.requests(key) == 0 and policy.in_flight == 0
    policy.on_finished(req, i, None)  # type: ignore[arg-type]  # a second release is harmless
    policy.close()


def test_deterministic_for_a_seed() -> None:
    def picks(seed: int) -> list[int]:
        run = _run(PickerPolicy(EPP_PREFIX_LOAD_CONFIG, name="p", seed=seed), 80)
        return [r.endpoint for r in sorted(run.records, key=lambda r: int(r.request_id.split("-")[1]))]

    assert picks(5) == picks(5)


def test_prefix_affinity_beats_round_robin_on_cache_hits() -> None:
    workload = _workload()
    rr = FleetReport.of(_run(RoundRobin()), workload.name)
    assert rr.prefix_cache_hit_rate < 0.6
    for name in ("epp-default", "epp-prefix-load"):
        epp = FleetReport.of(_run(PICKER_POLICIES[name](0, 0.0)), workload.name)
        assert epp.prefix_cache_hit_rate > rr.prefix_cache_hit_rate + 0.3, name
        assert epp.ttft.p50 < rr.ttft.p50, name


def test_scraped_metrics_carry_the_scrape_time() -> None:
    policy = PickerPolicy(seed=0, scrape_interval=0.25)
    FleetSimulation(uniform_fleet(2, ENGINE), policy, scrape_interval=0.25).run(_workload(30).requests())
    times = {m.scraped_at for m in policy.store.snapshot().values()}
    assert times and all(t > 0 and (t / 0.25) == pytest.approx(round(t / 0.25)) for t in times)


def test_cli_policies_and_policy_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(EPP_PREFIX_LOAD_CONFIG, encoding="utf-8")
    argv = ["--endpoints", "2", "--num-requests", "20", "--workload", "shared-prefix", "--num-groups", "2",
            "--policy", "round-robin", "epp-default", "--policy-config", str(config)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "| epp-default |" in out and "| epp-config:mine.yaml |" in out
    assert "us in FrameworkScheduler.schedule" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("plugins: [{type: no-such-plugin}]\n", encoding="utf-8")
    assert main(["--num-requests", "5", "--policy", "round-robin", "--policy-config", str(bad)]) == 2


async def test_the_subcommand_runs_inside_an_event_loop(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["fleet-sim", "--endpoints", "2", "--num-requests", "10",
                                      "--workload", "shared-prefix", "--policy", "epp-default"])
    assert await fleet_sim_main(args) == 0
    assert "| epp-default |" in capsys.readouterr().out
    policy = PickerPolicy()
    with pytest.raises(RuntimeError, match="outside"):
        policy.choose(next(_workload(1).requests()), FleetSimulation(uniform_fleet(1, ENGINE), policy).states)
    policy.close()
    assert asyncio.get_running_loop() is not None
