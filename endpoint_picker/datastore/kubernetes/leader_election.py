"""Active-passive high availability: leader election on a ``coordination.k8s.io/v1`` Lease.

Why this module exists: with several picker replicas, exactly one should be Ready (the gateway sends its
streams there), and when it goes away another must take over at once. The algorithm is client-go's: every
``retry_period`` each candidate reads the Lease; the holder renews ``renewTime``; a candidate takes the Lease
over when its holder is empty (released) or has not renewed within ``leaseDurationSeconds`` — measured on
the candidate's own clock from when it last saw the record change, so clock skew between nodes does not
matter. Writes use the Lease's ``resourceVersion``, so of two candidates racing only one succeeds (the other
gets 409). A leader that cannot renew for ``renew_deadline`` steps down. On shutdown the leader releases
the Lease (empty holder), so a standby takes over within one retry period instead of a lease duration.

Unlike upstream (where a replica that loses leadership exits), a replica here stays a candidate: its
watchers keep running whatever its role, which is what keeps a standby's datastore warm.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from endpoint_picker.datastore.kubernetes.api import LEASES, ApiError, KubeApi

log = logging.getLogger(__name__)


def default_identity() -> str:
    """``$POD_NAME`` (unique per replica in a Deployment) or ``<hostname>_<uuid>`` as client-go does."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4()}"


def default_lease_name(namespace: str, pool: str) -> str:
    """The upstream EPP's Lease name, so mixed deployments would contend for the same Lease."""
    return f"epp-{namespace}-{pool}.gateway-api-inference-extension.sigs.k8s.io"


@dataclass
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("leader election needs lease duration > renew deadline > retry period > 0")


def _micro_time(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """``await run()`` competes for the Lease until cancelled; ``on_change(is_leader)`` hears every transition."""

    def __init__(self, api: KubeApi, settings: LeaseSettings, on_change: Callable[[bool], None], *,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self._api = api
        self.settings = settings
        self._on_change = on_change
        self._clock = clock
        self._rng = rng or random.Random()
        self.is_leader = False
        self.transitions = 0  # times this replica became leader
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renewed = 0.0
        self._lease: dict[str, Any] | None = None

    async def run(self) -> None:
        while True:
            await self.try_acquire_or_renew()
            period = self.settings.retry_period
            # Followers jitter their polls (client-go: factor 1.2) so candidates do not move in lockstep.
            await asyncio.sleep(period if self.is_leader else period * (1 + 0.2 * self._rng.random()))

    def _set_leader(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        if leader:
            self.transitions += 1
        log.info("%s %s leadership of Lease %s/%s", self.settings.identity, "acquired" if leader else "lost",
                 self.settings.namespace, self.settings.name)
        self._on_change(leader)

    async def try_acquire_or_renew(self) -> bool:
        """One round; returns whether this replica holds the Lease afterwards."""
        s = self.settings
        now = self._clock()
        try:
            try:
                lease = await self._api.get(LEASES, s.namespace, s.name, request_timeout=s.retry_period * 2)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                await self._create()
                return self.is_leader
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            record = (holder, spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseTransitions"))
            if record != self._observed:
                self._observed, self._observed_at = record, now
            duration = float(spec.get("leaseDurationSeconds") or s.lease_duration)
            if holder and holder != s.identity and now < self._observed_at + duration:
                self._set_leader(False)  # someone else holds a live lease
                return False
            await self._update(lease, spec, holder)
            return self.is_leader
        except ApiError as exc:
            if exc.status == 409:
                log.debug("Lease %s/%s changed under us; another replica won this round", s.namespace, s.name)
            else:
                log.warning("leader election: %s", exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("leader election: cannot reach the API server: %s: %s", type(exc).__name__, exc)
        if self.is_leader and self._clock() - self._last_renewed > s.renew_deadline:
            log.error("could not renew the Lease for %.1fs (renew deadline); stepping down", s.renew_deadline)
            self._set_leader(False)
        return self.is_leader

    def _spec(self, previous: dict[str, Any], holder: str) -> dict[str, Any]:
        now = _micro_time(datetime.datetime.now(datetime.UTC))
        mine = holder == self.settings.identity
        transitions = int(previous.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.settings.lease_duration)),
            "acquireTime": previous.get("acquireTime") if mine and previous.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": transitions if mine or not previous else transitions + 1,
        }

    async def _create(self) -> None:
        s = self.settings
        body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                "metadata": {"name": s.name, "namespace": s.namespace}, "spec": self._spec({}, "")}
        self._lease = await self._api.create(LEASES, s.namespace, body, request_timeout=s.retry_period * 2)
        self._renewed()

    async def _update(self, lease: dict[str, Any], spec: dict[str, Any], holder: str) -> None:
        s = self.settings
        body = dict(lease)
        body["spec"] = self._spec(spec, holder)
        self._lease = await self._api.replace(LEASES, s.namespace, s.name, body, request_timeout=s.retry_period * 2)
        self._renewed()

    def _renewed(self) -> None:
        self._last_renewed = self._clock()
        spec = (self._lease or {}).get("spec") or {}
        self._observed = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"),
                          spec.get("leaseTransitions"))
        self._observed_at = self._last_renewed
        self._set_leader(True)

    async def wait_for_successor(self, within: float) -> str | None:
        """After :meth:`release`: poll the Lease until another replica holds it; its identity, or None if none
        did within ``within`` seconds."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            try:
                lease = await self._api.get(LEASES, s.namespace, s.name, request_timeout=max(0.5, s.retry_period))
                holder = (lease.get("spec") or {}).get("holderIdentity")
                if holder and holder != s.identity:
                    return str(holder)
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("waiting for a successor: %s", exc)
            await asyncio.sleep(min(0.05, s.retry_period / 4))
        return None

    async def release(self) -> None:
        """Give the Lease up (empty holder) if this replica holds it, so a standby takes over at once.

        The Lease we last wrote may be stale: a renewal cancelled in flight (the election task is stopped
        first) can still have reached the API server. On 409 the Lease is read again and, if it is still
        ours, released at its new resourceVersion.
        """
        if not self.is_leader or self._lease is None:
            return
        s = self.settings
        lease: dict[str, Any] | None = self._lease
        self._set_leader(False)
        for _attempt in range(3):
            assert lease is not None
            if ((lease.get("spec") or {}).get("holderIdentity") or "") != s.identity:
                log.info("Lease %s/%s is no longer ours; nothing to release", s.namespace, s.name)
                return
            body = dict(lease)
            spec = dict(body.get("spec") or {})
            spec.update(holderIdentity=None, leaseDurationSeconds=1,
                        renewTime=_micro_time(datetime.datetime.now(datetime.UTC)))
            body["spec"] = spec
            try:
                await self._api.replace(LEASES, s.namespace, s.name, body, request_timeout=2.0)
                log.info("released Lease %s/%s", s.namespace, s.name)
                return
            except ApiError as exc:
                if exc.status != 409:
                    log.warning("could not release the Lease (a standby takes over after it expires): %s", exc)
                    return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("could not release the Lease (a standby takes over after it expires): %s", exc)
                return
            try:
                lease = await self._api.get(LEASES, s.namespace, s.name, request_timeout=2.0)
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("could not re-read the Lease to release it (a standby takes over after it expires): "
                            "%s", exc)
                return
        log.warning("could not release the Lease after 3 conflicts (a standby takes over after it expires)")
