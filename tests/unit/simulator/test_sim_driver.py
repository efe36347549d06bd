"""The engine driver: the engine runs on the scaled model clock, tokens reach request streams as steps end,
aborts free the engine, and stopping fails what is still open."""

from __future__ import annotations

import asyncio

import pytest

from simulator.engine import Engine, EngineConfig, EngineRequest
from simulator.server.driver import EngineDriver, EngineStopped, ModelClock, StepDelivery


async def test_tokens_arrive_in_scaled_real_time() -> None:
    driver = EngineDriver(Engine(EngineConfig(num_gpu_blocks=200)), time_scale=20.0)
    deliveries: list[StepDelivery] = []
    driver.observers.append(deliveries.append)
    driver.start()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stream = driver.submit(EngineRequest("r", list(range(50)), max_tokens=40))
        received: list[int] = []
        async with asyncio.timeout(5):
            while not stream.done:
                await stream.wait()
                received.extend(stream.take())
        received.extend(stream.take())
        elapsed = loop.time() - t0
        result = stream.result
        assert result is not None and received == result.output_token_ids and len(received) == 40
        # ~40 steps of >= 6.3 model ms at 20x: >= 12 ms real; the model clock and the engine agree.
        assert elapsed >= result.e2e_latency / 20.0 * 0.9
        assert elapsed < 2.0
        assert sum(len(d.ttfts) for d in deliveries) == 1
        assert sum(len(d.itls) for d in deliveries) == 39
        assert [r.request_id for d in deliveries for r, _ in d.finished] == ["r"]
    finally:
        await driver.stop()


async def test_non_streaming_waiters_wake_once_at_the_end() -> None:
    driver = EngineDriver(Engine(EngineConfig(num_gpu_blocks=200)), time_scale=100.0)
    driver.start()
    try:
        stream = driver.submit(EngineRequest("r", list(range(10)), max_tokens=20), streaming=False)
        wakes = 0
        async with asyncio.timeout(5):
            while not stream.done:
                await stream.wait()
                wakes += 1
        assert wakes == 1 and stream.result is not None and len(stream.tokens) == 20
    finally:
        await driver.stop()


async def test_abort_frees_the_engine_and_stop_fails_open_streams() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=200))
    driver = EngineDriver(engine, time_scale=10.0)
    driver.start()
    try:
        doomed = driver.submit(EngineRequest("a", list(range(30)), max_tokens=10_000))
        kept = driver.submit(EngineRequest("b", list(range(30, 60)), max_tokens=10_000))
        async with asyncio.timeout(5):
            while engine.num_running < 2:
                await doomed.wait()
                doomed.take()
        result = driver.abort("a")
        assert result is not None and result.finish_reason == "abort"
        assert doomed.done and isinstance(doomed.error, EngineStopped)
        assert engine.num_running == 1 and driver.num_streams == 1
        assert driver.abort("a") is None
    finally:
        await driver.stop()
    assert kept.done and isinstance(kept.error, EngineStopped)
    assert not engine.has_unfinished_requests()
    with pytest.raises(EngineStopped):
        driver.submit(EngineRequest("c", [1], max_tokens=1))


async def test_model_clock() -> None:
    clock = ModelClock(4.0)
    assert clock.real_seconds(2.0) == 0.5
    assert clock.real_delay(clock.now() + 4.0) == pytest.approx(1.0, abs=0.05)
