"""Many simulated model servers in one process and one event loop.

Why it exists: a routing experiment needs a pool, and a pool of real-time simulated servers is cheap --
each is an engine, an aiohttp app and a registry, all idle between engine steps. ``fleet_configs`` derives
the members from one template:

- names ``<name>-0 .. <name>-(N-1)`` (the bare name when N is 1);
- without ``hosts``: one host, consecutive ports from ``template.port`` (or ephemeral ports when it is 0);
- with ``hosts`` (e.g. ``loopback_hosts(N)`` = 127.0.0.2, 127.0.0.3, ...): one server per address, all on
  ``template.port`` -- like pods, each with its own IP;
- replica ``index`` fills ``{index}`` placeholders in KV-event endpoints, topics and topology labels
  (``--topology node=n{index}``), offsets explicit KV-event ports, and is added to the engine seed so
  replicas generate different text.

Usage from Python (inside a running event loop)::

    fleet = await SimFleet(fleet_configs(SimServerConfig(time_scale=10), 4)).start()
    urls = [s.url for s in fleet.servers]
    ...
    await fleet.stop()
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import replace

from simulator.server.config import SimServerConfig
from simulator.server.server import SimServer
from simulator.server.topology import Topology

__all__ = ["SimFleet", "fleet_configs", "loopback_hosts"]


def loopback_hosts(count: int, first: str = "127.0.0.2") -> list[str]:
    """``count`` distinct loopback addresses from ``first`` on (Linux routes all of 127.0.0.0/8 to lo)."""
    hosts: list[str] = []
    address = ipaddress.IPv4Address(first)
    network = ipaddress.IPv4Network("127.0.0.0/8")
    while len(hosts) < count:
        if address not in network:
            raise ValueError(f"ran out of loopback addresses after {len(hosts)}")
        if address.packed[-1] not in (0, 255):
            hosts.append(str(address))
        address += 1
    return hosts


def _topology_for(topology: Topology, index: int) -> Topology:
    if not any("{" in v for v in topology.labels.values()):
        return topology
    return Topology({k: v.format(index=index) for k, v in topology.labels.items()})


def fleet_configs(template: SimServerConfig, replicas: int, *,
                  hosts: Sequence[str] | None = None) -> list[SimServerConfig]:
    """One config per replica (see the module docstring for how they differ)."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    if hosts is not None and len(hosts) < replicas:
        raise ValueError(f"{replicas} replicas need {replicas} hosts, got {len(hosts)}")
    if hosts is None and template.port and template.port + replicas - 1 > 65535:
        raise ValueError("not enough ports above --port for every replica")
    configs: list[SimServerConfig] = []
    for i in range(replicas):
        if hosts is not None:
            host, port = hosts[i], template.port
        else:
            host, port = template.host, (template.port + i if template.port else 0)
        configs.append(replace(
            template,
            name=template.name if replicas == 1 else f"{template.name}-{i}",
            host=host,
            port=port,
            index=i,
            topology=_topology_for(template.topology, i),
            engine=replace(template.engine, seed=template.engine.seed + i),
        ))
    return configs


class SimFleet:
    """A set of ``SimServer`` started and stopped together."""

    def __init__(self, configs: Sequence[SimServerConfig]) -> None:
        self.servers = [SimServer(c) for c in configs]

    async def start(self) -> SimFleet:
        started: list[SimServer] = []
        try:
            for server in self.servers:
                await server.start()
                started.append(server)
        except BaseException:
            await asyncio.gather(*(s.stop() for s in started), return_exceptions=True)
            raise
        return self

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.servers]

    def __getitem__(self, index: int) -> SimServer:
        return self.servers[index]

    def __len__(self) -> int:
        return len(self.servers)

    async def __aenter__(self) -> SimFleet:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
