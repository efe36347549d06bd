"""The simulator's HTTP model server: a vLLM-like (or SGLang / trtllm-serve-like) server around one engine core.

Why it exists: routing is tested and benchmarked against real sockets -- OpenAI endpoints with SSE,
Prometheus ``/metrics`` in each engine's names, KV-cache events on ZMQ in vLLM's wire format, P/D
disaggregation and injected faults -- while the engine core stays pure. ``SimServer`` is one server;
``SimFleet`` / ``fleet_configs`` run many in one process; ``cli`` is ``endpoint-picker sim``.
"""

from simulator.server.config import DEFAULT_MODEL, EngineKind, LoraModule, Role, SimServerConfig
from simulator.server.faults import FaultConfig, parse_faults
from simulator.server.fleet import SimFleet, fleet_configs, loopback_hosts
from simulator.server.kv_events_config import KVEventsConfig, parse_kv_events_config
from simulator.server.server import SimServer
from simulator.server.topology import Topology, TransferModel, parse_topology

__all__ = [
    "DEFAULT_MODEL",
    "EngineKind",
    "FaultConfig",
    "KVEventsConfig",
    "LoraModule",
    "Role",
    "SimFleet",
    "SimServer",
    "SimServerConfig",
    "Topology",
    "TransferModel",
    "fleet_configs",
    "loopback_hosts",
    "parse_faults",
    "parse_kv_events_config",
    "parse_topology",
]
