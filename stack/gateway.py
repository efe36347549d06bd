"""The local gateway as one object: model servers, the picker process and a real Envoy.

Why this module exists: ``endpoint-picker stack`` and the integration tests need the same assembly — N
model servers on distinct loopback IPs (simulated vLLM servers or the minimal stand-ins, see
:mod:`stack.model_servers`), an endpoints file the picker reads, the picker as a child process (so a test can
SIGKILL and restart it on the same ports), and Envoy configured for a chosen body mode, failure mode, TLS
setting and optional subset-hint listener — plus the facts a test asserts on: gateway URLs, picker ports and
PID, the servers' names, addresses and labels, and the access-log path.

Order of start-up: model servers, then the picker (ready = gRPC health ``readiness`` SERVING), then Envoy
(ready = admin ``/ready``). With ``start_picker=False`` Envoy comes up without a picker (to test failure
modes), and :meth:`GatewayStack.start_picker` can be called later.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from simulator.server.config import SimServerConfig
from simulator.server.server import SimServer
from stack.envoy_bootstrap import (
    DEFAULT_TEMPLATE,
    PICKER_CLUSTER,
    BodyMode,
    FailureMode,
    GatewayConfig,
    HostPort,
    PoolRouting,
    write_bootstrap,
)
from stack.envoy_process import EnvoyProcess
from stack.model_servers import (
    ModelServer,
    ModelServerKind,
    SimPoolOptions,
    server_labels,
    server_model,
    start_sims,
    stop_servers,
)
from stack.picker_process import PickerPorts, PickerProcess, PickerSettings
from stack.placement import Placement, parse_placement
from stack.ports import free_port
from stack.standin_server import StandinOptions, StandinServer, start_standins

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StandinEndpoint:
    """A pool member as the test sees it (any kind of model server, despite the name)."""

    name: str
    host: str
    port: int
    # Labels in the endpoints file; empty = {"role": "both"}.
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


SubsetHint = Sequence[str] | Callable[[Sequence[StandinEndpoint]], Sequence[str]]


@dataclass
class StackOptions:
    """What kind of local gateway to build. Ports left at 0 are chosen free."""

    # Model servers (with prefill_replicas: the decode servers).
    replicas: int = 3
    # "sim": simulated vLLM servers (simulator.server); "standin": stack.standin_server (what tests assert on).
    model_servers: ModelServerKind = "sim"
    # sim only: this many extra servers with role prefill; the `replicas` ones get role decode.
    prefill_replicas: int = 0
    # sim only: node/rack labels, "racks=R[,servers-per-node=S]" (see stack.placement) or a Placement.
    topology: str | Placement | None = None
    # sim only: model seconds per real second.
    time_scale: float = 1.0
    # sim only: template of every simulated server (model name, engine settings, KV events, faults).
    sim_template: SimServerConfig = field(default_factory=SimServerConfig)
    listener_port: int = 0
    admin_port: int = 0
    body_mode: BodyMode = BodyMode.FULL_DUPLEX_STREAMED
    failure_mode: FailureMode = FailureMode.FAIL_CLOSE
    picker_tls: bool = True
    # Envoy actively health-checks the picker (the picker gets --health-checking). Needed for FailOpen to
    # bypass a dead picker in FULL_DUPLEX_STREAMED; see stack.envoy_bootstrap._picker_health_check.
    picker_health_check: bool = True
    start_picker: bool = True
    # A list of ip:port strings, or a function of the stand-ins returning one (their ports are only known
    # once they run). None: no subset-hint listener.
    subset_hint: SubsetHint | None = None
    pool_routing: PoolRouting = PoolRouting.OVERRIDE_HOST
    message_timeout: float = 10.0
    stream_idle_timeout: float = 60.0
    standin_options: StandinOptions = field(default_factory=StandinOptions)
    standin_hosts: Sequence[str] | None = None  # model-server hosts (either kind); default 127.0.0.2, 127.0.0.3, ...
    pool_name: str = "local-pool"
    picker_log_level: str = "info"
    picker_extra_args: Sequence[str] = ()
    envoy_log_level: str = "warn"
    envoy_template: Path = DEFAULT_TEMPLATE  # the bootstrap's fixed shape (manifests/local-gateway)
    work_dir: Path | None = None  # default: a temporary directory removed by stop()
    ready_within: float = 60.0

    def __post_init__(self) -> None:
        self.body_mode = BodyMode(self.body_mode)
        self.failure_mode = FailureMode(self.failure_mode)
        self.pool_routing = PoolRouting(self.pool_routing)
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        if self.model_servers not in ("sim", "standin"):
            raise ValueError(f"model_servers must be 'sim' or 'standin', not {self.model_servers!r}")
        if isinstance(self.topology, str):
            self.topology = parse_placement(self.topology)
        if self.model_servers == "standin" and (self.prefill_replicas or self.topology is not None):
            raise ValueError("prefill replicas and topology labels need simulated model servers (model_servers='sim')")
        if self.prefill_replicas < 0:
            raise ValueError("prefill_replicas must be >= 0")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")

    @property
    def total_servers(self) -> int:
        return self.replicas + self.prefill_replicas


class GatewayStack:
    """``async with GatewayStack(StackOptions(...)) as stack:`` — everything up, everything stopped after."""

    def __init__(self, options: StackOptions | None = None, *, progress: Progress | None = None) -> None:
        self.options = options or StackOptions()
        self._progress = progress or (lambda _message: None)
        self._own_work_dir = self.options.work_dir is None
        self.work_dir = Path(self.options.work_dir or tempfile.mkdtemp(prefix="epp-stack-"))
        self.servers: list[ModelServer] = []
        self.picker: PickerProcess | None = None
        self.envoy: EnvoyProcess | None = None
        self.gateway_config: GatewayConfig | None = None
        self.picker_ports = PickerPorts(grpc=0, health=0, metrics=0)
        self.listener_port = 0
        self.subset_hint_port: int | None = None
        self.admin_port = 0
        self.subset_hint: list[str] | None = None

    # --- facts for tests ---------------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[StandinEndpoint]:
        return [StandinEndpoint(s.name, s.host, s.port, server_labels(s)) for s in self.servers]

    @property
    def standins(self) -> list[StandinServer]:
        return [s for s in self.servers if isinstance(s, StandinServer)]

    @property
    def sims(self) -> list[SimServer]:
        return [s for s in self.servers if isinstance(s, SimServer)]

    @property
    def model_name(self) -> str:
        """The model name requests through this gateway should carry."""
        if self.servers:
            return server_model(self.servers[0])
        if self.options.model_servers == "standin":
            return self.options.standin_options.models[0]
        return self.options.sim_template.served_model_name

    def server(self, name_or_address: str) -> ModelServer:
        for server in self.servers:
            if name_or_address in (server.name, server.address):
                return server
        raise KeyError(name_or_address)

    def standin(self, name_or_address: str) -> StandinServer:
        server = self.server(name_or_address)
        if not isinstance(server, StandinServer):
            raise KeyError(f"{name_or_address} is not a stand-in")
        return server

    def sim(self, name_or_address: str) -> SimServer:
        server = self.server(name_or_address)
        if not isinstance(server, SimServer):
            raise KeyError(f"{name_or_address} is not a simulated server")
        return server

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    @property
    def subset_hint_url(self) -> str | None:
        return f"http://127.0.0.1:{self.subset_hint_port}" if self.subset_hint_port else None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def picker_pid(self) -> int | None:
        return self.picker.pid if self.picker and self.picker.running() else None

    @property
    def access_log_path(self) -> Path:
        return self.work_dir / "envoy-access.log"

    @property
    def envoy_log_path(self) -> Path:
        return self.work_dir / "envoy.log"

    @property
    def picker_log_path(self) -> Path:
        return self.work_dir / "picker.log"

    @property
    def endpoints_file(self) -> Path:
        return self.work_dir / "endpoints.yaml"

    @property
    def bootstrap_path(self) -> Path:
        return self.work_dir / "envoy.yaml"

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> GatewayStack:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop(remove_work_dir=False)
            raise

    async def _start(self) -> None:
        o = self.options
        self.work_dir.mkdir(parents=True, exist_ok=True)
        await self._start_servers()
        self.write_endpoints_file(self.endpoints)

        self.picker_ports = PickerPorts(grpc=free_port(), health=free_port(), metrics=free_port())
        if o.start_picker:
            await self.start_picker(wait_for_envoy=False)

        self.listener_port = o.listener_port or free_port()
        self.admin_port = o.admin_port or free_port()
        if o.subset_hint is not None:
            hint = o.subset_hint(self.endpoints) if callable(o.subset_hint) else o.subset_hint
            self.subset_hint = [str(item) for item in hint]
            self.subset_hint_port = free_port()
        self.gateway_config = GatewayConfig(
            endpoints=[HostPort(s.host, s.port) for s in self.servers],
            listener_port=self.listener_port,
            admin_port=self.admin_port,
            picker_port=self.picker_ports.grpc,
            picker_tls=o.picker_tls,
            body_mode=o.body_mode,
            failure_mode=o.failure_mode,
            message_timeout=o.message_timeout,
            stream_idle_timeout=o.stream_idle_timeout,
            access_log_path=str(self.access_log_path),
            subset_hint=self.subset_hint,
            subset_hint_port=self.subset_hint_port,
            pool_routing=o.pool_routing,
            picker_health_check=o.picker_health_check,
            template=o.envoy_template,
        )
        write_bootstrap(self.gateway_config, self.bootstrap_path)
        await self.start_envoy()

    async def _start_servers(self) -> None:
        o = self.options
        if o.model_servers == "standin":
            self.servers = list(await start_standins(o.replicas, hosts=o.standin_hosts, options=o.standin_options))
            for server in self.servers:
                self._progress(f"stand-in {server.name} serving on {server.url}")
            return
        placement = o.topology if isinstance(o.topology, Placement) else None
        pool = SimPoolOptions(o.prefill_replicas, placement, o.time_scale, o.sim_template)
        sims = await start_sims(o.replicas, o.standin_hosts, pool)
        self.servers = list(sims)
        for sim in sims:
            where = sim.config.topology.as_string()
            self._progress(f"simulated vLLM {sim.name} (role {sim.config.role}{', ' + where if where else ''}, "
                           f"time scale {sim.config.time_scale:g}) serving on {sim.url}")

    async def stop(self, *, remove_work_dir: bool = True) -> None:
        """Stop Envoy, the picker (both by PID) and the model servers. Safe to call twice."""
        if self.envoy is not None:
            await self.envoy.stop()
        if self.picker is not None:
            await self.picker.stop(grace=5.0)
        await stop_servers(self.servers)
        if remove_work_dir and self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    async def start_envoy(self) -> None:
        if self.gateway_config is None:
            raise RuntimeError("start() builds the Envoy config first")
        self.envoy = EnvoyProcess(
            self.bootstrap_path,
            admin_address="127.0.0.1",
            admin_port=self.admin_port,
            log_path=self.envoy_log_path,
            log_level=self.options.envoy_log_level,
        )
        await self.envoy.start(ready_within=self.options.ready_within)
        self._progress(f"envoy (PID {self.envoy.pid}) ready; admin {self.admin_url}")
        self._progress(
            f"gateway listening on {self.gateway_url} "
            f"(body mode {self.options.body_mode}, {self.options.failure_mode}, "
            f"picker TLS {'on' if self.options.picker_tls else 'off'})"
        )
        if self.subset_hint_url:
            self._progress(f"subset-hint gateway on {self.subset_hint_url} (hint {self.subset_hint})")

    async def stop_envoy(self) -> None:
        if self.envoy is not None:
            await self.envoy.stop()

    # --- the picker, separately --------------------------------------------------------------------------

    def write_endpoints_file(self, endpoints: Sequence[StandinEndpoint]) -> None:
        """(Re)write the picker's endpoints file; the picker re-reads it when it changes."""
        doc = {
            "pool": {"name": self.options.pool_name},
            "endpoints": [
                {"name": e.name, "address": e.host, "port": e.port, "labels": dict(e.labels) or {"role": "both"}}
                for e in endpoints
            ],
        }
        tmp = self.endpoints_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.replace(self.endpoints_file)

    async def start_picker(self, *, wait_for_envoy: bool = True) -> None:
        """Start the picker on the stack's fixed ports and wait for ``readiness``; then, if Envoy runs and
        health-checks the picker, wait until Envoy sees it healthy too."""
        if self.picker is not None and self.picker.running():
            raise RuntimeError(f"picker already running as PID {self.picker.pid}")
        o = self.options
        settings = PickerSettings(
            ports=self.picker_ports,
            endpoints_file=self.endpoints_file,
            tls=o.picker_tls,
            health_checking=o.picker_health_check,
            log_level=o.picker_log_level,
            max_num_of_endpoints=min(3, o.total_servers) if o.pool_routing is PoolRouting.OVERRIDE_HOST else 1,
            extra_args=tuple(o.picker_extra_args),
        )
        self.picker = PickerProcess(settings, self.picker_log_path)
        started = time.monotonic()
        await self.picker.start(ready_within=o.ready_within)
        self._progress(
            f"picker (PID {self.picker.pid}) ready in {time.monotonic() - started:.1f}s: ext_proc "
            f"127.0.0.1:{self.picker_ports.grpc} ({'TLS' if o.picker_tls else 'plaintext'}), "
            f"health :{self.picker_ports.health}, metrics :{self.picker_ports.metrics}"
        )
        if wait_for_envoy and self.envoy is not None and self.envoy.running() and o.picker_health_check:
            await self.wait_picker_in_envoy(healthy=True)

    async def stop_picker(self, grace: float = 5.0) -> int | None:
        """SIGTERM (graceful drain), SIGKILL after ``grace``."""
        if self.picker is None:
            return None
        return await self.picker.stop(grace)

    async def kill_picker(self) -> int | None:
        """SIGKILL the picker (a crash) and wait for it to be gone."""
        if self.picker is None:
            return None
        self.picker.kill()
        code = await self.picker.wait_exit(5.0)
        if code is None:
            raise RuntimeError(f"picker PID {self.picker.pid} survived SIGKILL")
        return code

    async def restart_picker(self) -> None:
        await self.stop_picker()
        await self.start_picker()

    async def picker_health_in_envoy(self) -> str | None:
        """Envoy's health flags for the picker host (``healthy``, ``/failed_active_hc``, ...)."""
        if self.envoy is None:
            return None
        return await self.envoy.host_health(PICKER_CLUSTER, f"127.0.0.1:{self.picker_ports.grpc}")

    async def wait_picker_in_envoy(self, *, healthy: bool, within: float = 15.0) -> None:
        """Poll Envoy's admin until it considers the picker (un)healthy; bounded."""
        if self.envoy is None:
            raise RuntimeError("envoy not started")
        await self.envoy.wait_host_health(PICKER_CLUSTER, f"127.0.0.1:{self.picker_ports.grpc}", healthy=healthy,
                                          within=within)

    async def envoy_stats(self, filter_regex: str = "") -> dict[str, int]:
        if self.envoy is None:
            raise RuntimeError("envoy not started")
        return await self.envoy.stats(filter_regex)

    def describe(self) -> str:
        """A few lines naming every piece, for logs and failure messages."""
        lines = [f"work dir {self.work_dir}", f"gateway {self.gateway_url}"]
        if self.subset_hint_url:
            lines.append(f"subset-hint gateway {self.subset_hint_url} hint={self.subset_hint}")
        lines.append(f"picker PID {self.picker_pid} ports {self.picker_ports}")
        lines.append(f"envoy PID {self.envoy.pid if self.envoy else None} admin {self.admin_url}")
        lines.extend(f"{'stand-in' if isinstance(s, StandinServer) else 'sim'} {s.name} {s.address}"
                     for s in self.servers)
        return "\n".join(lines)

