"""Where the local gateway's simulated model servers "sit": node and rack labels from ``--topology``.

Why it exists: topology matters once prefill/decode pairs are chosen (moving KV within a node is far
cheaper than across racks -- see ``simulator.server.topology``), so the local gateway can lay its servers
out on pretend nodes and racks. The same labels go to each simulated server (which prices KV transfers by
them) and into the picker's endpoints file (which a topology-aware scheduler will read).

``--topology racks=R[,servers-per-node=S]``: server ``i`` (in start order) is on node ``i // S`` (default
S = 1: one server per node, like one pod per GPU node), and node ``j`` is in rack ``j % R`` -- racks are
filled in turn, so every rack gets a share of both prefill and decode servers. Labels: ``node=node-<j>``,
``rack=rack-<j % R>``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Placement", "parse_placement"]


@dataclass(frozen=True, slots=True)
class Placement:
    racks: int = 1
    servers_per_node: int = 1

    def __post_init__(self) -> None:
        if self.racks < 1 or self.servers_per_node < 1:
            raise ValueError("racks and servers-per-node must be >= 1")

    def labels(self, index: int) -> dict[str, str]:
        node = index // self.servers_per_node
        return {"node": f"node-{node}", "rack": f"rack-{node % self.racks}"}

    def as_string(self) -> str:
        return f"racks={self.racks},servers-per-node={self.servers_per_node}"


def parse_placement(text: str) -> Placement:
    """``"racks=2"`` or ``"racks=2,servers-per-node=4"`` -> Placement (ValueError on anything else)."""
    values: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in ("racks", "servers-per-node"):
            raise ValueError(f"topology item {item!r}: expected racks=R or servers-per-node=S")
        try:
            values[key] = int(value)
        except ValueError:
            raise ValueError(f"topology item {item!r}: {value!r} is not an integer") from None
    return Placement(values.get("racks", 1), values.get("servers-per-node", 1))
