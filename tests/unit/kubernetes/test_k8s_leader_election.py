"""Lease-based leader election against the emulator: one leader, release hands over at once, an expired lease is
taken over, a leader that cannot renew steps down, and racing candidates never both win."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from endpoint_picker.datastore.kubernetes.api import KubeApi
from endpoint_picker.datastore.kubernetes.leader_election import LeaderElector, LeaseSettings, default_lease_name
from endpoint_picker.datastore.kubernetes.reflector import cancel_and_wait
from tests.kube_apiserver_emulator import LEASE, KubeApiEmulator
from tests.unit.kubernetes.conftest import Signal

NAME = default_lease_name("default", "pool")


def elector(api: KubeApi, identity: str, signal: Signal, **timing: float) -> LeaderElector:
    settings = LeaseSettings(NAME, "default", identity, **({"lease_duration": 1.0, "renew_deadline": 0.6,
                                                             "retry_period": 0.1} | timing))
    return LeaderElector(api, settings, signal.notify)


@pytest.fixture
async def tasks() -> AsyncIterator[dict[str, asyncio.Task[None]]]:
    running: dict[str, asyncio.Task[None]] = {}
    yield running
    for task in running.values():
        await cancel_and_wait(task)


def holder(emulator: KubeApiEmulator) -> str | None:
    lease = emulator.get(LEASE, "default", NAME)
    return lease["spec"].get("holderIdentity") if lease else None


async def test_one_leader_and_release_hands_over(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                                 tasks: dict[str, asyncio.Task[None]]) -> None:
    a, b = elector(api, "a", signal), elector(api, "b", signal)
    tasks["a"] = asyncio.create_task(a.run())
    await signal.wait_for(lambda: a.is_leader, what="a leads")
    tasks["b"] = asyncio.create_task(b.run())
    for _ in range(3):  # b must stay a follower
        assert not await b.try_acquire_or_renew()
    assert holder(emulator) == "a"
    assert NAME == "epp-default-pool.gateway-api-inference-extension.sigs.k8s.io"

    await cancel_and_wait(tasks.pop("a"))
    started = asyncio.get_running_loop().time()
    await a.release()
    await signal.wait_for(lambda: b.is_leader, within=1.0, what="b takes the released lease")
    # A retry period or so (0.1 s), not a lease duration (1 s); the margin absorbs a busy machine.
    assert asyncio.get_running_loop().time() - started < 0.9
    lease = emulator.get(LEASE, "default", NAME)["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1


async def test_release_after_a_renewal_we_did_not_see_still_releases(emulator: KubeApiEmulator, api: KubeApi,
                                                                     signal: Signal) -> None:
    """A renewal cancelled in flight may still have reached the API server: the Lease we last saw is stale
    (409 on release). The release reads the Lease again and, still holding it, releases it anyway."""
    a = elector(api, "a", signal)
    assert await a.try_acquire_or_renew()
    stale = a._lease
    assert await a.try_acquire_or_renew()  # the "unseen" renewal moves the resourceVersion on
    a._lease = stale
    await a.release()
    assert holder(emulator) is None and not a.is_leader


async def test_expired_lease_is_taken_over(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                           tasks: dict[str, asyncio.Task[None]]) -> None:
    a, b = elector(api, "a", signal), elector(api, "b", signal)
    tasks["a"] = asyncio.create_task(a.run())
    await signal.wait_for(lambda: a.is_leader)
    tasks["b"] = asyncio.create_task(b.run())
    await cancel_and_wait(tasks.pop("a"))  # a crashes: no release
    loop = asyncio.get_running_loop()
    started = loop.time()
    await signal.wait_for(lambda: b.is_leader, within=3.0, what="b takes the expired lease")
    assert loop.time() - started > 0.8  # not before the lease (1 s) expired; wait_for bounds the other side
    assert a.is_leader  # a never learnt it lost: it is not running any more


async def test_leader_steps_down_when_it_cannot_renew(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                                      tasks: dict[str, asyncio.Task[None]]) -> None:
    a = elector(api, "a", signal)
    tasks["a"] = asyncio.create_task(a.run())
    await signal.wait_for(lambda: a.is_leader)
    emulator.fail_requests("/leases/", 503, count=1000)
    await signal.wait_for(lambda: not a.is_leader, within=2.0, what="step down after the renew deadline")
    emulator.clear_failures()
    await signal.wait_for(lambda: a.is_leader, within=2.0, what="leads again once the API answers")


async def test_racing_candidates_never_both_win(emulator: KubeApiEmulator, api: KubeApi, signal: Signal) -> None:
    # This test is about 409 races, not timing: generous request timeouts (2 x retry period) so that a busy
    # machine cannot turn the race into four timeouts.
    timing = {"lease_duration": 10.0, "renew_deadline": 8.0, "retry_period": 2.0}
    candidates = [elector(api, f"c{i}", signal, **timing) for i in range(4)]
    results = await asyncio.gather(*(c.try_acquire_or_renew() for c in candidates))
    assert sum(results) == 1
    winner = next(c for c, won in zip(candidates, results, strict=True) if won)
    assert holder(emulator) == winner.settings.identity


def test_timing_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        LeaseSettings("l", "ns", "me", lease_duration=2, renew_deadline=3, retry_period=1)
