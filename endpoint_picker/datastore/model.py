"""Plain data for the pool and its endpoints, shared by every endpoint source."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


def endpoint_key(address: str, port: int) -> str:
    """The ``ip:port`` string used on the wire (IPv6 in brackets, as Envoy parses it)."""
    if ":" in address and not address.startswith("["):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def host_of(key: str) -> str:
    """The address part of an ``ip:port`` key (brackets removed); the key itself if it has no port."""
    if key.startswith("["):
        return key[1 : key.find("]")]
    host, sep, _ = key.rpartition(":")
    return host if sep else key


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One model-server endpoint: a pod IP and one of its target ports (a data-parallel rank)."""

    name: str
    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    key: str = field(init=False)

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.address)  # ValueError for hostnames: Envoy routes by IP only
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range 1..65535")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "key", endpoint_key(self.address, self.port))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoint) and other.key == self.key and other.name == self.name


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool-level settings (the InferencePool in Kubernetes, the ``pool:`` mapping of an endpoints file)."""

    name: str = "local-pool"
    namespace: str = "default"
