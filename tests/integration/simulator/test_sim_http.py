"""Simulated model servers on real loopback sockets: OpenAI completions and chat as JSON and SSE, prefix
cache hits in usage and in /metrics, 400s, client disconnects, the endpoints peer routers call, a fleet
on distinct loopback IPs, and the ``sim`` command's main coroutine. Servers run at a high time scale."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from simulator.engine import EngineConfig
from simulator.engine.tokenizer import encode
from simulator.server import LoraModule, SimFleet, SimServer, SimServerConfig, fleet_configs, loopback_hosts
from simulator.server.cli import add_sim_arguments, sim_main

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
FAST = SimServerConfig(name="sim-a", time_scale=200.0, engine=EngineConfig(num_gpu_blocks=2000, max_model_len=4096))


@contextlib.asynccontextmanager
async def serving(config: SimServerConfig = FAST) -> AsyncIterator[tuple[SimServer, aiohttp.ClientSession]]:
    server = await SimServer(config).start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            yield server, session
    finally:
        await server.stop()


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, CIMultiDict[str], Any]:
    async with session.post(url, json=body) as resp:
        return resp.status, CIMultiDict(resp.headers), orjson.loads(await resp.read())


async def sse_events(resp: aiohttp.ClientResponse) -> list[Any]:
    events: list[Any] = []
    async for raw in resp.content:
        line = raw.strip()
        if not line:
            continue
        assert line.startswith(b"data: ")
        data = line[len(b"data: ") :]
        events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


async def test_completions_json_with_identity_headers() -> None:
    async with serving() as (server, session):
        status, headers, body = await post(session, server.url + "/v1/completions",
                                           {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 7,
                                            "ignore_eos": True})
        assert status == 200
        assert headers["x-served-by"] == "sim-a" and headers["x-served-by-address"] == server.address
        assert body["object"] == "text_completion" and body["model"] == MODEL
        (choice,) = body["choices"]
        assert choice["finish_reason"] == "length" and len(encode(choice["text"])) == 7
        assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                                 "prompt_tokens_details": {"cached_tokens": 0}}
        # Token-id prompts work too.
        status, _, body = await post(session, server.url + "/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 2})
        assert status == 200 and body["usage"]["prompt_tokens"] == 3


async def test_chat_json_and_sse_with_usage() -> None:
    async with serving() as (server, session):
        messages = [{"role": "user", "content": "Tell me about caches"}]
        status, _, body = await post(session, server.url + "/v1/chat/completions",
                                     {"messages": messages, "max_completion_tokens": 4, "ignore_eos": True})
        assert status == 200 and body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] == 4

        req = {"messages": messages, "max_tokens": 5, "ignore_eos": True, "stream": True,
               "stream_options": {"include_usage": True}}
        async with session.post(server.url + "/v1/chat/completions", json=req) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["x-served-by"] == "sim-a"
            events = await sse_events(resp)
        assert events[-1] == "[DONE]"
        role, *tokens, usage, _done = events
        assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert len(tokens) == 5
        assert [t["choices"][0]["finish_reason"] for t in tokens] == [None] * 4 + ["length"]
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
        assert usage["usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"]

        # Completions SSE without include_usage: token chunks and [DONE] only.
        async with session.post(server.url + "/v1/completions",
                                json={"prompt": "hi", "max_tokens": 3, "ignore_eos": True, "stream": True}) as resp:
            events = await sse_events(resp)
        assert events[-1] == "[DONE]" and len(events) == 4
        assert all("usage" not in e for e in events[:-1])


async def test_prefix_cache_hit_in_usage_and_metrics() -> None:
    async with serving() as (server, session):
        prompt = " ".join(f"w{i}" for i in range(100))  # 100 tokens: 6 full blocks
        first = (await post(session, server.url + "/v1/completions", {"prompt": prompt, "max_tokens": 2}))[2]
        second = (await post(session, server.url + "/v1/completions", {"prompt": prompt, "max_tokens": 2}))[2]
        assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 96
        async with session.get(server.url + "/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        assert metric(text, "vllm:prefix_cache_hits_total") == 96
        assert metric(text, "vllm:prefix_cache_queries_total") == 200
        assert metric(text, "vllm:prompt_tokens_total") == 200
        assert metric(text, "vllm:request_success_total") >= 0
        assert metric(text, "vllm:time_to_first_token_seconds_count") == 2


async def test_bad_requests_are_openai_style_400s() -> None:
    small = replace(FAST, engine=EngineConfig(num_gpu_blocks=200, max_model_len=64))
    async with serving(small) as (server, session):
        async with session.post(server.url + "/v1/completions", data=b"{not json",
                                headers={"content-type": "application/json"}) as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["error"]["type"] == "BadRequestError" and body["error"]["code"] == 400
            assert "malformed JSON" in body["error"]["message"]
        status, _, body = await post(session, server.url + "/v1/completions", {"max_tokens": 3})
        assert status == 400 and body["error"]["param"] == "prompt"
        status, _, body = await post(session, server.url + "/v1/completions",
                                     {"prompt": " ".join(["w"] * 100), "max_tokens": 1})
        assert status == 400 and "maximum context length is 64" in body["error"]["message"]
        status, _, body = await post(session, server.url + "/v1/completions", {"model": "x", "prompt": "a"})
        assert status == 404 and body["error"]["type"] == "NotFoundError"
        async with session.get(server.url + "/no/such/route") as resp:
            assert resp.status == 404 and resp.headers["x-served-by"] == "sim-a"
        assert server.engine.num_running == 0 and server.driver.num_streams == 0


async def test_client_disconnect_mid_stream_aborts_the_request() -> None:
    slow = replace(FAST, time_scale=5.0)
    async with serving(slow) as (server, session):
        resp = await session.post(server.url + "/v1/completions",
                                  json={"prompt": "long story", "max_tokens": 3000, "ignore_eos": True,
                                        "stream": True})
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        assert server.engine.num_running == 1
        resp.close()  # drop the connection mid-stream
        async with asyncio.timeout(5):
            while server.engine.num_running or server.driver.num_streams:
                await asyncio.sleep(0.01)
        assert server.engine.counters.request_success.get("abort") == 1
        assert server.engine.kv.num_free_blocks == server.engine.kv.usable_blocks


async def test_endpoints_peer_routers_need() -> None:
    async with serving() as (server, session):
        async with session.get(server.url + "/health") as resp:
            assert resp.status == 200
        async with session.get(server.url + "/v1/models") as resp:
            models = await resp.json()
        assert models["object"] == "list" and models["data"][0]["id"] == MODEL
        assert models["data"][0]["max_model_len"] == 4096
        async with session.get(server.url + "/server_info") as resp:
            info = await resp.json()
        assert info["served_model_name"] == MODEL and info["dp_size"] == 1
        assert "model_path" not in info and "tokenizer_path" not in info  # no HF download by sglang-router
        async with session.get(server.url + "/model_info") as resp:
            model_info = await resp.json()
        assert model_info["architectures"] == ["LlamaForCausalLM"] and "model_path" not in model_info
        async with session.get(server.url + "/get_load") as resp:
            load = await resp.json()
        assert load == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
        status, _, tok = await post(session, server.url + "/tokenize", {"prompt": "Hello, world!"})
        assert status == 200 and tok == {"count": 4, "max_model_len": 4096, "tokens": encode("Hello, world!"),
                                         "token_strs": None}
        status, _, chat_tok = await post(session, server.url + "/tokenize",
                                         {"messages": [{"role": "user", "content": "hi"}]})
        assert chat_tok["count"] == len(chat_tok["tokens"]) > 1
        status, _, detok = await post(session, server.url + "/detokenize", {"tokens": encode("bako dime")})
        assert status == 200 and isinstance(detok["prompt"], str)
        status, _, rendered = await post(session, server.url + "/v1/completions/render", {"prompt": "Hello, world!"})
        assert status == 200 and isinstance(rendered, list) and rendered[0]["token_ids"] == encode("Hello, world!")
        status, _, chat = await post(session, server.url + "/v1/chat/completions/render",
                                     {"messages": [{"role": "user", "content": "hi"}]})
        assert status == 200 and chat["token_ids"] == chat_tok["tokens"] and chat["request_id"].startswith("chatcmpl")
        status, _, _ = await post(session, server.url + "/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert status == 200
        async with session.get(server.url + "/admin/state") as resp:
            state = await resp.json()
        assert state["name"] == "sim-a" and state["request_success"]


async def test_sglang_and_trtllm_metric_names_over_http() -> None:
    for kind, gauge in (("sglang", "sglang:num_queue_reqs"), ("trtllm-serve", "trtllm_num_requests_waiting")):
        async with serving(replace(FAST, engine_kind=kind)) as (server, session):  # type: ignore[arg-type]
            await post(session, server.url + "/v1/completions", {"prompt": "x", "max_tokens": 2})
            async with session.get(server.url + "/metrics") as resp:
                text = await resp.text()
            assert metric(text, gauge) == 0
            assert "vllm:" not in text


async def test_fleet_on_distinct_loopback_ips() -> None:
    template = replace(FAST, name="pod")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fleet = await SimFleet(fleet_configs(replace(template, port=port), 3, hosts=loopback_hosts(3))).start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            seen = []
            for server in fleet.servers:
                status, headers, _ = await post(session, server.url + "/v1/completions",
                                                {"prompt": "x", "max_tokens": 1})
                assert status == 200
                seen.append((headers["x-served-by"], headers["x-served-by-address"]))
        assert seen == [("pod-0", f"127.0.0.2:{port}"), ("pod-1", f"127.0.0.3:{port}"),
                        ("pod-2", f"127.0.0.4:{port}")]
    finally:
        await fleet.stop()
    assert all(s.stopped.is_set() for s in fleet.servers)


async def test_sim_main_serves_replicas_and_exits_1_when_all_crash(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    args = parser.parse_args(["--replicas", "2", "--port", "0", "--time-scale", "100", "--name", "cli",
                              "--num-gpu-blocks-override", "500"])
    task = asyncio.create_task(sim_main(args))
    urls: list[str] = []
    async with asyncio.timeout(10):
        while len(urls) < 2:
            await asyncio.sleep(0.01)
            urls += [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("cli-")]
        async with aiohttp.ClientSession() as session:
            for url in urls:
                status, headers, _ = await post(session, url + "/v1/completions", {"prompt": "x", "max_tokens": 1})
                assert status == 200 and headers["x-served-by"].startswith("cli-")
            for url in urls:
                status, _, _ = await post(session, url + "/admin/faults", {"crash": True})
                assert status == 200
        assert await task == 1


async def test_lora_adapters_by_model_name_and_in_metrics() -> None:
    lora = replace(FAST, engine=EngineConfig(num_gpu_blocks=2000, max_model_len=4096, enable_lora=True, max_loras=2),
                   lora_modules=(LoraModule("sql-lora", "/adapters/sql"),))
    async with serving(lora) as (server, session):
        async with session.get(server.url + "/v1/models") as resp:
            models = {m["id"]: m for m in (await resp.json())["data"]}
        assert models["sql-lora"]["parent"] == MODEL and models["sql-lora"]["root"] == "/adapters/sql"
        status, _, body = await post(session, server.url + "/v1/completions",
                                     {"model": "sql-lora", "prompt": "select", "max_tokens": 2})
        assert status == 200 and body["model"] == "sql-lora"
        async with session.post(server.url + "/v1/load_lora_adapter",
                                json={"lora_name": "chat-lora", "lora_path": "/adapters/chat"}) as loaded:
            assert loaded.status == 200 and "Success" in await loaded.text()
        resp = await session.post(server.url + "/v1/completions",
                                  json={"model": "chat-lora", "prompt": "hi", "max_tokens": 2000, "ignore_eos": True,
                                        "stream": True})
        await resp.content.readline()
        async with session.get(server.url + "/metrics") as m:
            text = await m.text()
        resp.close()
        infos = [s for f in text_string_to_metric_families(text) if f.name == "vllm:lora_requests_info"
                 for s in f.samples]
        newest = max(infos, key=lambda s: s.value)
        assert newest.labels == {"max_lora": "2", "running_lora_adapters": "chat-lora", "waiting_lora_adapters": ""}
        assert any(s.labels["running_lora_adapters"] == "sql-lora" for s in infos)  # older combinations persist


async def test_without_ignore_eos_the_reply_stops_at_a_sampled_length() -> None:
    async with serving(replace(FAST, output_len_mean=4)) as (server, session):
        reasons = set()
        for _ in range(5):
            status, _, body = await post(session, server.url + "/v1/completions",
                                         {"prompt": "x", "max_tokens": 100, "min_tokens": 2})
            assert status == 200
            reasons.add(body["choices"][0]["finish_reason"])
            assert 2 <= body["usage"]["completion_tokens"] < 100
        assert reasons == {"stop"}
