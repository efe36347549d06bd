"""Configuration of one simulated model server: identity, API surface, engine, events, P/D role, faults.

Why it exists: the CLI, the fleet launcher, the local gateway and the tests all build servers the same
way -- one immutable ``SimServerConfig`` per server, its engine settings in the engine core's own
``EngineConfig``. ``replace(config, name=..., port=...)`` derives fleet members from a template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simulator.engine.config import EngineConfig
from simulator.server.faults import FaultConfig
from simulator.server.kv_events_config import KVEventsConfig
from simulator.server.kv_wire import EventEncoding
from simulator.server.topology import Topology, TransferModel

__all__ = ["DEFAULT_MODEL", "EngineKind", "LoraModule", "Role", "SimServerConfig"]

EngineKind = Literal["vllm", "sglang", "trtllm-serve"]
Role = Literal["prefill", "decode", "both"]

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass(frozen=True, slots=True)
class LoraModule:
    """One ``--lora-modules`` entry: requests naming ``name`` as their model run with this adapter."""

    name: str
    path: str
    base_model_name: str | None = None


@dataclass(frozen=True, slots=True)
class SimServerConfig:
    name: str = "sim"
    host: str = "127.0.0.1"
    # 0 = an ephemeral port (read it from SimServer.port after start).
    port: int = 0
    model: str = DEFAULT_MODEL
    # Names the model is served under (first = the one reported in responses); empty = (model,).
    served_model_names: tuple[str, ...] = ()
    # Whose /metrics names to expose.
    engine_kind: EngineKind = "vllm"
    role: Role = "both"
    # The engine core's settings (the server turns on enable_kv_cache_events when kv_events is active).
    engine: EngineConfig = field(default_factory=EngineConfig)
    kv_events: KVEventsConfig = field(default_factory=KVEventsConfig)
    kv_events_encoding: EventEncoding = "map"
    lora_modules: tuple[LoraModule, ...] = ()
    # Model seconds per real second: 10 runs the model ten times faster than real time.
    time_scale: float = 1.0
    topology: Topology = field(default_factory=Topology)
    transfer: TransferModel = field(default_factory=TransferModel)
    faults: FaultConfig = field(default_factory=FaultConfig)
    # Without ignore_eos, EOS is "sampled" after a Gaussian number of tokens (mean, sd = mean / 2), capped
    # by max_tokens.
    output_len_mean: int = 128
    # Real seconds the decode side waits for a remote prefiller before prefilling locally.
    prefill_timeout_s: float = 10.0
    # Replica index in a fleet (fills {index} placeholders; offsets explicit KV-event ports).
    index: int = 0
    # Largest request body accepted, in bytes.
    client_max_size: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in 0..65535")
        if self.engine_kind not in ("vllm", "sglang", "trtllm-serve"):
            raise ValueError(f"unknown engine kind {self.engine_kind!r}")
        if self.role not in ("prefill", "decode", "both"):
            raise ValueError(f"unknown role {self.role!r}")
        if self.output_len_mean < 1:
            raise ValueError("output_len_mean must be >= 1")
        if self.prefill_timeout_s <= 0:
            raise ValueError("prefill_timeout_s must be > 0")
        if self.lora_modules and not self.engine.enable_lora:
            raise ValueError("--lora-modules needs --enable-lora")

    @property
    def served_model_name(self) -> str:
        return self.served_model_names[0] if self.served_model_names else self.model

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.served_model_names or (self.model,)
