"""Routing through the real Envoy, in FULL_DUPLEX_STREAMED and BUFFERED, with TLS to the picker.

What a user of the gateway relies on: errors come back as JSON with the right status, the client never
chooses the destination, streams pass through untouched, the picker's in-flight accounting returns to zero
(also when the client hangs up mid-stream), routing follows endpoint changes, a dead primary falls back,
FailOpen keeps serving when the picker dies, and a draining picker finishes what it started.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stack.access_log import entry_for_request
from stack.background import BackgroundStack
from stack.envoy_bootstrap import BodyMode, FailureMode
from stack.http_client import request as http_request
from stack.polling import wait_until

StackFactory = object  # the fixture's factory: factory(**StackOptions fields) -> BackgroundStack


def last_post(stack: BackgroundStack, name: str | None):
    """The last inference request a stand-in received (the picker also scrapes its /metrics with GETs)."""
    assert name is not None
    return next(r for r in reversed(stack.standin(name).received) if r.method == "POST")


def inflight(stack: BackgroundStack) -> dict[str, float]:
    """The picker's own in-flight counts per endpoint, read from its /metrics."""
    text = http_request(f"http://127.0.0.1:{stack.picker_ports.metrics}/metrics").text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "endpoint_picker_endpoint_inflight_requests":
            for sample in family.samples:
                counts[sample.labels["endpoint"]] = sample.value
    return counts


@pytest.mark.parametrize(("path", "body", "fragment"), [
    ("/v1/completions", b'{"model": "m", "prompt": ', "not valid JSON"),
    ("/v1/completions", b'{"prompt": "no model"}', "model not found"),
    ("/v1/chat/completions", b'{"model": "m"}', "at least one message"),
])
def test_bad_requests_get_a_json_400(gateway: BackgroundStack, path: str, body: bytes, fragment: str) -> None:
    request_id = str(uuid.uuid4())
    result = gateway.client().post(path, body=body, headers={"content-type": "application/json",
                                                             "x-request-id": request_id})
    assert result.status == 400, result.text
    assert result.headers["content-type"] == "application/json"
    assert fragment in result.json()["error"]["message"]
    assert result.served_by is None
    assert entry_for_request(gateway.access_log_path, request_id).details == "epp_BadRequest"


def test_post_without_a_body_is_routed_on_its_headers(gateway: BackgroundStack) -> None:
    # Envoy sends no body message at all for Content-Length: 0, so this is a header-only request: like the
    # reference EPP, the picker routes it without scheduling, and the model server judges the request.
    result = gateway.client().post("/v1/completions", body=b"", headers={"content-type": "application/json"})
    assert result.status == 400 and result.served_by is not None


def test_client_destination_header_does_not_decide_the_route(gateway: BackgroundStack) -> None:
    target = gateway.endpoints[0]
    served: Counter[str] = Counter()
    for i in range(9):
        request_id = str(uuid.uuid4())
        result = gateway.client().completion(f"forged {i}", headers={
            "x-request-id": request_id,
            "x-gateway-destination-endpoint": target.address,
            "x-gateway-destination-endpoint-served": target.address,
        })
        assert result.status == 200, result.text
        served[result.served_by] += 1
        picked = entry_for_request(gateway.access_log_path, request_id).destination
        assert picked is not None and picked.split(",")[0] == result.served_by_address
        # What the model server saw is the picker's choice, not the client's.
        seen = last_post(gateway, result.served_by).headers["x-gateway-destination-endpoint"]
        assert seen == picked
    assert len(served) > 1, served  # the least-loaded policy spreads; a forged header would pin one host


def test_sse_stream_passes_through_byte_identical(gateway: BackgroundStack) -> None:
    for kind in ("chat", "completion"):
        call = gateway.client().chat if kind == "chat" else gateway.client().completion
        result = call("stream me", stream=True, max_tokens=12)
        assert result.status == 200, result.text
        assert result.headers["content-type"].startswith("text/event-stream")
        sent = bytes(last_post(gateway, result.served_by).sent)
        assert sent and result.body == sent


def test_in_flight_accounting_returns_to_zero(gateway: BackgroundStack) -> None:
    client = gateway.client()
    for stream in (False, True, False, True):
        assert client.chat("count me", stream=stream).status == 200
    assert client.get("/v1/models").status == 200  # header-only: routed on the headers
    wait_until(lambda: not any(inflight(gateway).values()), what="in-flight back to zero")


