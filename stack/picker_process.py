"""Run the endpoint picker (``python -m endpoint_picker serve``) as a child process of the stack.

Why this module exists: the gateway and the tests must treat the picker exactly as Envoy sees it — a separate
process that can be started late, killed with SIGKILL, and restarted on the same ports — so it is never run
in-process here. Readiness is the picker's own gRPC health service ``readiness`` on its (plaintext) health
port, the same signal a Kubernetes readiness probe would use.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stack.child_process import ManagedProcess


class PickerError(RuntimeError):
    """The picker did not become ready or died during startup."""


@dataclass
class PickerPorts:
    grpc: int
    health: int
    metrics: int


@dataclass
class PickerSettings:
    """Command-line settings of one picker process."""

    ports: PickerPorts
    endpoints_file: Path | None  # None: the source comes from extra_args (e.g. --pool-name, --kubeconfig)
    bind_address: str = "127.0.0.1"
    tls: bool = True
    health_checking: bool = True  # gRPC health on the ext_proc port, for Envoy's active health checks
    log_level: str = "info"
    # The destination carries this many endpoints (primary + fallbacks). override_host proxies use the list;
    # ORIGINAL_DST proxies accept exactly one.
    max_num_of_endpoints: int = 1
    extra_args: Sequence[str] = field(default_factory=tuple)
    python: str = sys.executable


def picker_command(settings: PickerSettings) -> list[str]:
    command = [
        settings.python,
        "-m",
        "endpoint_picker",
        "serve",
        "--grpc-port",
        str(settings.ports.grpc),
        "--grpc-health-port",
        str(settings.ports.health),
        "--metrics-port",
        str(settings.ports.metrics),
        "--bind-address",
        settings.bind_address,
        "--metrics-bind-address",
        settings.bind_address,
        "--log-level",
        settings.log_level,
    ]
    if settings.endpoints_file is not None:
        command.extend(["--endpoints-file", str(settings.endpoints_file)])
    if not settings.tls:
        command.append("--no-secure-serving")
    if settings.health_checking:
        command.append("--health-checking")
    command.extend(["--max-num-of-endpoints", str(settings.max_num_of_endpoints)])
    command.extend(settings.extra_args)
    return command


async def health_status(address: str, service: str, within: float = 1.0) -> str:
    """One gRPC health check; the status name (SERVING, NOT_SERVING, SERVICE_UNKNOWN) or an error text."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=within)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class PickerProcess:
    """One picker child process; ``start()`` returns once ``readiness`` is SERVING."""

    def __init__(self, settings: PickerSettings, log_path: Path) -> None:
        self.settings = settings
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = ManagedProcess(picker_command(settings), log_path, env=env)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def ports(self) -> PickerPorts:
        return self.settings.ports

    @property
    def health_address(self) -> str:
        return f"{self.settings.bind_address}:{self.settings.ports.health}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings.bind_address}:{self.settings.ports.metrics}"

    def running(self) -> bool:
        return self.process.running()

    def log_tail(self, max_bytes: int = 4000) -> str:
        return self.process.log_tail(max_bytes)

    async def start(self, ready_within: float = 30.0) -> None:
        await self.process.start()
        try:
            await self.wait_ready(ready_within)
        except BaseException:
            await self.process.stop(2.0)
            raise

    async def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        status = "no answer yet"
        while time.monotonic() < deadline:
            if not self.process.running():
                raise PickerError(
                    f"picker exited with code {self.process.returncode} during startup:\n{self.log_tail()}"
                )
            status = await health_status(self.health_address, "readiness", within=1.0)
            if status == "SERVING":
                return
            await asyncio.sleep(0.05)
        raise PickerError(f"picker not ready after {within:.1f}s (readiness: {status}):\n{self.log_tail()}")

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM (the picker drains), SIGKILL after ``grace`` seconds."""
        return await self.process.stop(grace)

    def kill(self) -> None:
        """SIGKILL, no drain: a crash as Envoy sees it."""
        self.process.kill()

    async def wait_exit(self, within: float = 5.0) -> int | None:
        return await self.process.wait(within)
