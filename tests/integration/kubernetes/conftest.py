"""The Kubernetes gateway harness: API-server emulator + pickers in Kubernetes mode + a real Envoy + model servers
on loopback addresses standing in for pod IPs.

Why this file exists: the Kubernetes integration tests need what ``GatewayStack`` builds, but with the pool
defined by InferencePool and Pod objects in :mod:`tests.kube_apiserver_emulator` instead of an endpoints file,
pod-like addressing (every "pod" at its own IP on the pool's shared target port), Envoy routing with
ORIGINAL_DST (any ``ip:port`` the picker names, as GIE's reference gateway does, so pods can appear that Envoy
was never told about), and optionally several picker replicas behind one Envoy cluster for leader election.
Everything runs on the emulator's event-loop thread; tests call blocking methods.

- ``KubeGateway.start_pickers(n, ...)``: picker processes with ``--pool-name``/``--kubeconfig`` (``n`` = 2 for HA).
- ``KubeGateway.serve(host, port)`` starts a stand-in model server at ``host:port`` (the "pod").
- :class:`Traffic` sends requests through Envoy from a few threads while a test changes the cluster, recording
  when each started, its status and which ``ip:port`` served it.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.envoy_bootstrap import (
    PICKER_CLUSTER,
    BodyMode,
    FailureMode,
    GatewayConfig,
    PoolRouting,
    build_bootstrap,
    parse_bootstrap,
)
from stack.envoy_process import EnvoyProcess
from stack.http_client import request
from stack.picker_process import PickerPorts, PickerProcess, PickerSettings, health_status
from stack.polling import wait_until
from stack.ports import free_port
from stack.standin_server import StandinOptions, StandinServer
from tests.kube_apiserver_emulator import POD, BackgroundEmulator, pod

# Every request goes to a uniformly random ready endpoint: routing changes are visible in the traffic at once.
RANDOM_PICKER = """
plugins:
- {type: random-picker, parameters: {maxNumOfEndpoints: 1}}
schedulingProfiles:
- {name: default, plugins: [{pluginRef: random-picker}]}
"""


@dataclass
class Result:
    started: float
    status: int
    served: str | None
    error: str | None = None


class Traffic:
    """Requests through the gateway from ``workers`` threads until stopped (bounded by ``max_seconds``)."""

    def __init__(self, url: str, *, workers: int = 4, max_seconds: float = 30.0, model: str = "standin-model",
                 headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/") + "/v1/completions"
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._body = {"model": model, "prompt": "hello pods", "max_tokens": 2}
        self._headers = headers or {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True, name=f"traffic-{i}") for i in range(workers)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            started = time.monotonic()
            try:
                r = request(self.url, "POST", json_body=self._body, headers=self._headers, time_limit=10)
                result = Result(started, r.status, r.headers.get("x-served-by-address"))
            except (OSError, http.client.HTTPException) as exc:  # a failure is a result, not a crash of the thread
                result = Result(started, 0, None, repr(exc))
            with self._lock:
                self.results.append(result)

    def since(self, t: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if r.started >= t]

    def wait_for(self, predicate: Any, *, within: float = 5.0, what: str = "traffic condition") -> None:
        """Wait until ``predicate(results)`` holds (bounded)."""
        wait_until(lambda: predicate(list(self.results)), within=within, interval=0.02, what=what)

    def failures(self) -> list[Result]:
        with self._lock:
            return [r for r in self.results if r.status != 200]


def served_set(results: Sequence[Result]) -> set[str]:
    return {r.served for r in results if r.served}


@dataclass
class KubeGateway:
    work: Path
    emu: BackgroundEmulator = field(default_factory=BackgroundEmulator)
    port: int = 0  # the pool's target port, shared by every "pod"
    standins: dict[str, StandinServer] = field(default_factory=dict)
    pickers: list[PickerProcess] = field(default_factory=list)
    envoy: EnvoyProcess | None = None
    listener_port: int = 0
    admin_port: int = 0
    kubeconfig: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    def start(self) -> None:
        self.emu.start()
        self.kubeconfig = self.emu.emulator.write_kubeconfig(self.work / "kubeconfig")
        self.port = free_port()

    def stop(self) -> None:
        async def _stop() -> None:
            if self.envoy is not None:
                await self.envoy.stop()
            for p in self.pickers:
                await p.stop(grace=3.0)
            for s in self.standins.values():
                await s.stop()
        try:
            self.emu.call(_stop(), timeout=60)
        finally:
            self.emu.stop()

    # --- pods -------------------------------------------------------------------------------------------------

    def serve(self, host: str, port: int | None = None) -> StandinServer:
        """A model server at ``host:port`` (default: the pool's target port)."""
        port = port or self.port
        server = StandinServer(f"{host}:{port}", host, port, StandinOptions(token_delay=0.001))
        self.emu.call(server.start())
        self.standins[server.address] = server
        return server

    def unserve(self, address: str) -> None:
        server = self.standins.pop(address)
        self.emu.call(server.stop())

    def add_pod(self, name: str, ip: str, *, labels: dict[str, str] | None = None, ready: bool = True,
                annotations: dict[str, str] | None = None) -> float:
        """Create the Pod object; returns the (monotonic) time the API server had it."""
        self.emu.create(POD, pod(name, ip, labels=labels or {"app": "model"}, ready=ready, annotations=annotations))
        return time.monotonic()

    # --- pickers and Envoy ------------------------------------------------------------------------------------

    def start_pickers(self, count: int = 1, *, extra: Sequence[str] = (), wait_ready: bool = True,
                      source: Sequence[str] = ("--pool-name", "pool")) -> None:
        assert self.kubeconfig is not None
        for i in range(count):
            ports = PickerPorts(grpc=free_port(), health=free_port(), metrics=free_port())
            args = [*source, "--kubeconfig", str(self.kubeconfig), "--config-text", RANDOM_PICKER,
                    "--drain-timeout", "2", *extra]
            if count > 1:
                args += ["--ha-identity", f"picker-{i}"]
            settings = PickerSettings(ports=ports, endpoints_file=None, tls=True, health_checking=True,
                                      max_num_of_endpoints=1, extra_args=tuple(args))
            picker = PickerProcess(settings, self.work / f"picker-{i}.log")
            self.emu.call(picker.process.start())
            self.pickers.append(picker)
        if wait_ready:
            wait_until(lambda: any(self.readiness(p) == "SERVING" for p in self.pickers), within=20,
                       what="a picker ready")

    def readiness(self, picker: PickerProcess) -> str:
        return self.emu.call(health_status(picker.health_address, "readiness", within=1.0))

    def start_envoy(self, body_mode: BodyMode = BodyMode.FULL_DUPLEX_STREAMED) -> None:
        self.listener_port, self.admin_port = free_port(), free_port()
        config = GatewayConfig(
            endpoints=[], pool_routing=PoolRouting.ORIGINAL_DST, listener_port=self.listener_port,
            admin_port=self.admin_port, picker_port=self.pickers[0].ports.grpc, picker_tls=True,
            picker_health_check=True, body_mode=body_mode, failure_mode=FailureMode.FAIL_CLOSE,
            access_log_path=str(self.work / "envoy-access.log"), message_timeout=10.0)
        doc = build_bootstrap(config)
        if len(self.pickers) > 1:  # several picker replicas behind one cluster: Envoy's health checks pick
            cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == PICKER_CLUSTER)
            # Envoy merges host health changes within update_merge_window (default 1 s): the new leader turning
            # healthy would then wait up to a second behind the old one turning unhealthy -> no healthy picker.
            cluster.setdefault("common_lb_config", {})["update_merge_window"] = "0s"
            lb_endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
            template = lb_endpoints[0]
            for picker in self.pickers[1:]:
                extra = yaml.safe_load(yaml.safe_dump(template))
                extra["endpoint"]["address"]["socket_address"]["port_value"] = picker.ports.grpc
                lb_endpoints.append(extra)
            parse_bootstrap(doc)
        path = self.work / "envoy.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
        self.envoy = EnvoyProcess(path, admin_address="127.0.0.1", admin_port=self.admin_port,
                                  log_path=self.work / "envoy.log")
        self.emu.call(self.envoy.start(ready_within=30))

    def picker_health_in_envoy(self) -> dict[int, str]:
        """Envoy's health flags per picker port."""
        assert self.envoy is not None
        status, text = self.emu.call(self.envoy.admin_get("/clusters"))
        flags: dict[int, str] = {}
        for line in text.splitlines() if status == 200 else ():
            if line.startswith(f"{PICKER_CLUSTER}::127.0.0.1:") and "::health_flags::" in line:
                port = int(line.split("::")[1].rsplit(":", 1)[1])
                flags[port] = line.rsplit("::", 1)[1]
        return flags

    def describe(self) -> str:
        lines = [f"work dir {self.work}", f"gateway {self.url}", f"emulator {self.emu.emulator.url}"]
        for i, p in enumerate(self.pickers):
            lines.append(f"--- picker {i} (PID {p.pid}) log tail ---\n{p.log_tail(3000)}")
        if self.envoy is not None:
            lines.append(f"--- envoy log tail ---\n{self.envoy.log_tail(2000)}")
        return "\n".join(lines)


@pytest.fixture
def kube_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeGateway]:
    gw = KubeGateway(work=tmp_path_factory.mktemp("kube-gateway"))
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure, attach the pickers' and Envoy's log tails."""
    report = yield
    if report.failed and call.when == "call":
        gw = getattr(item, "funcargs", {}).get("kube_gateway")
        if isinstance(gw, KubeGateway):
            report.sections.append(("kube gateway", gw.describe()))
    return report
