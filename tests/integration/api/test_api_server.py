"""The picker API over real sockets (no Envoy): the service on an in-process ext_proc server, and the
``explain``/``state``/``decisions`` commands against it and against a ``endpoint-picker serve`` process.

Requests are routed by speaking ext_proc to the picker directly, as Envoy would, so every decision explained
here came from the real request path.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import orjson
import pytest
import yaml
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from endpoint_picker.cli import build_parser
from endpoint_picker.datalayer.model import EndpointMetrics
from endpoint_picker.datastore import Endpoint
from extproc.server import ExtProcServer, ServerOptions
from picker_api.client import Target, open_channel
from picker_api.servicer import PickerApiServicer
from picker_api.stubs import SERVICE_NAME, picker_pb2_grpc
from picker_api.stubs import picker_pb2 as pb
from stack.picker_process import PickerPorts, PickerProcess, PickerSettings
from stack.ports import free_port
from tests.unit.conftest import Picker
from tests.unit.extproc_messages import destination_of, request_body, request_headers

ENDPOINTS = (
    Endpoint("ep-a", "10.0.0.1", 8000, {"role": "serve"}),
    Endpoint("ep-b", "10.0.0.2", 8000, {"role": "serve"}),
    Endpoint("ep-c", "10.0.0.3", 8000, {"role": "serve"}),
    Endpoint("ep-d", "10.0.0.4", 8000, {"role": "standby"}),
)
A, B, C, D = (e.key for e in ENDPOINTS)

CONFIG = """
plugins:
- type: by-label
  parameters: {label: role, validValues: [serve]}
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: max-score-picker
  parameters: {maxNumOfEndpoints: 2}
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: by-label
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - pluginRef: max-score-picker
"""

PROMPT = "You are a careful assistant. " * 20  # several 64-byte prefix blocks


def body(model: str = "llama") -> bytes:
    return orjson.dumps({"model": model, "prompt": PROMPT, "max_tokens": 4})


class Running:
    """A picker with the API on its ext_proc port, and an ext_proc client that routes requests to it."""

    def __init__(self, picker: Picker, server: ExtProcServer, api: PickerApiServicer, channel: grpc.aio.Channel,
                 target: Target) -> None:
        self.picker = picker
        self.server = server
        self.api = api
        self.channel = channel
        self.target = target
        self.stub = picker_pb2_grpc.EndpointPickerServiceStub(channel)
        self._calls: list[grpc.aio.StreamStreamCall] = []

    async def route(self, request_id: str, model: str = "llama") -> str:
        """Send one request's headers and body; return the destination. The stream stays open (in flight)."""
        call = external_processor_pb2_grpc.ExternalProcessorStub(self.channel).Process()
        self._calls.append(call)
        await call.write(request_headers(extra={"x-request-id": request_id}))
        await call.write(request_body(body(model)))
        header, _ = destination_of(await call.read())
        return header.split(",")[0]

    def finish_all(self) -> None:
        for call in self._calls:
            call.cancel()


async def _open(secure: bool) -> Running:
    picker = Picker(ENDPOINTS, config=CONFIG)
    clock = picker.store.clock
    picker.store.put(A, EndpointMetrics(scraped_at=clock(), waiting_queue_size=4, running_requests=3,
                                        kv_cache_usage=0.5, block_size=16, num_gpu_blocks=1000))
    picker.store.put(B, EndpointMetrics(scraped_at=clock(), kv_cache_usage=0.1, block_size=16))
    picker.store.put(C, EndpointMetrics(scraped_at=clock() - 60, block_size=16))  # stale: counts as saturated
    server = ExtProcServer(picker.director, ServerOptions(grpc_port=0, grpc_health_port=0,
                                                          bind_address="127.0.0.1", secure_serving=secure))
    api = PickerApiServicer(picker.datastore, picker.scheduler, picker.inflight, picker.store,
                            staleness_threshold=2.0)
    server.add_service(api.register, api.SERVICE_NAME, on_drain=api.close)
    await server.start()
    await server.set_ready(True)
    target = Target(address=f"127.0.0.1:{server.grpc_port}", tls=secure, timeout=5.0)
    return Running(picker, server, api, await open_channel(target), target)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = await _open(secure=False)
    try:
        yield r
    finally:
        r.finish_all()
        await r.channel.close()
        await r.server.drain(0)


