"""The local gateway's model servers: simulated vLLM servers (the default) or the minimal stand-ins.

Why it exists: :class:`stack.gateway.GatewayStack` treats both kinds alike -- a name, a loopback host and
port, labels for the picker's endpoints file, ``start`` / ``stop`` -- and this module builds either:

- ``sim``: :class:`simulator.server.SimServer`, vLLM's continuous batching, KV cache and prefix cache on a
  calibrated latency model, vLLM's ``/metrics``, optional prefill/decode roles and topology labels. What
  ``endpoint-picker stack`` runs, so that routing visibly changes latency and cache hits.
- ``standin``: :class:`stack.standin_server.StandinServer`, a fixed delay per token plus per-request test
  controls (``x-standin-*`` headers) and a record of every request as received. What the integration tests
  use by default, because they assert on those controls and records.

Simulated servers are named ``sim-0..`` (all role ``both``), or with ``prefill_replicas`` K:
``sim-prefill-0..K-1`` (role ``prefill``) followed by ``sim-decode-0..N-1`` (role ``decode``). Their labels
in the endpoints file are ``llm-d.ai/role`` (llm-d's label) and ``role``, plus ``node`` / ``rack`` from a
:class:`stack.placement.Placement`. The picker does not route prefill/decode pairs yet (that comes with
the scheduler); until then a request may land on any server, and a prefill server serves it whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from simulator.server.config import Role, SimServerConfig
from simulator.server.server import SimServer
from simulator.server.topology import Topology
from stack.placement import Placement
from stack.standin_server import StandinServer, loopback_hosts

__all__ = [
    "ModelServer",
    "ModelServerKind",
    "SimPoolOptions",
    "server_labels",
    "server_model",
    "sim_configs",
    "start_sims",
    "stop_servers",
]

ModelServerKind = Literal["sim", "standin"]
ROLE_LABEL = "llm-d.ai/role"


class ModelServer(Protocol):
    name: str
    host: str
    port: int

    @property
    def address(self) -> str: ...

    @property
    def url(self) -> str: ...

    async def start(self) -> object: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class SimPoolOptions:
    """How to build the simulated servers (besides their count and hosts)."""

    prefill_replicas: int = 0
    placement: Placement | None = None
    # Model seconds per real second (10 = ten times faster than real time).
    time_scale: float = 1.0
    # Everything else (model name, engine settings, KV events, faults); name/host/port/role/topology/index are
    # set per server.
    template: SimServerConfig = field(default_factory=SimServerConfig)

    def __post_init__(self) -> None:
        if self.prefill_replicas < 0:
            raise ValueError("prefill_replicas must be >= 0")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")


def sim_configs(replicas: int, hosts: Sequence[str] | None, options: SimPoolOptions) -> list[SimServerConfig]:
    """One config per server: ``prefill_replicas`` prefill servers, then ``replicas`` decode (or both) ones."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    k = options.prefill_replicas
    total = k + replicas
    hosts = list(hosts) if hosts is not None else loopback_hosts(total)
    if len(hosts) < total:
        raise ValueError(f"{total} model servers need {total} hosts, got {len(hosts)}")
    base = options.template
    configs: list[SimServerConfig] = []
    for i in range(total):
        role: Role
        if k == 0:
            name, role = f"{base.name}-{i}", "both"
        elif i < k:
            name, role = f"{base.name}-prefill-{i}", "prefill"
        else:
            name, role = f"{base.name}-decode-{i - k}", "decode"
        topology = Topology(options.placement.labels(i)) if options.placement else base.topology
        configs.append(replace(
            base,
            name=name,
            host=hosts[i],
            port=0,
            role=role,
            topology=topology,
            time_scale=options.time_scale,
            index=i,
            engine=replace(base.engine, seed=base.engine.seed + i),
        ))
    return configs


async def start_sims(replicas: int, hosts: Sequence[str] | None, options: SimPoolOptions) -> list[SimServer]:
    """Start the simulated servers on this event loop, each on its own loopback IP and a free port."""
    servers = [SimServer(c) for c in sim_configs(replicas, hosts, options)]
    started: list[SimServer] = []
    try:
        for server in servers:
            await server.start()
            started.append(server)
    except BaseException:
        await stop_servers(started)
        raise
    return servers


async def stop_servers(servers: Sequence[ModelServer]) -> None:
    await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)


def server_labels(server: ModelServer) -> dict[str, str]:
    """The labels of a server in the picker's endpoints file."""
    if isinstance(server, SimServer):
        role = server.config.role
        return {"role": role, ROLE_LABEL: role, **server.config.topology.labels}
    return {"role": "both"}


def server_model(server: ModelServer) -> str:
    """The model name requests to this server should carry."""
    if isinstance(server, SimServer):
        return server.config.served_model_name
    if isinstance(server, StandinServer):
        return server.options.models[0]
    raise TypeError(f"unknown model server {server!r}")
