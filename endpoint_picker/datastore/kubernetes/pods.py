"""From pods to endpoints: which pods of a pool can serve, and on which ports.

Why this module exists: the rules are the reference EPP's and easy to get subtly wrong. A pod serves when it
matches the pool's selector, has an IP, is not terminating and has the ``Ready`` condition ``True``. Each of
the pool's ``targetPorts`` is its own endpoint ``podIP:port`` (a data-parallel rank) named
``<pod>-rank-<i>`` by the port's index in the pool; the pod annotation
``inference.networking.k8s.io/active-ports: "p1,p2"`` narrows that to the listed ports. The pod's labels
travel with each endpoint, so the engine type (``inference.networking.k8s.io/engine-type`` or
``llm-d.ai/engine-type``) and role labels reach metric scraping and the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from endpoint_picker.datastore.kubernetes.pool import PoolSpec
from endpoint_picker.datastore.model import Endpoint

log = logging.getLogger(__name__)

ACTIVE_PORTS_ANNOTATION = "inference.networking.k8s.io/active-ports"
ENGINE_TYPE_LABELS = ("inference.networking.k8s.io/engine-type", "llm-d.ai/engine-type")


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def active_ports(pod: Mapping[str, Any], target_ports: tuple[int, ...]) -> tuple[int, ...]:
    """The target ports this pod serves on: all of them, unless the active-ports annotation names a subset."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(ACTIVE_PORTS_ANNOTATION)
    if raw is None:
        return target_ports
    listed: set[int] = set()
    for part in str(raw).split(","):
        part = part.strip()
        if part.isdigit():
            listed.add(int(part))
        elif part:
            log.warning("pod %s: ignoring %r in annotation %s", (pod.get("metadata") or {}).get("name"), part,
                        ACTIVE_PORTS_ANNOTATION)
    return tuple(p for p in target_ports if p in listed)


def pod_endpoints(pod: Mapping[str, Any], pool: PoolSpec) -> list[Endpoint]:
    """The endpoints one pod contributes to ``pool`` (none if it is not selected or not ready)."""
    meta = pod.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    if not pool.selects(labels) or not pod_is_ready(pod):
        return []
    name = str(meta.get("name", ""))
    address = str((pod.get("status") or {}).get("podIP"))
    active = set(active_ports(pod, pool.target_ports))
    out: list[Endpoint] = []
    for rank, port in enumerate(pool.target_ports):
        if port not in active:
            continue
        try:
            out.append(Endpoint(name=f"{name}-rank-{rank}", address=address, port=port, labels=labels))
        except ValueError as exc:
            log.warning("pod %s: skipping endpoint %s:%d: %s", name, address, port, exc)
    return out


def endpoints_for(pods: Iterable[Mapping[str, Any]], pool: PoolSpec) -> list[Endpoint]:
    out: list[Endpoint] = []
    for pod in pods:
        out.extend(pod_endpoints(pod, pool))
    return out
