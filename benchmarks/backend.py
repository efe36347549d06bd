"""A model-server stand-in that costs (almost) nothing: Envoy answering every request with ``direct_response``.

Why this module exists: the overhead benchmark compares Envoy alone with Envoy + picker, so whatever sits
behind the pool must add neither latency nor noise. A Python server (``stack/standin_server.py``) costs
several hundred microseconds and a good share of one of the machine's two cores per request; a second
Envoy whose listeners return a fixed small OpenAI completion body with 200 costs ~0.1 ms and serves tens of
thousands of requests per second on one worker, far above what the gateway under test reaches. One backend
Envoy process carries one listener per pool endpoint, so the picker and Envoy's round robin still see a pool
of distinct ``ip:port`` addresses.

The picker scrapes every endpoint's ``/metrics`` (every 50 ms by default), so the backend also answers
``GET /metrics`` with a real vLLM page: captured once from a simulated vLLM server (``simulator/``) when
that is importable, else a minimal page with the series the picker reads. Either way the picker sees fresh,
valid metrics and its scraping costs what it costs in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from stack.envoy_bootstrap import HostPort, parse_bootstrap
from stack.envoy_process import EnvoyProcess

_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# What a non-streaming /v1/completions answer with max_tokens=1 looks like (the picker reads ``usage``).
COMPLETION_BODY: bytes = orjson.dumps(
    {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "text": " hi", "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
)


# The series the picker reads from vLLM (endpoint_picker/datalayer/mapping.py), idle values.
MINIMAL_VLLM_PAGE: bytes = b"""\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="29000"} 1.0
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 0.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 0.0
"""
_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def capture_vllm_page(within: float = 60.0) -> tuple[bytes, str]:
    """A real vLLM ``/metrics`` page from a simulated vLLM server after a few requests, and where it came
    from; the minimal page if the simulator is not available or fails."""
    try:
        import aiohttp

        from simulator.server import SimServer, SimServerConfig
    except ImportError:
        return MINIMAL_VLLM_PAGE, "minimal built-in page (simulator not importable)"
    try:
        async with asyncio.timeout(within):
            config = SimServerConfig(name="bench-capture", time_scale=50.0)
            server = await SimServer(config).start()
            try:
                async with aiohttp.ClientSession() as session:
                    for i in range(8):
                        body = {"model": config.served_model_name, "prompt": "hello world " * (4 + i), "max_tokens": 4}
                        async with session.post(server.url + "/v1/completions", json=body) as resp:
                            await resp.read()
                    async with session.get(server.url + "/metrics") as resp:
                        page = await resp.read()
            finally:
                await server.stop()
    except Exception as exc:  # the benchmark must run without a working simulator
        return MINIMAL_VLLM_PAGE, f"minimal built-in page (capture failed: {exc!r})"
    return page, f"captured from a simulated vLLM server ({len(page)} bytes)"


def _route(prefix: str, body: bytes, content_type: str, name: str) -> dict[str, Any]:
    return {
        "match": {"prefix": prefix},
        "direct_response": {"status": 200, "body": {"inline_string": body.decode()}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type}},
            {"header": {"key": "x-served-by", "value": name}},
        ],
    }


def _listener(index: int, host: HostPort, body: bytes, metrics_page: bytes) -> dict[str, Any]:
    name = f"backend_{index}"
    return {
        "name": name,
        "address": {"socket_address": {"address": host.host, "port_value": host.port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": _HCM_TYPE,
                            "stat_prefix": name,
                            "codec_type": "AUTO",
                            "route_config": {
                                "name": name,
                                # Default limit 4 KiB; a vLLM page is ~10-50 KiB.
                                "max_direct_response_body_size_bytes": max(len(body), len(metrics_page)) + 1024,
                                "virtual_hosts": [
                                    {
                                        "name": "all",
                                        "domains": ["*"],
                                        "routes": [
                                            _route("/metrics", metrics_page, _METRICS_CONTENT_TYPE, name),
                                            _route("/", body, "application/json", name),
                                        ],
                                    }
                                ],
                            },
                            "http_filters": [
                                {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER_TYPE}}
                            ],
                        },
                    }
                ]
            }
        ],
    }


def backend_bootstrap(
    endpoints: Sequence[HostPort],
    *,
    admin_port: int,
    body: bytes = COMPLETION_BODY,
    metrics_page: bytes = MINIMAL_VLLM_PAGE,
) -> dict[str, Any]:
    """A bootstrap with one ``direct_response`` listener per endpoint; checked by the stack's typed parser."""
    doc: dict[str, Any] = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [_listener(i, h, body, metrics_page) for i, h in enumerate(endpoints)]
        },
    }
    parse_bootstrap(doc)
    return doc


def backend_envoy(
    endpoints: Sequence[HostPort],
    *,
    admin_port: int,
    work_dir: Path,
    body: bytes = COMPLETION_BODY,
    metrics_page: bytes = MINIMAL_VLLM_PAGE,
) -> EnvoyProcess:
    """The backend Envoy (not started): config written to ``work_dir/backend.yaml``, log beside it."""
    path = work_dir / "backend.yaml"
    doc = backend_bootstrap(endpoints, admin_port=admin_port, body=body, metrics_page=metrics_page)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
    return EnvoyProcess(path, admin_address="127.0.0.1", admin_port=admin_port, log_path=work_dir / "backend.log")
