"""The simulated server's smaller parts: fault decisions, topology and KV transfer costs, P/D request
shapes, fleet member configs, CLI flags, and the engine's externally computed (remote-prefill) tokens."""

from __future__ import annotations

import argparse
import random

import pytest

from simulator.engine import Engine, EngineConfig, EngineRequest
from simulator.server.cli import add_sim_arguments, config_from_args
from simulator.server.config import LoraModule, SimServerConfig
from simulator.server.disaggregation import kv_params_for_decoder, prefill_request_body, topology_of_params
from simulator.server.faults import FaultConfig, decide, parse_faults
from simulator.server.fleet import fleet_configs, loopback_hosts
from simulator.server.topology import Topology, TransferModel, parse_topology

# -- faults ---------------------------------------------------------------------------------------------


def test_fault_parsing_and_validation() -> None:
    f = parse_faults({"error_rates": {"503": 0.5, 429: 0.25}, "hang_rate": 0.25, "latency_spike_rate": 1,
                      "latency_spike_s": 2})
    assert f.error_rates == {503: 0.5, 429: 0.25} and f.hang_rate == 0.25 and f.latency_spike_s == 2.0
    assert f.to_json()["error_rates"] == {"503": 0.5, "429": 0.25}
    assert parse_faults(None) == FaultConfig()
    for bad in ({"error_rates": {"200": 0.1}}, {"error_rates": {"503": 0.8}, "hang_rate": 0.5},
                {"hang_rate": 2}, {"nope": 1}, {"crash": "yes"}, {"latency_spike_s": -1}, [1]):
        with pytest.raises(ValueError):
            parse_faults(bad)


def test_fault_decisions() -> None:
    rng = random.Random(1)
    always_503 = FaultConfig(error_rates={503: 1.0})
    assert {decide(always_503, rng).status for _ in range(100)} == {503}
    assert decide(FaultConfig(hang_rate=1.0), rng).action == "hang"
    spike = decide(FaultConfig(latency_spike_rate=1.0, latency_spike_s=3.0), rng)
    assert (spike.action, spike.delay_s) == ("serve", 3.0)
    assert decide(FaultConfig(), rng).action == "serve"
    mixed = FaultConfig(error_rates={500: 0.3})
    errors = sum(decide(mixed, rng).action == "error" for _ in range(2000))
    assert 450 < errors < 750


# -- topology and P/D -----------------------------------------------------------------------------------


def test_topology_tiers_and_transfer_times() -> None:
    a = parse_topology("node=n1, rack=r1")
    assert a.labels == {"node": "n1", "rack": "r1"} and a.as_string() == "node=n1,rack=r1"
    assert a.tier_to(parse_topology("node=n1,rack=r1")) == "node"
    assert a.tier_to(parse_topology("node=n2,rack=r1")) == "rack"
    assert a.tier_to(parse_topology("node=n3,rack=r2")) == "cross-rack"
    assert a.tier_to(Topology()) == "rack"  # unknown: assume the rack fabric
    with pytest.raises(ValueError):
        parse_topology("node")
    model = TransferModel()
    # latency-model.md: ~3 us/token over IB NDR plus 0.5-2 ms RDMA setup.
    assert model.transfer_time(1000, "rack") == pytest.approx(1e-3 + 1000 * 2.98e-6, rel=0.01)
    assert model.transfer_time(1000, "node") < model.transfer_time(1000, "rack") < model.transfer_time(
        1000, "cross-rack")


def test_pd_request_and_response_shapes() -> None:
    body = prefill_request_body({"prompt": "x", "max_tokens": 50, "stream": True,
                                 "stream_options": {"include_usage": True}, "max_completion_tokens": 9})
    assert body["max_tokens"] == 1 and body["stream"] is False
    assert "stream_options" not in body and "max_completion_tokens" not in body
    assert body["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False,
                                          "remote_engine_id": None, "remote_block_ids": None,
                                          "remote_host": None, "remote_port": None}
    params = kv_params_for_decoder(engine_id="p0", host="127.0.0.2", port=8000, request_id="cmpl-1",
                                   prompt_tokens=33, block_size=16, topology=parse_topology("node=a,rack=b"))
    assert params["do_remote_prefill"] is True and params["do_remote_decode"] is False
    assert params["remote_block_ids"] == [0, 1, 2] and params["remote_host"] == "127.0.0.2"
    assert params["remote_port"] == 8000 and params["tp_size"] == 1
    assert topology_of_params(params) == parse_topology("node=a,rack=b")
    assert topology_of_params({}) == Topology()