async def until(predicate) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_explain_returns_the_decision_of_a_routed_request(running: Running) -> None:
    picked = await running.route("req-api-1")
    reply = await running.stub.Explain(pb.ExplainRequest(request_id="req-api-1"), timeout=5)
    d = reply.decision
    assert (d.request_id, d.model, d.outcome) == ("req-api-1", "llama", pb.OUTCOME_SCHEDULED)
    assert d.pick == picked and len(d.fallbacks) == 1 and d.fallbacks[0] != picked
    assert list(d.candidates) == [A, B, C, D] and d.primary_profile == "default"
    (p,) = d.profiles
    assert [(f.filter, list(f.removed_endpoints)) for f in p.filters] == [("by-label", [D])]
    assert list(p.scored_endpoints) == [A, B, C]
    assert [(s.scorer, s.weight) for s in p.scorers] == [
        ("queue-scorer", 2.0), ("kv-cache-utilization-scorer", 2.0), ("prefix-cache-scorer", 3.0)]
    totals = {t.endpoint: t.total for t in p.totals}
    for key in (A, B, C):
        weighted = [s.weighted for scorer in p.scorers for s in scorer.scores if s.endpoint == key]
        assert sum(weighted) == pytest.approx(totals[key])
    assert max(totals, key=lambda k: totals[k]) == picked
    assert list(p.picked) == [d.pick, *d.fallbacks]
    assert [t.stage for t in d.timings][-1] == "total"
    # The same record as /debug/decisions serves.
    assert running.picker.decisions.get("req-api-1").pick == picked


