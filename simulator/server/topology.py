"""Where a simulated server sits (``--topology node=...,rack=...``) and what moving KV between two costs.

Why it exists: in prefill/decode disaggregation the decode server pulls the prompt's KV from the prefill
server, and that transfer's cost depends on the path between them -- which is what makes a topology-aware
P/D pairing worth having. The model is ``setup + kv_bytes_per_token * tokens / bandwidth`` per tier:

| tier | when | setup | bandwidth | per token (128 KiB) |
|---|---|---|---|---|
| ``node`` | same ``node`` label | 0.2 ms | 200 GB/s (NVLink / PCIe P2P) | 0.66 us |
| ``rack`` | same ``rack`` label (or either side unlabelled) | 1.0 ms | 44 GB/s (RDMA, IB NDR) | 3.0 us |
| ``cross-rack`` | both racks known and different | 2.0 ms | 22 GB/s (oversubscribed spine) | 6.0 us |

The ``rack`` numbers are latency-model.md's "KV transfer ~3 us/token over IB NDR, 0.5-2 ms RDMA setup"
for Llama-3.1-8B (128 KiB of KV per token); ``node`` and ``cross-rack`` are this simulator's estimates
(documented guesses, not measurements). All times are model (virtual) seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Topology", "TransferModel", "TransferTier", "parse_topology"]

TransferTier = Literal["node", "rack", "cross-rack"]

# Llama-3.1-8B BF16: 2 (K, V) x 32 layers x 8 KV heads x 128 dims x 2 bytes.
LLAMA_8B_KV_BYTES_PER_TOKEN = 131072


@dataclass(frozen=True, slots=True)
class Topology:
    """Labels locating one server (``node``, ``rack``; others are kept for display)."""

    labels: dict[str, str] = field(default_factory=dict)

    @property
    def node(self) -> str | None:
        return self.labels.get("node")

    @property
    def rack(self) -> str | None:
        return self.labels.get("rack")

    def tier_to(self, other: Topology) -> TransferTier:
        """The path between this server and ``other``."""
        if self.node is not None and self.node == other.node:
            return "node"
        if self.rack is not None and other.rack is not None and self.rack != other.rack:
            return "cross-rack"
        return "rack"

    def as_string(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels.items())


def parse_topology(text: str | None) -> Topology:
    """``"node=n1,rack=r1"`` -> Topology; empty or None -> no labels."""
    labels: dict[str, str] = {}
    if text:
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"topology label {item!r} is not key=value")
            labels[key.strip()] = value.strip()
    return Topology(labels)


@dataclass(frozen=True, slots=True)
class TransferModel:
    """KV transfer cost per tier (see the module docstring)."""

    kv_bytes_per_token: int = LLAMA_8B_KV_BYTES_PER_TOKEN
    node_setup_s: float = 0.2e-3
    node_bandwidth: float = 200e9
    rack_setup_s: float = 1.0e-3
    rack_bandwidth: float = 44e9
    cross_rack_setup_s: float = 2.0e-3
    cross_rack_bandwidth: float = 22e9

    def transfer_time(self, tokens: int, tier: TransferTier) -> float:
        """Seconds (model time) to move the KV of ``tokens`` tokens over ``tier``."""
        if tier == "node":
            setup, bandwidth = self.node_setup_s, self.node_bandwidth
        elif tier == "rack":
            setup, bandwidth = self.rack_setup_s, self.rack_bandwidth
        else:
            setup, bandwidth = self.cross_rack_setup_s, self.cross_rack_bandwidth
        return setup + tokens * self.kv_bytes_per_token / bandwidth
