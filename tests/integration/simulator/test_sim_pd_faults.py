"""Prefill/decode disaggregation between real simulated servers (llm-d sidecar header, router-driven
``kv_transfer_params``, fallback when the prefiller is dead) and fault injection (error rates set by
config and at run time, latency spikes, hangs, crashes)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from simulator.engine import EngineConfig
from simulator.server import FaultConfig, SimServer, SimServerConfig, parse_topology
from simulator.server.disaggregation import PREFILLER_HEADER

BASE = SimServerConfig(time_scale=200.0, engine=EngineConfig(num_gpu_blocks=2000, max_model_len=4096))
PROMPT = " ".join(f"t{i}" for i in range(200))


@contextlib.asynccontextmanager
async def servers(*configs: SimServerConfig) -> AsyncIterator[tuple[list[SimServer], aiohttp.ClientSession]]:
    started: list[SimServer] = []
    try:
        for config in configs:
            started.append(await SimServer(config).start())
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            yield started, session
    finally:
        for server in started:
            await server.stop()


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], Any]:
    async with session.post(url, json=body, headers=headers or {}) as resp:
        return resp.status, CIMultiDict(resp.headers), orjson.loads(await resp.read())


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: connections are refused


async def test_decode_server_gets_kv_from_the_prefiller_named_in_the_header() -> None:
    prefill_cfg = replace(BASE, name="prefill-0", role="prefill", topology=parse_topology("node=n1,rack=r1"))
    decode_cfg = replace(BASE, name="decode-0", role="decode", topology=parse_topology("node=n2,rack=r1"))
    async with servers(prefill_cfg, decode_cfg) as ((prefill, decode), session):
        status, headers, body = await post(session, decode.url + "/v1/completions",
                                           {"prompt": PROMPT, "max_tokens": 8, "ignore_eos": True},
                                           {PREFILLER_HEADER: prefill.address, "x-request-id": "pd-1"})
        assert status == 200 and headers["x-served-by"] == "decode-0"
        assert headers["x-sim-prefill"] == "remote" and headers["x-request-id"] == "pd-1"
        assert body["usage"]["completion_tokens"] == 8
        # The prompt's KV came from the prefiller: all but the recomputed last token count as cached.
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 199
        # The prefiller ran the prefill (one token) and the decoder only recomputed one prompt token.
        assert prefill.engine.counters.generation_tokens == 1
        assert prefill.engine.counters.prompt_tokens == 200
        assert decode.engine.counters.external_prefix_cache_hits == 199
        assert decode.prefiller.remote == 1 and decode.prefiller.fallbacks == 0


async def test_prefill_side_returns_kv_transfer_params() -> None:
    prefill_cfg = replace(BASE, name="p", role="prefill", topology=parse_topology("node=n9,rack=r9"))
    async with servers(prefill_cfg) as ((prefill,), session):
        status, _, body = await post(session, prefill.url + "/v1/completions",
                                     {"prompt": PROMPT, "max_tokens": 50,
                                      "kv_transfer_params": {"do_remote_decode": True}})
        assert status == 200 and body["usage"]["completion_tokens"] == 1
        kvp = body["kv_transfer_params"]
        assert kvp["do_remote_prefill"] is True and kvp["do_remote_decode"] is False
        assert (kvp["remote_host"], kvp["remote_port"], kvp["remote_engine_id"]) == ("127.0.0.1", prefill.port, "p")
        assert len(kvp["remote_block_ids"]) == 13 and kvp["remote_topology"] == {"node": "n9", "rack": "r9"}


async def test_router_driven_decode_with_kv_transfer_params() -> None:
    decode_cfg = replace(BASE, name="d", role="decode")
    async with servers(decode_cfg) as ((decode,), session):
        kvp = {"do_remote_prefill": True, "do_remote_decode": False, "remote_host": "127.0.0.9",
               "remote_port": 1, "remote_block_ids": [0], "remote_engine_id": "x",
               "remote_topology": {"node": "n5", "rack": "r2"}}
        status, headers, body = await post(session, decode.url + "/v1/completions",
                                           {"prompt": PROMPT, "max_tokens": 3, "kv_transfer_params": kvp})
        assert status == 200 and headers["x-sim-prefill"] == "remote"
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 199


async def test_decode_falls_back_to_local_prefill_when_the_prefiller_is_dead() -> None:
    decode_cfg = replace(BASE, name="d", role="decode", prefill_timeout_s=2.0)
    async with servers(decode_cfg) as ((decode,), session):
        status, headers, body = await post(session, decode.url + "/v1/chat/completions",
                                           {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4},
                                           {PREFILLER_HEADER: dead_address()})
        assert status == 200 and headers["x-sim-prefill"] == "local-fallback"
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert decode.prefiller.fallbacks == 1


async def test_decode_falls_back_when_the_prefiller_hangs() -> None:
    hanging = replace(BASE, name="p", role="prefill", faults=FaultConfig(hang_rate=1.0))
    decode_cfg = replace(BASE, name="d", role="decode", prefill_timeout_s=0.3)
    async with servers(hanging, decode_cfg) as ((prefill, decode), session):
        t0 = time.monotonic()
        status, headers, _ = await post(session, decode.url + "/v1/completions", {"prompt": PROMPT, "max_tokens": 2},
                                        {PREFILLER_HEADER: prefill.address})
        assert status == 200 and headers["x-sim-prefill"] == "local-fallback"
        assert 0.3 <= time.monotonic() - t0 < 3


async def test_error_rate_from_config_and_at_run_time() -> None:
    failing = replace(BASE, name="f", faults=FaultConfig(error_rates={503: 1.0}))
    async with servers(failing) as ((server,), session):
        for _ in range(5):
            status, headers, body = await post(session, server.url + "/v1/completions", {"prompt": "x"})
            assert status == 503 and headers["x-served-by"] == "f"
            assert body["error"]["code"] == 503 and "injected fault" in body["error"]["message"]
        async with session.get(server.url + "/health") as resp:
            assert resp.status == 200  # faults hit inference routes only
        async with session.delete(server.url + "/admin/faults") as resp:
            assert resp.status == 200
        status, _, _ = await post(session, server.url + "/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert status == 200
        status, _, faults = await post(session, server.url + "/admin/faults", {"error_rates": {"429": 1.0}})
        assert status == 200 and faults["error_rates"] == {"429": 1.0}
        status, _, _ = await post(session, server.url + "/v1/chat/completions",
                                  {"messages": [{"role": "user", "content": "x"}]})
        assert status == 429
        status, _, err = await post(session, server.url + "/admin/faults", {"error_rates": {"200": 1.0}})
        assert status == 400 and "invalid faults" in err["error"]["message"]


async def test_latency_spike_delays_the_answer() -> None:
    spiky = replace(BASE, name="s", time_scale=1.0, faults=FaultConfig(latency_spike_rate=1.0, latency_spike_s=0.3))
    async with servers(spiky) as ((server,), session):
        t0 = time.monotonic()
        status, _, _ = await post(session, server.url + "/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert status == 200 and time.monotonic() - t0 >= 0.3


async def test_hang_makes_the_client_time_out() -> None:
    async with servers(replace(BASE, name="h")) as ((server,), session):
        await post(session, server.url + "/admin/faults", {"hang_rate": 1.0})
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(server.url + "/v1/completions", json={"prompt": "x"},
                                    timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
                await resp.read()
        async with asyncio.timeout(5):  # the abandoned request leaves nothing behind
            while server.driver.num_streams or server.engine.num_running:
                await asyncio.sleep(0.01)


async def test_crash_closes_the_listener() -> None:
    async with servers(replace(BASE, name="c")) as ((server,), session):
        status, _, _ = await post(session, server.url + "/admin/faults", {"crash": True})
        assert status == 200
        async with asyncio.timeout(5):
            await server.stopped.wait()
        assert server.crashed
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, server.url + "/v1/completions", {"prompt": "x"})
