"""Assembly of the gRPC side: the ext_proc server (TLS by default), gRPC health, reflection, graceful drain.

Health follows the upstream EPP: service ``liveness`` is SERVING while the process is up; ``readiness``,
``envoy.service.ext_proc.v3.ExternalProcessor`` and ``""`` are SERVING only once the picker can route (its
datastore has synced). On drain they flip to NOT_SERVING first, then the server stops taking new streams and
gives in-flight ones a bounded grace period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from endpoint_picker.director import Director
from extproc import tls
from extproc.constants import EXT_PROC_SERVICE_NAME
from extproc.servicer import ExternalProcessor

log = logging.getLogger(__name__)

LIVENESS = "liveness"
READINESS_SERVICES = ("readiness", EXT_PROC_SERVICE_NAME, "")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(slots=True)
class ServerOptions:
    grpc_port: int = 9002
    grpc_health_port: int = 9003
    bind_address: str = "[::]"
    secure_serving: bool = True
    cert_path: Path | None = None
    health_checking: bool = False  # also serve gRPC health on the ext_proc port (for proxy health checks)
    max_request_body_bytes: int = 32 * 1024 * 1024
    grpc_max_recv_msg_size: int = 32 * 1024 * 1024
    grpc_max_send_msg_size: int = 32 * 1024 * 1024


class ExtProcServer:
    """Owns the two gRPC servers (ext_proc and health) of one picker process."""

    def __init__(self, director: Director, options: ServerOptions) -> None:
        self._options = options
        grpc_options = [
            ("grpc.so_reuseport", 0),  # a stale second picker must fail to bind, not silently share the port
            ("grpc.max_receive_message_length", options.grpc_max_recv_msg_size),
            ("grpc.max_send_message_length", options.grpc_max_send_msg_size),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
        self.servicer = ExternalProcessor(director, max_body_bytes=options.max_request_body_bytes)
        self._server = grpc.aio.server(options=grpc_options)
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(self.servicer, self._server)
        self._health = [health_aio.HealthServicer()]
        self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self._health[0], self._health_server)
        self._reflected = [
            external_processor_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        if options.health_checking:
            extra = health_aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(extra, self._server)
            self._health.append(extra)
        self._on_drain: list[Callable[[], None]] = []
        self.grpc_port = 0
        self.health_port = 0

    def add_service(self, register: Callable[[grpc.aio.Server], None], service_name: str,
                    on_drain: Callable[[], None] | None = None) -> None:
        """Serve another service on the ext_proc port (before :meth:`start`); reflection lists it.

        ``register`` adds the servicer to the server (a generated ``add_*Servicer_to_server`` bound to it);
        ``on_drain`` is called when draining starts, e.g. to end long-lived streams the grace would wait for.
        """
        register(self._server)
        self._reflected.append(service_name)
        if on_drain is not None:
            self._on_drain.append(on_drain)

    async def start(self) -> None:
        reflection.enable_server_reflection(self._reflected, self._server)
        o = self._options
        address = f"{o.bind_address}:{o.grpc_port}"
        if o.secure_serving:
            key, cert = tls.from_directory(o.cert_path) if o.cert_path else tls.self_signed()
            self.grpc_port = self._server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            self.grpc_port = self._server.add_insecure_port(address)
        self.health_port = self._health_server.add_insecure_port(f"{o.bind_address}:{o.grpc_health_port}")
        await self._set(LIVENESS, _SERVING)
        await self.set_ready(False)
        await self._health_server.start()
        await self._server.start()
        log.info("ext_proc listening on %s (%s), health on %d", self.grpc_port,
                 "TLS" if o.secure_serving else "plaintext", self.health_port)

    async def set_ready(self, ready: bool) -> None:
        for name in READINESS_SERVICES:
            await self._set(name, _SERVING if ready else _NOT_SERVING)

    async def drain(self, grace: float) -> None:
        """Stop taking new streams; give in-flight ones ``grace`` seconds, then cancel them."""
        await self.set_ready(False)
        for hook in self._on_drain:
            hook()
        log.info("draining: %d streams in flight, grace %.1fs", self.servicer.active_streams, grace)
        await self._server.stop(grace)
        await self._health_server.stop(0)

    async def _set(self, service: str, status: int) -> None:
        for servicer in self._health:
            await servicer.set(service, status)