async def test_explain_unknown_or_missing_request_id(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stub.Explain(pb.ExplainRequest(request_id="never-seen"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "never-seen" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stub.Explain(pb.ExplainRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_state_shows_metrics_in_flight_and_prefix_index(running: Running) -> None:
    picked = await running.route("req-api-2")
    state = (await running.stub.GetState(pb.GetStateRequest(), timeout=5)).state
    assert (state.pool.name, state.synced, state.decisions_recorded) == ("local-pool", True, 1)
    assert state.staleness_threshold.ToSeconds() == 2
    by_key = {e.key: e for e in state.endpoints}
    assert list(by_key) == [A, B, C, D]
    a = by_key[A]
    assert (a.name, a.address, a.port, dict(a.labels)) == ("ep-a", "10.0.0.1", 8000, {"role": "serve"})
    assert (a.metrics.waiting_queue_size, a.metrics.running_requests, a.metrics.kv_cache_usage) == (4, 3, 0.5)
    assert not a.metrics.stale and a.metrics.age.ToMilliseconds() < 5000
    assert by_key[C].metrics.stale and by_key[C].metrics.age.ToSeconds() >= 60
    assert not by_key[D].HasField("metrics")
    # The request is still in flight (its stream is open) and its prompt's blocks are indexed on its pick.
    assert by_key[picked].in_flight.requests == 1 and by_key[picked].in_flight.tokens > 0
    assert by_key[picked].prefix_index_entries > 0
    assert sum(e.in_flight.requests for e in state.endpoints) == 1
    assert [(i.plugin, i.entries) for i in state.prefix_indexes] == [
        ("approx-prefix-cache-producer", by_key[picked].prefix_index_entries)]
    # Shared prefix: the next request sticks to the endpoint holding it, and says so in its decision.
    assert await running.route("req-api-3") == picked
    d = (await running.stub.Explain(pb.ExplainRequest(request_id="req-api-3"), timeout=5)).decision
    prefix = next(s for s in d.profiles[0].scorers if s.scorer == "prefix-cache-scorer")
    assert {s.endpoint: s.raw for s in prefix.scores}[picked] == 1.0


async def test_stream_replays_recent_then_follows_live_and_unsubscribes_on_cancel(running: Running) -> None:
    await running.route("req-old")
    call = running.stub.StreamDecisions(pb.StreamDecisionsRequest(recent=5))
    first = await call.read()
    assert first.decision.request_id == "req-old"
    await until(lambda: running.api.active_streams == 1)
    await running.route("req-live-1", model="other")
    await running.route("req-live-2")
    assert [(await call.read()).decision.request_id for _ in range(2)] == ["req-live-1", "req-live-2"]
    call.cancel()
    await until(lambda: running.api.active_streams == 0)
    await running.route("req-after")  # no subscriber left to feed
    assert running.api.active_streams == 0


async def test_stream_filters_by_model_and_stops_at_limit_or_after_recent(running: Running) -> None:
    for i, model in enumerate(["llama", "other", "llama", "llama"]):
        await running.route(f"req-{i}", model=model)
    only_recent = running.stub.StreamDecisions(pb.StreamDecisionsRequest(recent=10, recent_only=True,
                                                                         model="llama"))
    assert [r.decision.request_id async for r in only_recent] == ["req-0", "req-2", "req-3"]
    limited = running.stub.StreamDecisions(pb.StreamDecisionsRequest(recent=2, limit=3))
    got = [r.decision.request_id for r in [await limited.read(), await limited.read()]]
    assert got == ["req-2", "req-3"]
    await running.route("req-4")
    assert (await limited.read()).decision.request_id == "req-4"
    assert await limited.read() is grpc.aio.EOF  # the limit ended the stream
    assert await limited.code() == grpc.StatusCode.OK
    await until(lambda: running.api.active_streams == 0)


async def test_drain_ends_open_streams_without_waiting_for_the_grace() -> None:
    r = await _open(secure=False)
    try:
        call = r.stub.StreamDecisions(pb.StreamDecisionsRequest())
        await until(lambda: r.api.active_streams == 1)
        started = time.monotonic()
        await r.server.drain(10)
        assert time.monotonic() - started < 5
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        assert r.api.active_streams == 0
    finally:
        await r.channel.close()


async def test_reflection_lists_the_api_next_to_ext_proc(running: Running) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)]
    replies = [reply async for reply in stub.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE_NAME, "envoy.service.ext_proc.v3.ExternalProcessor"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto


async def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = build_parser().parse_args(argv)
    code = await args.run(args)
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_commands_over_tls_trusting_the_self_signed_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    r = await _open(secure=True)  # the server made its own certificate; the client fetches and trusts it
    try:
        picked = await r.route("req-cli-1")
        address = ["--address", r.target.address]

        code, out, _ = await _cli(["explain", "req-cli-1", *address], capsys)
        assert code == 0
        assert "request     req-cli-1" in out and f"pick        {picked}" in out
        assert f"by-label  1: {D}" in out and "prefix-cache-scorer x3" in out
        assert next(line for line in out.splitlines() if line.startswith(f"    {picked}")).endswith("pick")

        code, out, _ = await _cli(["explain", "req-cli-1", "--json", *address], capsys)
        assert code == 0 and orjson.loads(out)["pick"] == picked

        code, out, err = await _cli(["explain", "nope", *address], capsys)
        assert code == 1 and out == "" and "nope" in err

        code, out, _ = await _cli(["state", *address], capsys)
        assert code == 0 and "local-pool" in out
        row = next(line for line in out.splitlines() if line.startswith(picked))
        assert row.split()[6] == "1"  # in flight

        code, out, _ = await _cli(["decisions", "--recent", "5", *address], capsys)
        assert code == 0 and "req-cli-1" in out and f"-> {picked}" in out

        follow = build_parser().parse_args(["decisions", "--follow", "--recent", "0", "--limit", "1", "--json",
                                            *address])
        follower = asyncio.create_task(follow.run(follow))
        await until(lambda: r.api.active_streams == 1)
        live = await r.route("req-cli-live")
        async with asyncio.timeout(5):
            assert await follower == 0
        line = orjson.loads(capsys.readouterr().out)
        assert (line["requestId"], line["pick"]) == ("req-cli-live", live)

        code, _, err = await _cli(["state", "--insecure", "--timeout", "2", *address], capsys)
        assert code == 3 and "UNAVAILABLE" in err
    finally:
        r.finish_all()
        await r.channel.close()
        await r.server.drain(0)


async def _run_cli_process(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "endpoint_picker", *argv,
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()  # our own child, by its handle
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_against_a_picker_process(tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text(yaml.safe_dump({"pool": {"name": "api-pool"}, "endpoints": [
        {"name": e.name, "address": "127.0.0.1", "port": free_port(), "labels": dict(e.labels)}
        for e in ENDPOINTS[:2]]}))
    ports = PickerPorts(grpc=free_port(), health=free_port(), metrics=free_port())
    picker = PickerProcess(PickerSettings(ports=ports, endpoints_file=endpoints, health_checking=False),
                           tmp_path / "picker.log")
    await picker.start(ready_within=30)
    try:
        address = f"127.0.0.1:{ports.grpc}"
        # Route one request over TLS, as Envoy would (trusting the picker's self-signed certificate).
        pem = (await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", ports.grpc))).encode()
        channel = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=pem),
                                          options=[("grpc.ssl_target_name_override", "endpoint-picker")])
        async with channel:
            call = external_processor_pb2_grpc.ExternalProcessorStub(channel).Process()
            await call.write(request_headers(extra={"x-request-id": "req-proc-1"}))
            await call.write(request_body(body()))
            picked = destination_of(await call.read())[0].split(",")[0]

            # Two commands, run concurrently: each process pays the CLI's import time (the in-process test
            # above covers every command's output and errors).
            (c1, explained, e1), (c2, state, e2) = await asyncio.gather(
                _run_cli_process("explain", "req-proc-1", "--address", address),
                _run_cli_process("state", "--address", address, "--json"),
            )
            call.cancel()
        assert c1 == 0, e1
        assert "request     req-proc-1" in explained
        assert f"pick        {picked}" in explained and "prefix-cache-scorer x3" in explained
        assert c2 == 0, e2
        doc = orjson.loads(state)
        assert doc["pool"]["name"] == "api-pool" and doc["decisionsRecorded"] == "1"  # uint64 -> JSON string
        assert {e["key"]: e["inFlight"]["requests"] for e in doc["endpoints"]}[picked] == "1"
    finally:
        await picker.stop(5)
