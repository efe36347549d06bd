"""What a routing benchmark sends its requests through: one kind of router in front of the simulated fleet.

Why this module exists: the comparison is only fair if every router is set up the way its users would run it
and meets the identical fleet. Each target starts its own processes on loopback ports, reports a base URL and
the PIDs whose CPU the benchmark records, and stops everything by PID:

- ``round-robin``: Envoy alone, the pool cluster routing round robin — what a Kubernetes Service gives.
- ``epp-default`` and named variants (``epp-upstream-default``, or ``epp-config:FILE``): the same Envoy with
  this picker as its ext_proc filter (FULL_DUPLEX_STREAMED, TLS, FailClose, override_host pool), the
  local gateway of ``endpoint-picker stack``. ``epp-default-buffered`` is the BUFFERED body mode some
  gateways use: the request body arrives in one message and the response body does not cross the picker
  (no per-token round trip, but no usage or TTFT seen by the picker either).
- ``sglang-router`` / ``vllm-router``: the peer routers with ``cache_aware``, installed in their own
  virtualenvs on first use (:mod:`benchmarks.peers`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import yaml

from benchmarks.overhead import gateway_bootstrap, picker_scrape_stats
from endpoint_picker.scheduling.config import UPSTREAM_DEFAULT_CONFIG
from stack.envoy_bootstrap import PICKER_CLUSTER, HostPort
from stack.envoy_process import EnvoyProcess
from stack.picker_process import PickerPorts, PickerProcess, PickerSettings
from stack.ports import free_port

PEER_NAMES = ("sglang-router", "vllm-router")
PICKER_VARIANTS: dict[str, str | None] = {"epp-default": None, "epp-upstream-default": UPSTREAM_DEFAULT_CONFIG,
                                           "epp-default-buffered": None}
TARGET_NAMES = ("round-robin", *PICKER_VARIANTS, *PEER_NAMES)


class Target(Protocol):
    name: str

    @property
    def url(self) -> str: ...

    def pids(self) -> dict[str, int | None]: ...

    def describe(self) -> str: ...

    async def start(self, endpoints: Sequence[str], work_dir: Path) -> None: ...

    async def stop(self) -> None: ...


def _write(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
    return path


@dataclass
class EnvoyTarget:
    """Envoy in front of the fleet, with or without the picker (``config_text`` None = the picker's default)."""

    name: str
    with_picker: bool
    config_text: str | None = None
    picker_args: Sequence[str] = ()
    body_mode: str = "fds"  # a mode of benchmarks.overhead.MODES: "fds" or "buffered"
    envoy: EnvoyProcess | None = None
    picker: PickerProcess | None = None
    _port: int = 0
    _endpoints: list[HostPort] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {"envoy": self.envoy.pid if self.envoy else None}
        if self.with_picker:
            out["picker"] = self.picker.pid if self.picker else None
        return out

    def describe(self) -> str:
        if not self.with_picker:
            return "Envoy, pool cluster round robin (no ext_proc): like a Kubernetes Service"
        config = "upstream default profile" if self.config_text == UPSTREAM_DEFAULT_CONFIG else (
            "its default profile" if self.config_text is None else "a custom EndpointPickerConfig")
        mode = "FULL_DUPLEX_STREAMED" if self.body_mode == "fds" else "BUFFERED, response body not sent"
        return f"Envoy + this picker ({config}; ext_proc {mode}, over TLS)"

    async def start(self, endpoints: Sequence[str], work_dir: Path) -> None:
        self._endpoints = [HostPort.parse(e) for e in endpoints]
        picker_port = free_port()
        if self.with_picker:
            endpoints_file = _write(work_dir / f"{self.name}-endpoints.yaml", {
                "pool": {"name": "bench-pool"},
                "endpoints": [{"name": f"sim-{i}", "address": e.host, "port": e.port, "labels": {"role": "both"}}
                              for i, e in enumerate(self._endpoints)],
            })
            extra = list(self.picker_args)
            if self.config_text is not None:
                extra += ["--config-text", self.config_text]
            settings = PickerSettings(ports=PickerPorts(grpc=picker_port, health=free_port(), metrics=free_port()),
                                      endpoints_file=endpoints_file, tls=True, health_checking=True,
                                      log_level="warning", extra_args=extra)
            self.picker = PickerProcess(settings, work_dir / f"{self.name}-picker.log")
            await self.picker.start(ready_within=60)
            await self._wait_scraped(self.picker)
        self._port, admin_port = free_port(), free_port()
        doc = gateway_bootstrap(self.body_mode if self.with_picker else "alone", self._endpoints,
                                listener_port=self._port, admin_port=admin_port, picker_port=picker_port)
        path = _write(work_dir / f"{self.name}-envoy.yaml", doc)
        self.envoy = EnvoyProcess(path, admin_address="127.0.0.1", admin_port=admin_port,
                                  log_path=work_dir / f"{self.name}-envoy.log")
        await self.envoy.start(ready_within=60)
        if self.with_picker:
            await self.envoy.wait_host_health(PICKER_CLUSTER, f"127.0.0.1:{picker_port}")

    async def _wait_scraped(self, picker: PickerProcess, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if (await picker_scrape_stats(picker))["endpoints_scraped"] >= len(self._endpoints):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name}: the picker did not scrape every model server within {within:g}s")

    async def stop(self) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
        if self.picker is not None:
            await self.picker.stop()


@dataclass
class PeerTarget:
    """A peer router (sglang-router or vllm-router) with its ``cache_aware`` policy."""

    name: str
    cache_dir: Path
    extra_args: Sequence[str] = ()
    policy: str = "cache_aware"
    _router: object | None = None

    @property
    def url(self) -> str:
        assert self._router is not None
        return str(self._router.url)  # type: ignore[attr-defined]

    def pids(self) -> dict[str, int | None]:
        return {"router": getattr(self._router, "pid", None)}

    def describe(self) -> str:
        from benchmarks.peers import PEERS

        return f"{PEERS[self.name].pin} --policy {self.policy} {' '.join(self.extra_args)}".strip()

    async def start(self, endpoints: Sequence[str], work_dir: Path) -> None:
        from benchmarks.peers import PeerRouter, ensure_installed

        python = await asyncio.to_thread(ensure_installed, self.name, self.cache_dir)
        router = PeerRouter(self.name, python, [f"http://{e}" for e in endpoints], policy=self.policy,
                            extra_args=self.extra_args, log_path=work_dir / f"{self.name}.log")
        self._router = router
        await router.start(ready_within=60)

    async def stop(self) -> None:
        if self._router is not None:
            await self._router.stop()  # type: ignore[attr-defined]


def make_target(name: str, cache_dir: Path) -> Target:
    """A target by name: one of :data:`TARGET_NAMES` or ``epp-config:PATH`` (any EndpointPickerConfig)."""
    if name == "round-robin":
        return EnvoyTarget(name, with_picker=False)
    if name in PICKER_VARIANTS:
        return EnvoyTarget(name, with_picker=True, config_text=PICKER_VARIANTS[name],
                           body_mode="buffered" if name.endswith("-buffered") else "fds")
    if name.startswith("epp-config:"):
        path = Path(name.removeprefix("epp-config:"))
        return EnvoyTarget(f"epp-config:{path.stem}", with_picker=True, config_text=path.read_text(encoding="utf-8"))
    if name in PEER_NAMES:
        return PeerTarget(name, cache_dir)
    raise ValueError(f"unknown target {name!r}; one of {', '.join(TARGET_NAMES)} or epp-config:PATH")


async def check_routes(url: str, model: str) -> None:
    """One small request through the target, so a broken setup fails before the measured run."""
    body = {"model": model, "prompt": "hello", "max_tokens": 2}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.post(url + "/v1/completions", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"check request through {url} got HTTP {resp.status}: {await resp.text()}")
