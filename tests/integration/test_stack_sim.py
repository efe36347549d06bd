"""The local gateway on simulated vLLM servers: real Envoy, the picker, and ``simulator.server.SimServer``.

What ``endpoint-picker stack`` shows by default must hold: requests through Envoy get 200s from the
simulated servers (named in ``x-served-by``), SSE streams pass through with usage and ``[DONE]``, the picker's
endpoints file carries the prefill/decode role and topology labels, a server's ``/metrics`` shows a request
while it runs, and -- on a one-server pool, where the route is forced -- a repeated long prompt is served
from the prefix cache with a lower TTFT.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stack.access_log import entry_for_request
from stack.background import BackgroundStack
from stack.gateway import StackOptions
from stack.model_servers import SimPoolOptions, sim_configs
from stack.placement import parse_placement
from stack.polling import async_wait_until

GATEWAY_OPTIONS = {
    "model_servers": "sim",
    "replicas": 2,
    "prefill_replicas": 1,
    "topology": "racks=2",
    "time_scale": 10.0,
}
SIM_NAMES = {"sim-prefill-0", "sim-decode-0", "sim-decode-1"}


def test_requests_are_served_by_the_simulated_servers(gateway: BackgroundStack) -> None:
    client = gateway.client()
    model = gateway.model_name
    served: set[str] = set()
    for i in range(12):
        request_id = str(uuid.uuid4())
        headers = {"x-request-id": request_id}
        if i % 2:
            result = client.chat(f"question {i}", model=model, max_tokens=5, headers=headers)
        else:
            result = client.completion(f"prompt {i}", model=model, max_tokens=5, headers=headers)
        assert result.status == 200, result.text
        assert result.served_by in SIM_NAMES
        assert result.served_by_address == gateway.sim(result.served_by).address
        assert result.json()["usage"]["completion_tokens"] <= 5
        picked = entry_for_request(gateway.access_log_path, request_id).destination
        assert picked is not None and picked.split(",")[0] == result.served_by_address
        served.add(result.served_by)
    assert len(served) > 1, served


def test_sse_streams_through_envoy_with_usage(gateway: BackgroundStack) -> None:
    result = gateway.client().chat("stream please", model=gateway.model_name, max_tokens=6, stream=True,
                                   ignore_eos=True)
    assert result.status == 200, result.text
    assert result.headers["content-type"].startswith("text/event-stream")
    assert result.served_by in SIM_NAMES
    events = result.sse_events()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert len(text.split()) == 6


def test_endpoints_file_labels_roles_and_topology(gateway: BackgroundStack) -> None:
    doc = yaml.safe_load(gateway.stack.endpoints_file.read_text())
    labels = {e["name"]: e["labels"] for e in doc["endpoints"]}
    assert labels == {
        "sim-prefill-0": {"role": "prefill", "llm-d.ai/role": "prefill", "node": "node-0", "rack": "rack-0"},
        "sim-decode-0": {"role": "decode", "llm-d.ai/role": "decode", "node": "node-1", "rack": "rack-1"},
        "sim-decode-1": {"role": "decode", "llm-d.ai/role": "decode", "node": "node-2", "rack": "rack-0"},
    }
    assert {s.name: s.config.topology.labels["rack"] for s in gateway.sims} == {
        "sim-prefill-0": "rack-0", "sim-decode-0": "rack-1", "sim-decode-1": "rack-0"}


def _running(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:num_requests_running":
            return sum(s.value for s in family.samples)
    raise AssertionError("no vllm:num_requests_running in /metrics")


async def test_metrics_show_a_request_while_it_runs(gateway: BackgroundStack) -> None:
    body = {"model": gateway.model_name, "prompt": "a long answer please", "max_tokens": 3000,
            "ignore_eos": True, "stream": True}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(gateway.gateway_url + "/v1/completions", json=body) as response:
            assert response.status == 200
            sim = gateway.sim(response.headers["x-served-by"])
            first = await response.content.readuntil(b"\n\n")
            assert first.startswith(b"data: ")

            async def running() -> bool:
                async with session.get(sim.url + "/metrics") as metrics:
                    return _running(await metrics.text()) >= 1

            await async_wait_until(running, within=10.0, what=f"{sim.name} reports a running request")
        # The client hung up mid-stream: the server aborts the request.

        async def idle() -> bool:
            async with session.get(sim.url + "/metrics") as metrics:
                return _running(await metrics.text()) == 0

        await async_wait_until(idle, within=10.0, what=f"{sim.name} back to idle")


async def _ttft(session: aiohttp.ClientSession, url: str, body: dict[str, object]) -> tuple[float, dict[str, int]]:
    started = time.monotonic()
    async with session.post(url, json=body) as response:
        assert response.status == 200
        first: float | None = None
        usage: dict[str, int] = {}
        async for line in response.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices") and chunk["choices"][0].get("text"):
                first = time.monotonic() - started
            if chunk.get("usage"):
                usage = chunk["usage"]
    assert first is not None
    return first, usage


async def test_repeated_long_prompt_hits_the_prefix_cache(gateway_factory: Callable[..., BackgroundStack]) -> None:
    stack: BackgroundStack = gateway_factory(model_servers="sim", replicas=1)
    prompt = " ".join(f"w{i}" for i in range(8000))
    body = {"model": stack.model_name, "prompt": prompt, "max_tokens": 2, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        cold, cold_usage = await _ttft(session, stack.gateway_url + "/v1/completions", body)
        warm, warm_usage = await _ttft(session, stack.gateway_url + "/v1/completions", body)
    assert cold_usage["prompt_tokens"] == 8000
    assert cold_usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert warm_usage["prompt_tokens_details"]["cached_tokens"] == 7984  # whole blocks, last token recomputed
    assert warm < cold, (warm, cold)


def test_sim_pool_names_roles_and_placement() -> None:
    configs = sim_configs(3, None, SimPoolOptions(prefill_replicas=2, placement=parse_placement(
        "racks=2,servers-per-node=2"), time_scale=5.0))
    assert [(c.name, c.role, c.topology.labels["node"], c.topology.labels["rack"]) for c in configs] == [
        ("sim-prefill-0", "prefill", "node-0", "rack-0"),
        ("sim-prefill-1", "prefill", "node-0", "rack-0"),
        ("sim-decode-0", "decode", "node-1", "rack-1"),
        ("sim-decode-1", "decode", "node-1", "rack-1"),
        ("sim-decode-2", "decode", "node-2", "rack-0"),
    ]
    assert len({c.host for c in configs}) == 5 and {c.time_scale for c in configs} == {5.0}
    assert len({c.engine.seed for c in configs}) == 5
    assert [c.role for c in sim_configs(2, None, SimPoolOptions())] == ["both", "both"]
    for bad in ("racks=0", "zones=2", "racks=x"):
        with pytest.raises(ValueError):
            parse_placement(bad)
    with pytest.raises(ValueError, match="need simulated model servers"):
        StackOptions(model_servers="standin", prefill_replicas=1)
