"""The ext_proc gRPC server over a real socket (no Envoy): TLS, health, stream resets, graceful drain."""

from __future__ import annotations

import asyncio

import grpc
import orjson
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.server import ExtProcServer, ServerOptions
from tests.unit.conftest import Picker
from tests.unit.extproc_messages import destination_of, request_body, request_headers, response_headers

BODY = orjson.dumps({"model": "m", "prompt": "hi"})


async def started(picker: Picker, **overrides) -> ExtProcServer:
    options = ServerOptions(grpc_port=0, grpc_health_port=0, bind_address="127.0.0.1", secure_serving=False)
    for key, value in overrides.items():
        setattr(options, key, value)
    server = ExtProcServer(picker.director, options)
    await server.start()
    await server.set_ready(True)
    return server


async def until(predicate) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_tls_stream_routes_and_health_reports_readiness() -> None:
    picker = Picker()
    server = await started(picker, secure_serving=True)
    try:
        # The server made its own self-signed certificate at start: fetch it and trust exactly that one.
        pem = await asyncio.to_thread(_fetch_certificate, server.grpc_port)
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{server.grpc_port}", grpc.ssl_channel_credentials(root_certificates=pem),
            options=[("grpc.ssl_target_name_override", "endpoint-picker")])
        async with channel:
            call = external_processor_pb2_grpc.ExternalProcessorStub(channel).Process()
            await call.write(request_headers())
            await call.write(request_body(BODY))
            routed = await call.read()
            header, metadata = destination_of(routed)
            assert header == metadata
            await call.done_writing()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as health:
            stub = health_pb2_grpc.HealthStub(health)
            for name in ("liveness", "readiness", "", "envoy.service.ext_proc.v3.ExternalProcessor"):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
            await server.set_ready(False)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            reply = await stub.Check(health_pb2.HealthCheckRequest(service="liveness"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.drain(0)


def _fetch_certificate(port: int) -> bytes:
    import ssl

    return ssl.get_server_certificate(("127.0.0.1", port)).encode()


async def test_cancelled_stream_releases_in_flight_count() -> None:
    picker = Picker()
    server = await started(picker)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = external_processor_pb2_grpc.ExternalProcessorStub(channel)
            call = stub.Process()
            await call.write(request_headers())
            await call.write(request_body(BODY))
            await call.read()  # the routing headers answer
            await call.read()  # the echoed body
            await call.write(response_headers())
            await call.read()
            assert picker.inflight.total_requests() == 1
            call.cancel()  # what Envoy does when the client disconnects mid-response
            await until(lambda: picker.inflight.total_requests() == 0 and server.servicer.active_streams == 0)
    finally:
        await server.drain(0)


async def test_unsupported_mode_is_refused_with_invalid_argument() -> None:
    from tests.unit.extproc_messages import STREAMED

    picker = Picker()
    server = await started(picker)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            call = external_processor_pb2_grpc.ExternalProcessorStub(channel).Process()
            await call.write(request_headers(mode=STREAMED))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.drain(0)


async def test_drain_finishes_in_flight_streams_and_refuses_new_ones() -> None:
    picker = Picker()
    server = await started(picker)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = external_processor_pb2_grpc.ExternalProcessorStub(channel)
        call = stub.Process()
        await call.write(request_headers())
        await call.write(request_body(BODY))
        assert (await call.read()).WhichOneof("response") == "request_headers"
        assert (await call.read()).WhichOneof("response") == "request_body"
        drain = asyncio.create_task(server.drain(10))
        # Probe with header-only streams (they finish at once) until the draining server refuses one.
        async with asyncio.timeout(5):
            while await _header_only_stream_accepted(stub):
                await asyncio.sleep(0.005)
        # The stream that was in flight when the drain began still completes.
        await call.write(response_headers(end_of_stream=True))
        reply = await call.read()
        assert reply.WhichOneof("response") == "response_headers"
        await call.done_writing()
        await asyncio.wait_for(drain, 10)
    assert picker.inflight.total_requests() == 0


async def _header_only_stream_accepted(stub: external_processor_pb2_grpc.ExternalProcessorStub) -> bool:
    probe = stub.Process()
    try:
        await probe.write(request_headers(end_of_stream=True))
        await probe.read()
        await probe.done_writing()
        await probe
    except grpc.aio.AioRpcError:
        return False
    return True