async def test_client_disconnect_mid_stream_releases_in_flight(gateway: BackgroundStack) -> None:
    body = {"model": "standin-model", "prompt": "a long answer", "max_tokens": 50, "stream": True}
    async with aiohttp.ClientSession() as session, session.post(
        gateway.gateway_url + "/v1/completions", json=body, headers={"x-standin-token-delay-ms": "200"}
    ) as resp:
        assert resp.status == 200
        await resp.content.readline()  # the first token arrived: the request is in flight
        if gateway.options.body_mode is BodyMode.BUFFERED:
            # This gateway sends the picker response headers but no body (as BUFFERED gateways do): the
            # picker's view of the request ends with the headers, so nothing is in flight any more.
            assert sum(inflight(gateway).values()) == 0
            return
        assert sum(inflight(gateway).values()) == 1
        resp.close()  # hang up 10 s before the stream would end
    await asyncio.to_thread(wait_until, lambda: not any(inflight(gateway).values()), what="release on disconnect",
                            within=5.0)


def test_routing_follows_the_endpoints_file(gateway: BackgroundStack) -> None:
    everyone = gateway.endpoints
    only = everyone[2]
    try:
        gateway.write_endpoints_file([only])
        wait_until(lambda: ready_pods(gateway) == 1, what="file reload")
        assert {gateway.client().completion(f"again {i}").served_by for i in range(5)} == {only.name}
        gateway.write_endpoints_file([])
        result = wait_until(lambda: (r := gateway.client().completion("anyone?")).status == 503 and r,
                            what="empty pool")
        assert "no endpoints" in result.json()["error"]["message"]
    finally:
        gateway.write_endpoints_file(everyone)
        wait_until(lambda: ready_pods(gateway) == len(everyone), what="pool restored")


def ready_pods(stack: BackgroundStack) -> float:
    """``inference_pool_ready_pods``: how many endpoints the picker currently routes to."""
    return picker_metric(stack, "inference_pool_ready_pods")


def picker_metric(stack: BackgroundStack, name: str) -> float:
    text = http_request(f"http://127.0.0.1:{stack.picker_ports.metrics}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == name for s in f.samples)


# The default profile plus session affinity, so a test can make the picker choose a given endpoint first.
PINNABLE = """
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: session-affinity-scorer
- type: max-score-picker
  parameters: {maxNumOfEndpoints: 3}
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: session-affinity-scorer, weight: 100}
"""


@pytest.mark.parametrize("body_mode", list(BodyMode), ids=str)
def test_dead_primary_falls_back_to_the_next_endpoint(fresh_gateway, body_mode: BodyMode) -> None:
    stack = fresh_gateway(body_mode=body_mode, picker_extra_args=("--config-text", PINNABLE))
    dead = stack.endpoints[0]
    stack.call(stack.standin(dead.name).stop())
    token = base64.b64encode(f"default/{dead.name}".encode()).decode()
    for i in range(4):
        request_id = str(uuid.uuid4())
        result = stack.client().completion(f"try {i}", headers={"x-request-id": request_id,
                                                               "x-session-token": token})
        assert result.status == 200, result.text
        targets = entry_for_request(stack.access_log_path, request_id).destination.split(",")
        assert len(targets) == 3 and targets[0] == dead.address  # the picker chose the dead endpoint first...
        assert result.served_by_address == targets[1]  # ...and Envoy retried the first fallback, in order
    wait_until(lambda: not any(inflight(stack).values()), what="in-flight back to zero")


@pytest.mark.parametrize("body_mode", list(BodyMode), ids=str)
def test_failopen_keeps_serving_when_the_picker_dies(fresh_gateway, body_mode: BodyMode) -> None:
    stack = fresh_gateway(body_mode=body_mode, failure_mode=FailureMode.FAIL_OPEN)
    assert stack.client().completion("with picker").status == 200
    stack.kill_picker()
    stack.wait_picker_in_envoy(healthy=False)
    served = {stack.client().completion(f"without picker {i}").served_by for i in range(6)}
    assert served == {e.name for e in stack.endpoints}  # the override_host fallback: round robin


async def test_draining_picker_finishes_the_stream_it_routed(fresh_gateway) -> None:
    stack = await asyncio.to_thread(fresh_gateway, failure_mode=FailureMode.FAIL_CLOSE)
    body = {"model": "standin-model", "prompt": "slow", "max_tokens": 10, "stream": True}
    async with aiohttp.ClientSession() as session, session.post(
        stack.gateway_url + "/v1/completions", json=body, headers={"x-standin-token-delay-ms": "100"}
    ) as resp:
        assert resp.status == 200
        await resp.content.readline()
        stopping = asyncio.create_task(asyncio.to_thread(stack.stop_picker, 20.0))
        rest = await resp.content.read()
    assert rest.rstrip().endswith(b"data: [DONE]")
    assert await stopping == 0  # SIGTERM: drained and exited cleanly before the grace ran out
