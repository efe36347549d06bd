"""LoRA: max_loras adapters per batch, requests waiting for a slot, load delays, exposed adapter lists."""

from __future__ import annotations

import pytest

from simulator.engine import Engine, EngineConfig, EngineRequest, LatencyProfile, StepResult
from simulator.engine.hashing import compute_block_hashes
from simulator.engine.lora import LoraSlots

PROFILE = LatencyProfile(lora_load_s=0.2, lora_activate_s=0.01)


def lora_engine(**overrides: object) -> Engine:
    base: dict[str, object] = dict(num_gpu_blocks=200, enable_lora=True, profile=PROFILE)
    base.update(overrides)
    return Engine(EngineConfig(**base))  # type: ignore[arg-type]


def run(engine: Engine) -> list[StepResult]:
    steps = []
    while engine.has_unfinished_requests():
        steps.append(engine.step())
    return steps


def test_second_adapter_waits_for_a_slot() -> None:
    engine = lora_engine(max_loras=1)
    engine.add_request(EngineRequest("x1", list(range(32)), max_tokens=5, lora_name="x", arrival_time=0.0))
    engine.add_request(EngineRequest("x2", list(range(40, 72)), max_tokens=5, lora_name="x", arrival_time=0.0))
    engine.add_request(EngineRequest("y1", list(range(100, 132)), max_tokens=5, lora_name="y", arrival_time=0.0))
    engine.add_request(EngineRequest("base", list(range(200, 232)), max_tokens=5, arrival_time=0.0))
    first = engine.step()
    assert first.num_scheduled_requests == 3  # x1, x2 and the base-model request; y1 is skipped
    m = engine.metrics()
    assert m.running_lora_adapters == ("x",)
    assert m.waiting_lora_adapters == ("y",)
    assert m.max_loras == 1
    steps = [first, *run(engine)]
    results = {r.request_id: r for s in steps for r in s.finished}
    y_start = results["y1"].first_scheduled_time
    assert y_start is not None and y_start >= max(results["x1"].finish_time, results["x2"].finish_time)
    # Base-model requests are not held back by the adapter limit.
    assert results["base"].first_scheduled_time == results["x1"].first_scheduled_time


def test_load_delay_is_paid_in_the_step_that_first_uses_an_adapter() -> None:
    engine = lora_engine(max_loras=1, max_cpu_loras=2)
    engine.add_request(EngineRequest("x1", list(range(32)), max_tokens=2, lora_name="x", arrival_time=0.0))
    steps = run(engine)
    assert steps[0].lora_load_time == pytest.approx(0.2 + 0.01)
    assert steps[0].duration == pytest.approx(PROFILE.step_time(32, 32 * 16, 0, 0) + 0.21)
    assert steps[1].lora_load_time == 0.0
    # y takes the only GPU slot; x stays in host memory, so coming back costs only the activation.
    engine.add_request(EngineRequest("y1", list(range(50, 82)), max_tokens=1, lora_name="y"))
    assert run(engine)[0].lora_load_time == pytest.approx(0.21)
    engine.add_request(EngineRequest("x2", list(range(90, 122)), max_tokens=1, lora_name="x"))
    assert run(engine)[0].lora_load_time == pytest.approx(0.01)
    assert engine.metrics().loaded_lora_adapters == ("x",)


def test_preloaded_adapter_only_needs_activation() -> None:
    engine = lora_engine()
    assert engine.preload_lora("z") == pytest.approx(0.2)
    engine.add_request(EngineRequest("z1", list(range(32)), max_tokens=1, lora_name="z"))
    assert run(engine)[0].lora_load_time == pytest.approx(0.01)


def test_lora_requires_enable_lora() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=50))
    with pytest.raises(ValueError):
        engine.add_request(EngineRequest("x", [1, 2, 3], max_tokens=1, lora_name="x"))


def test_adapter_blocks_are_hashed_apart_and_labelled() -> None:
    engine = lora_engine(enable_kv_cache_events=True)
    prompt = list(range(48))
    engine.add_request(EngineRequest("x", prompt, max_tokens=1, lora_name="x", lora_path="/a/x"))
    stored = [e for s in run(engine) for e in s.kv_events]
    assert stored[0].block_hashes == compute_block_hashes(prompt, 16, lora_name="x", lora_path="/a/x")
    assert stored[0].lora_name == "x" and stored[0].lora_id == 1
    assert stored[0].extra_keys == [("x",), ("x",), ("x",)]
    engine.add_request(EngineRequest("plain", prompt, max_tokens=1))
    steps = run(engine)
    assert steps[0].finished[0].cached_tokens == 0  # the adapter's blocks are not the base model's


def test_slot_manager_lru() -> None:
    slots = LoraSlots(max_loras=2, max_cpu_loras=3, load_s=1.0, activate_s=0.1)
    assert slots.activate(["a", "b"]) == pytest.approx(2.2)
    assert slots.activate(["a"]) == 0.0
    assert slots.activate(["c"]) == pytest.approx(1.1)  # evicts b (least recent) from the GPU
    assert slots.gpu_resident == ["a", "c"]
    assert slots.activate(["b"]) == pytest.approx(0.1)  # b is still in host memory
    assert slots.activate(["d"]) == pytest.approx(1.1)  # host cache full: evicts a, the LRU there
    assert "a" not in slots.cpu_resident and "a" not in slots.gpu_resident
    assert slots.loads == 4