def test_engine_admits_external_tokens_as_computed() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=100))
    prompt = list(range(500, 600))
    engine.add_request(EngineRequest("r", prompt, max_tokens=2, num_external_computed_tokens=len(prompt)))
    first = engine.step()
    assert first.num_prefill_tokens == 1  # only the last prompt token is recomputed
    while engine.has_unfinished_requests():
        last = engine.step()
    (result,) = last.finished
    assert result.cached_tokens == 99
    assert engine.counters.external_prefix_cache_queries == 100
    assert engine.counters.external_prefix_cache_hits == 99
    assert engine.counters.prefix_cache_hits == 0
    m = engine.metrics()
    assert (m.external_prefix_cache_queries, m.external_prefix_cache_hits) == (100, 99)


# -- fleet and CLI --------------------------------------------------------------------------------------


def test_fleet_configs_on_ports_and_on_hosts() -> None:
    template = SimServerConfig(name="sim", port=8000, topology=parse_topology("node=n{index},rack=r0"))
    by_port = fleet_configs(template, 3)
    assert [(c.name, c.host, c.port, c.index) for c in by_port] == [
        ("sim-0", "127.0.0.1", 8000, 0), ("sim-1", "127.0.0.1", 8001, 1), ("sim-2", "127.0.0.1", 8002, 2)]
    assert [c.topology.node for c in by_port] == ["n0", "n1", "n2"]
    assert [c.engine.seed for c in by_port] == [0, 1, 2]
    by_host = fleet_configs(template, 2, hosts=loopback_hosts(2))
    assert [(c.host, c.port) for c in by_host] == [("127.0.0.2", 8000), ("127.0.0.3", 8000)]
    assert fleet_configs(SimServerConfig(name="one"), 1)[0].name == "one"
    assert [c.port for c in fleet_configs(SimServerConfig(port=0), 2)] == [0, 0]
    assert loopback_hosts(3, "127.0.0.254") == ["127.0.0.254", "127.0.1.1", "127.0.1.2"]
    with pytest.raises(ValueError):
        fleet_configs(template, 3, hosts=["127.0.0.2"])


def test_cli_flags_map_to_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    args = parser.parse_args([
        "--port", "9000", "--model", "m", "--served-model-name", "a", "b", "--engine", "sglang", "--role",
        "decode", "--block-size", "32", "--max-num-seqs", "64", "--max-num-batched-tokens", "2048",
        "--num-gpu-blocks-override", "1000", "--prefix-caching-hash-algo", "sha256_cbor", "--enable-lora",
        "--max-loras", "2", "--lora-modules", "sql=/a/sql", '{"name": "chat", "path": "/a/chat"}',
        "--time-scale", "10", "--seed", "3", "--name", "pod", "--topology", "node=n1,rack=r1",
        "--kv-events-config", '{"enable_kv_cache_events": true, "endpoint": "tcp://127.0.0.1:*"}',
        "--faults", '{"error_rates": {"503": 0.1}}', "--no-enable-prefix-caching", "--max-model-len", "4096",
    ])
    cfg = config_from_args(args)
    assert (cfg.port, cfg.model, cfg.served_model_names, cfg.engine_kind, cfg.role) == (
        9000, "m", ("a", "b"), "sglang", "decode")
    e = cfg.engine
    assert (e.block_size, e.max_num_seqs, e.max_num_batched_tokens, e.num_gpu_blocks) == (32, 64, 2048, 1000)
    assert e.prefix_caching_hash_algo == "sha256_cbor" and not e.enable_prefix_caching
    assert (e.enable_lora, e.max_loras, e.seed, e.max_model_len) == (True, 2, 3, 4096)
    assert cfg.lora_modules == (LoraModule("sql", "/a/sql"), LoraModule("chat", "/a/chat"))
    assert cfg.time_scale == 10 and cfg.name == "pod" and cfg.topology.rack == "r1"
    assert cfg.kv_events.active and cfg.kv_events.endpoint == "tcp://127.0.0.1:*"
    assert cfg.faults.error_rates == {503: 0.1}
    defaults = config_from_args(parser.parse_args([]))
    assert (defaults.host, defaults.port, defaults.engine_kind, defaults.role) == ("127.0.0.1", 8000, "vllm", "both")
    assert not defaults.kv_events.active and defaults.engine.enable_prefix_caching


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SimServerConfig(time_scale=0)
    with pytest.raises(ValueError):
        SimServerConfig(lora_modules=(LoraModule("a", "/a"),))  # needs enable_lora
    assert SimServerConfig(served_model_names=("x", "y")).served_model_name == "x"
