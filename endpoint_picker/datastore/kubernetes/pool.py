"""What the picker needs from an InferencePool: which pods (selector) and which of their ports (target ports).

Why this module exists: the pool has two shapes in the wild — ``inference.networking.k8s.io/v1`` (selector
under ``matchLabels``, up to eight ``targetPorts``) and the deprecated ``inference.networking.x-k8s.io/v1alpha2``
(a plain selector map, one ``targetPortNumber``) — and the no-CRD mode (``--endpoint-selector`` /
``--endpoint-target-ports``) describes the same thing with flags. All three become one :class:`PoolSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from endpoint_picker.datastore.kubernetes.api import Resource

POOL_GROUP = "inference.networking.k8s.io"
POOL_GROUP_V1ALPHA2 = "inference.networking.x-k8s.io"
POOL_RESOURCES = {
    POOL_GROUP: Resource(POOL_GROUP, "v1", "inferencepools", "InferencePool"),
    POOL_GROUP_V1ALPHA2: Resource(POOL_GROUP_V1ALPHA2, "v1alpha2", "inferencepools", "InferencePool"),
}
APP_PROTOCOL_HTTP = "http"
APP_PROTOCOL_H2C = "kubernetes.io/h2c"
MAX_TARGET_PORTS = 8


class PoolSpecError(ValueError):
    """The pool (or the flags standing in for it) cannot be used; the message says which field."""


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """The pool as endpoint discovery needs it."""

    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...]  # sorted (key, value) pairs, AND semantics
    target_ports: tuple[int, ...]
    app_protocol: str = APP_PROTOCOL_HTTP

    @property
    def label_selector(self) -> str:
        """The selector as the API server's ``labelSelector`` query parameter."""
        return ",".join(f"{k}={v}" for k, v in self.selector)

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.selector)


def pool_resource(group: str) -> Resource:
    try:
        return POOL_RESOURCES[group]
    except KeyError:
        raise PoolSpecError(f"--pool-group {group!r} is not one of {sorted(POOL_RESOURCES)}") from None


def _selector(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise PoolSpecError(f"{where} must be a non-empty map of labels (an empty selector would select every pod)")
    out = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise PoolSpecError(f"{where} has a bad entry {key!r}: {value!r}")
        out.append((key, value))
    return tuple(sorted(out))


def _ports(numbers: list[Any], where: str) -> tuple[int, ...]:
    ports: list[int] = []
    for n in numbers:
        if not isinstance(n, int) or isinstance(n, bool) or not 0 < n < 65536:
            raise PoolSpecError(f"{where} has an invalid port {n!r}")
        if n in ports:
            raise PoolSpecError(f"{where} lists port {n} twice")
        ports.append(n)
    if not 1 <= len(ports) <= MAX_TARGET_PORTS:
        raise PoolSpecError(f"{where} must list 1 to {MAX_TARGET_PORTS} ports, got {len(ports)}")
    return tuple(ports)


def parse_pool(obj: Mapping[str, Any]) -> PoolSpec:
    """Read an InferencePool object of either API version; raises :class:`PoolSpecError`."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", "default"))
    api_version = str(obj.get("apiVersion", ""))
    if api_version.startswith(POOL_GROUP_V1ALPHA2) or "targetPortNumber" in spec:
        selector = _selector(spec.get("selector"), "spec.selector")
        ports = _ports([spec.get("targetPortNumber")], "spec.targetPortNumber")
        return PoolSpec(name, namespace, selector, ports)
    raw_selector = spec.get("selector") or {}
    selector = _selector(raw_selector.get("matchLabels") if isinstance(raw_selector, Mapping) else None,
                         "spec.selector.matchLabels")
    raw_ports = spec.get("targetPorts")
    if not isinstance(raw_ports, list):
        raise PoolSpecError("spec.targetPorts must be a list of {number: port}")
    ports = _ports([p.get("number") if isinstance(p, Mapping) else p for p in raw_ports], "spec.targetPorts")
    app_protocol = str(spec.get("appProtocol") or APP_PROTOCOL_HTTP)
    return PoolSpec(name, namespace, selector, ports, app_protocol)


def parse_selector_flag(text: str) -> dict[str, str]:
    """``--endpoint-selector k=v,k2=v2`` (equality only, as a Service selector)."""
    labels: dict[str, str] = {}
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        key, sep, value = term.partition("=")
        key, value = key.strip(), value.strip().lstrip("=").strip()
        if not sep or not key or any(c in key for c in "!() "):
            raise PoolSpecError(f"--endpoint-selector term {term!r} is not key=value")
        labels[key] = value
    if not labels:
        raise PoolSpecError("--endpoint-selector needs at least one key=value")
    return labels


def parse_ports_flag(values: list[str]) -> tuple[int, ...]:
    """``--endpoint-target-ports 8000,8001``, or the flag repeated with one port each."""
    numbers: list[Any] = []
    for value in values:
        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    numbers.append(int(part))
                except ValueError:
                    raise PoolSpecError(f"--endpoint-target-ports: {part!r} is not a port number") from None
    return _ports(numbers, "--endpoint-target-ports")


def standalone_pool(name: str, namespace: str, selector: Mapping[str, str], ports: tuple[int, ...]) -> PoolSpec:
    """The pool of the no-CRD mode, from flags."""
    return PoolSpec(name, namespace, _selector(dict(selector), "--endpoint-selector"), ports)
