"""Smoke tests of the local-gateway harness itself: bootstrap, stand-ins, Envoy without and with the picker.

These check the pieces in ``stack/`` (so that a failing picker test can be trusted to be about the picker):
the bootstrap is valid for Envoy in every mode, typos fail in Python, the stand-in speaks correct SSE, FailOpen
really serves by round robin when the picker is down, and a client can never choose the upstream host with
``x-gateway-destination-endpoint``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from stack.access_log import entry_for_request
from stack.background import BackgroundStack
from stack.envoy_bootstrap import (
    DEFAULT_TEMPLATE,
    BodyMode,
    BootstrapError,
    FailureMode,
    GatewayConfig,
    HostPort,
    PoolRouting,
    build_bootstrap,
    envoy_validate,
    load_template,
    parse_bootstrap,
    write_bootstrap,
)
from stack.http_client import async_request, sse_data
from stack.polling import wait_until
from stack.standin_server import StandinOptions, StandinServer

pytestmark = pytest.mark.integration

ENDPOINTS = [HostPort("127.0.0.2", 8000), HostPort("127.0.0.3", 8000)]
StackFactory = Callable[..., BackgroundStack]


# --- bootstrap ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure_mode", list(FailureMode))
@pytest.mark.parametrize("body_mode", list(BodyMode))
def test_bootstrap_validates_in_envoy(tmp_path: Path, body_mode: BodyMode, failure_mode: FailureMode) -> None:
    config = GatewayConfig(endpoints=ENDPOINTS, body_mode=body_mode, failure_mode=failure_mode,
                           subset_hint=["127.0.0.2:8000"], subset_hint_port=8082, picker_health_check=True)
    result = envoy_validate(write_bootstrap(config, tmp_path / "envoy.yaml"))
    assert result.ok, result.output


@pytest.mark.parametrize(
    "variant",
    [
        {"picker_tls": False},
        {"subset_hint": [], "subset_hint_port": 8082},
        {"pool_routing": PoolRouting.ORIGINAL_DST},
        {"pool_routing": PoolRouting.ORIGINAL_DST, "body_mode": BodyMode.BUFFERED},
    ],
    ids=["plaintext", "empty-subset-hint", "original-dst-fds", "original-dst-buffered"],
)
def test_bootstrap_variants_validate_in_envoy(tmp_path: Path, variant: dict[str, object]) -> None:
    config = GatewayConfig(endpoints=ENDPOINTS, **variant)  # type: ignore[arg-type]
    result = envoy_validate(write_bootstrap(config, tmp_path / "envoy.yaml"))
    assert result.ok, result.output


def test_the_template_itself_is_a_valid_config() -> None:
    parse_bootstrap(load_template())
    result = envoy_validate(DEFAULT_TEMPLATE)
    assert result.ok, result.output


def test_processing_modes_match_the_body_mode() -> None:
    for body_mode, expected in [
        (BodyMode.FULL_DUPLEX_STREAMED,
         {"request_header_mode": "SEND", "request_body_mode": "FULL_DUPLEX_STREAMED", "request_trailer_mode": "SEND",
          "response_header_mode": "SEND", "response_body_mode": "FULL_DUPLEX_STREAMED",
          "response_trailer_mode": "SEND"}),
        (BodyMode.BUFFERED,
         {"request_header_mode": "SEND", "request_body_mode": "BUFFERED", "request_trailer_mode": "SKIP",
          "response_header_mode": "SEND", "response_trailer_mode": "SKIP"}),
    ]:
        doc = build_bootstrap(GatewayConfig(endpoints=ENDPOINTS, body_mode=body_mode))
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
        assert ext_proc["processing_mode"] == expected
        assert ("message_timeout" in ext_proc) == (body_mode is BodyMode.BUFFERED)


def test_a_typo_fails_in_python_with_its_location() -> None:
    doc = build_bootstrap(GatewayConfig(endpoints=ENDPOINTS))
    pool = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "pool")
    override = pool["load_balancing_policy"]["policies"][0]["typed_extension_config"]["typed_config"]
    override["override_host_source"] = override.pop("override_host_sources")
    with pytest.raises(BootstrapError, match=r"clusters\[pool\].*override_host_source.*OverrideHost"):
        parse_bootstrap(doc)


def test_fds_without_trailer_send_fails_in_python() -> None:
    doc = build_bootstrap(GatewayConfig(endpoints=ENDPOINTS))
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][0]["typed_config"]["processing_mode"]["request_trailer_mode"] = "SKIP"
    with pytest.raises(BootstrapError, match="trailer"):
        parse_bootstrap(doc)


# --- stand-in -----------------------------------------------------------------------------------------------


async def test_standin_sse_and_identity_headers() -> None:
    server = StandinServer("solo", "127.0.0.5", 0, StandinOptions(token_delay=0.001))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5,
                    "stream": True, "stream_options": {"include_usage": True}}
            result = await async_request(server.url + "/v1/chat/completions", "POST", json_body=body,
                                         session=session)
            assert result.status == 200
            assert result.headers["content-type"].startswith("text/event-stream")
            assert result.served_by == "solo"
            assert result.served_by_address == server.address
            raw = json.dumps(body).encode()
            assert result.headers["x-request-body-sha256"] == hashlib.sha256(raw).hexdigest()
            assert result.headers["x-request-body-length"] == str(len(raw))
            assert result.body.endswith(b"data: [DONE]\n\n")
            events = sse_data(result.body)
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            tokens = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
            assert len(tokens) == 5
            assert tokens[-1]["choices"][0]["finish_reason"] == "length"
            usage = chunks[-1]["usage"]
            assert chunks[-1]["choices"] == []
            assert usage["completion_tokens"] == 5
            assert usage["total_tokens"] == usage["prompt_tokens"] + 5
            assert "cached_tokens" in usage["prompt_tokens_details"]

            body["stream_options"] = {"include_usage": False}
            result = await async_request(server.url + "/v1/chat/completions", "POST", json_body=body,
                                         session=session)
            assert all("usage" not in json.loads(e) for e in sse_data(result.body)[:-1])

            result = await async_request(server.url + "/v1/completions", "POST",
                                         json_body={"prompt": "a b c", "max_tokens": 3}, session=session)
            completion = result.json()
            assert completion["object"] == "text_completion"
            assert completion["usage"]["completion_tokens"] == 3

            result = await async_request(server.url + "/v1/completions", "POST", body=b"{not json",
                                         headers={"content-type": "application/json"}, session=session)
            assert result.status == 400
            assert result.served_by == "solo"
    finally:
        await server.stop()


async def test_standin_accepts_large_chunked_bodies() -> None:
    server = StandinServer("big", "127.0.0.6", 0)
    await server.start()
    try:
        prompt = "word " * 1_000_000  # ~5 MB
        raw = json.dumps({"prompt": prompt, "max_tokens": 1}).encode()

        async def chunked():  # type: ignore[no-untyped-def]
            for start in range(0, len(raw), 65536):
                yield raw[start : start + 65536]

        async with aiohttp.ClientSession() as session, session.post(
            server.url + "/v1/completions", data=chunked(), headers={"content-type": "application/json"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["x-request-body-sha256"] == hashlib.sha256(raw).hexdigest()
        assert server.received[-1].chunked
    finally:
        await server.stop()


# --- Envoy without a picker ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=list(BodyMode), ids=str)
def picker_down_failopen(request: pytest.FixtureRequest, gateway_factory: StackFactory) -> BackgroundStack:
    return gateway_factory(body_mode=request.param, failure_mode=FailureMode.FAIL_OPEN, start_picker=False)


def test_failopen_without_picker_serves_round_robin(picker_down_failopen: BackgroundStack) -> None:
    client = picker_down_failopen.client()
    served = Counter()
    for _ in range(6):
        result = client.completion("no picker here")
        assert result.status == 200, result.text
        served[result.served_by] += 1
    assert set(served) == {e.name for e in picker_down_failopen.endpoints}
    assert max(served.values()) - min(served.values()) <= 1  # round robin, not random


def test_client_destination_header_is_ignored_when_picker_down(picker_down_failopen: BackgroundStack) -> None:
    client = picker_down_failopen.client()
    target = picker_down_failopen.endpoints[0]
    served = Counter()
    for _ in range(6):
        request_id = str(uuid.uuid4())
        result = client.completion(
            "let me choose", headers={"x-gateway-destination-endpoint": target.address, "x-request-id": request_id}
        )
        assert result.status == 200, result.text
        served[result.served_by] += 1
        entry = entry_for_request(picker_down_failopen.access_log_path, request_id)
        assert entry.destination is None
        assert not picker_down_failopen.standin(result.served_by).received[-1].headers.get(
            "x-gateway-destination-endpoint"
        )
    assert len(served) == len(picker_down_failopen.endpoints), served


def test_without_the_strips_a_client_could_choose_the_host(fresh_gateway: StackFactory, tmp_path: Path) -> None:
    """Negative control for the test above: remove both protections and the client's header wins."""
    doc = yaml.safe_load(DEFAULT_TEMPLATE.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["early_header_mutation_extensions"]
    del hcm["route_config"]["internal_only_headers"]
    template = tmp_path / "unprotected.yaml"
    template.write_text(yaml.safe_dump(doc))
    stack = fresh_gateway(body_mode=BodyMode.BUFFERED, failure_mode=FailureMode.FAIL_OPEN, start_picker=False,
                          envoy_template=template)
    target = stack.endpoints[0]
    served = {
        stack.client().completion("x", headers={"x-gateway-destination-endpoint": target.address}).served_by
        for _ in range(4)
    }
    assert served == {target.name}


def test_fds_failopen_needs_picker_health_checks(fresh_gateway: StackFactory) -> None:
    """Pins the Envoy behaviour behind ``picker_health_check``: without active health checks the failed
    stream surfaces after the body was handed to ext_proc, and FDS fail-open then answers 500."""
    stack = fresh_gateway(failure_mode=FailureMode.FAIL_OPEN, start_picker=False, picker_health_check=False)
    assert stack.client().completion("no picker, no health checks").status == 500
    assert stack.client().get("/v1/models").status == 200  # header-only requests still fail open


def test_failclose_without_picker_rejects(fresh_gateway: StackFactory) -> None:
    stack = fresh_gateway(failure_mode=FailureMode.FAIL_CLOSE, start_picker=False)
    result = stack.client().completion("no picker")
    assert result.status == 500
    assert result.served_by is None


def test_original_dst_never_uses_a_client_destination(fresh_gateway: StackFactory) -> None:
    stack = fresh_gateway(pool_routing=PoolRouting.ORIGINAL_DST, failure_mode=FailureMode.FAIL_OPEN,
                            start_picker=False)
    target = stack.endpoints[0]
    result = stack.client().completion("pick for me",
                                       headers={"x-gateway-destination-endpoint": target.address})
    # GIE-style ORIGINAL_DST has no fallback: without the picker there is no host at all, and the client's
    # header was removed before routing, so it cannot have been used.
    assert result.status == 503
    assert result.served_by is None


# --- with the picker ----------------------------------------------------------------------------------------


def test_requests_route_through_the_picker(gateway: BackgroundStack) -> None:
    client = gateway.client()
    for stream in (False, True):
        request_id = str(uuid.uuid4())
        result = client.chat("route me", stream=stream, headers={"x-request-id": request_id})
        assert result.status == 200, result.text
        assert result.served_by in {e.name for e in gateway.endpoints}
        entry = entry_for_request(gateway.access_log_path, request_id)
        assert entry.destination is not None, entry.raw
        assert entry.destination.split(",")[0] == result.served_by_address
        assert entry.served == result.served_by_address
        if stream:
            assert result.sse_events()[-1] == "[DONE]"


def test_body_arrives_intact(gateway: BackgroundStack) -> None:
    prompt = "lorem ipsum " * 40_000  # ~480 KB: several FDS chunks, below the BUFFERED 1 MiB limit
    body = json.dumps({"model": "standin-model", "prompt": prompt, "max_tokens": 2}).encode()
    result = gateway.client().post("/v1/completions", body=body, headers={"content-type": "application/json"})
    assert result.status == 200, result.text
    assert result.headers["x-request-body-sha256"] == hashlib.sha256(body).hexdigest()


def test_multi_megabyte_body(gateway: BackgroundStack) -> None:
    body = json.dumps({"model": "standin-model", "prompt": "w " * 1_500_000, "max_tokens": 1}).encode()  # 3 MB
    result = gateway.client().post("/v1/completions", body=body, headers={"content-type": "application/json"},
                                   chunk_size=256 * 1024)
    if gateway.options.body_mode is BodyMode.BUFFERED:
        assert result.status == 413  # Envoy's 1 MiB buffer limit, before the picker sees anything
        assert result.served_by is None
    else:
        assert result.status == 200, result.text
        assert result.headers["x-request-body-sha256"] == hashlib.sha256(body).hexdigest()


async def test_stream_arrives_token_by_token(gateway: BackgroundStack) -> None:
    body = {"model": "standin-model", "prompt": "tick", "max_tokens": 4, "stream": True}
    arrivals: list[float] = []
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session, session.post(
        gateway.gateway_url + "/v1/completions", json=body, headers={"x-standin-token-delay-ms": "150"}
    ) as resp:
        assert resp.status == 200
        started = loop.time()
        async for _line in resp.content:  # SSE lines as they arrive
            arrivals.append(loop.time() - started)
    assert arrivals[-1] >= 0.4  # 3 gaps of 150 ms
    assert arrivals[0] < 0.3  # the first token was not held back until the end


def test_picker_kill_and_restart(fresh_gateway: StackFactory) -> None:
    stack = fresh_gateway(failure_mode=FailureMode.FAIL_CLOSE)
    client = stack.client()
    assert client.completion("before").status == 200
    pid = stack.picker_pid
    assert stack.kill_picker() == -9
    stack.wait_picker_in_envoy(healthy=False)
    assert client.completion("while down").status == 500
    stack.start_picker()
    assert stack.picker_pid not in (None, pid)
    result = wait_until(lambda: (r := client.completion("after")).status == 200 and r, what="routing after restart")
    assert result.served_by is not None


def test_subset_hint_listener(fresh_gateway: StackFactory) -> None:
    stack = fresh_gateway(subset_hint=lambda endpoints: [endpoints[1].address])
    hinted = stack.endpoints[1]
    served = {stack.subset_hint_client().completion(f"hinted {i}").served_by for i in range(4)}
    assert served == {hinted.name}
    # the main listener of the same stack is not restricted
    assert stack.client().completion("unhinted").status == 200


def test_empty_subset_hint_is_sent(fresh_gateway: StackFactory) -> None:
    stack = fresh_gateway(subset_hint=[])
    result = stack.subset_hint_client().completion("nowhere to go")
    assert result.status == 503, result.text
    assert result.served_by is None
