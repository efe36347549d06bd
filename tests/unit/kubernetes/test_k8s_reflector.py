"""The reflector: list then watch from the version, resume after a drop without relisting, relist on 410,
back off on errors, and treat a missing optional CRD as empty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from endpoint_picker.datastore.kubernetes.api import PODS, KubeApi
from endpoint_picker.datastore.kubernetes.objective_resources import objective_resource
from endpoint_picker.datastore.kubernetes.reflector import Backoff, Reflector, ReflectorOptions, cancel_and_wait
from tests.kube_apiserver_emulator import OBJECTIVE, POD, KubeApiEmulator, pod
from tests.unit.kubernetes.conftest import Signal

FAST = ReflectorOptions(watch_timeout=(30, 30), absent_retry=0.2, backoff_initial=0.02, backoff_cap=0.1)


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        await cancel_and_wait(task)


def _start(reflector: Reflector, tasks: list[asyncio.Task[None]]) -> Reflector:
    tasks.append(asyncio.create_task(reflector.run()))
    return reflector


def _watches(emulator: KubeApiEmulator) -> list[dict[str, str]]:
    return [r.query for r in emulator.requests_for("pods") if r.is_watch]


def _lists(emulator: KubeApiEmulator) -> list[dict[str, str]]:
    return [r.query for r in emulator.requests_for("pods") if not r.is_watch]


async def test_lists_then_follows_events(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                         running: list[asyncio.Task[None]]) -> None:
    emulator.create(POD, pod("a", "10.0.0.1", labels={"app": "m"}))
    emulator.create(POD, pod("x", "10.0.0.9", labels={"app": "other"}))
    r = _start(Reflector(api, PODS, "default", signal.notify, label_selector="app=m", options=FAST), running)
    await signal.wait_for(lambda: r.synced, what="first list")
    assert set(r.objects) == {"a"}
    listed_at = r.resource_version
    emulator.create(POD, pod("b", "10.0.0.2", labels={"app": "m"}))
    await signal.wait_for(lambda: "b" in r.objects, what="ADDED b")
    emulator.delete(POD, "default", "a")
    await signal.wait_for(lambda: "a" not in r.objects, what="DELETED a")
    assert r.lists == 1
    assert _watches(emulator)[0]["resourceVersion"] == listed_at
    assert _watches(emulator)[0]["labelSelector"] == "app=m"


async def test_dropped_connection_resumes_from_last_version_without_relist(
        emulator: KubeApiEmulator, api: KubeApi, signal: Signal, running: list[asyncio.Task[None]]) -> None:
    r = _start(Reflector(api, PODS, "default", signal.notify, options=FAST), running)
    emulator.create(POD, pod("a", "10.0.0.1"))
    await signal.wait_for(lambda: "a" in r.objects)
    await emulator.wait_for_watches(1)
    seen = r.resource_version
    assert emulator.drop_watches() == 1
    emulator.create(POD, pod("b", "10.0.0.2"))  # happens while disconnected
    await signal.wait_for(lambda: "b" in r.objects, what="event missed during the drop")
    assert r.lists == 1
    assert _watches(emulator)[-1]["resourceVersion"] == seen


async def test_410_gone_relists(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                running: list[asyncio.Task[None]]) -> None:
    r = _start(Reflector(api, PODS, "default", signal.notify, options=FAST), running)
    emulator.create(POD, pod("a", "10.0.0.1"))
    await signal.wait_for(lambda: "a" in r.objects)
    await emulator.wait_for_watches(1)
    emulator.drop_watches()
    emulator.delete(POD, "default", "a")
    emulator.create(POD, pod("b", "10.0.0.2"))
    emulator.compact()  # the version the reflector resumes from is gone
    await signal.wait_for(lambda: r.lists == 2 and set(r.objects) == {"b"}, what="relist after 410")


async def test_errors_back_off_and_recover(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                           running: list[asyncio.Task[None]]) -> None:
    emulator.create(POD, pod("a", "10.0.0.1"))
    emulator.fail_requests("/pods", 500, count=3)
    r = _start(Reflector(api, PODS, "default", signal.notify, options=FAST), running)
    # No notification happens for failed lists: wait on the successful one.
    await signal.wait_for(lambda: r.synced, within=5, what="list after three failures")
    assert [req.status for req in emulator.requests_for("pods")][:4] == [500, 500, 500, 200]


def test_backoff_grows_to_cap_and_resets() -> None:
    b = Backoff(initial=0.1, cap=1.0)
    delays = [b.next() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[4:])
    b.reset()
    assert b.next() <= 0.1


async def test_missing_optional_kind_is_synced_empty_and_found_later(
        emulator: KubeApiEmulator, api: KubeApi, signal: Signal, running: list[asyncio.Task[None]]) -> None:
    emulator.uninstall(OBJECTIVE)
    resource = objective_resource("inference.networking.x-k8s.io")
    r = _start(Reflector(api, resource, "default", signal.notify, optional=True, options=FAST), running)
    await signal.wait_for(lambda: r.synced and r.absent, what="absent kind counted as synced")
    emulator.install(OBJECTIVE)
    emulator.create(OBJECTIVE, {"metadata": {"name": "o"}, "spec": {"priority": 1, "poolRef": {"name": "p"}}})
    await signal.wait_for(lambda: "o" in r.objects, what="kind installed later")
    assert not r.absent


async def test_missing_required_kind_stays_unsynced(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                                    running: list[asyncio.Task[None]]) -> None:
    emulator.uninstall(OBJECTIVE)
    resource = objective_resource("inference.networking.x-k8s.io")
    r = _start(Reflector(api, resource, "default", signal.notify, options=FAST), running)
    await signal.wait_for(lambda: r.absent)
    assert not r.synced


async def test_bookmark_advances_version(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                         running: list[asyncio.Task[None]]) -> None:
    r = _start(Reflector(api, PODS, "default", signal.notify, options=FAST), running)
    await signal.wait_for(lambda: r.synced)
    emulator.create(POD, pod("other-ns", "10.0.0.1", namespace="elsewhere"))  # moves the version, no event here
    await emulator.wait_for_watches(1)
    emulator.bookmark()
    target = str(emulator.resource_version)
    deadline = asyncio.get_running_loop().time() + 3
    while r.resource_version != target and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # bookmarks do not notify the owner: nothing changed for it
    assert r.resource_version == target


async def test_kind_removed_while_watching_is_found_absent(emulator: KubeApiEmulator, api: KubeApi, signal: Signal,
                                                           running: list[asyncio.Task[None]]) -> None:
    resource = objective_resource("inference.networking.x-k8s.io")
    emulator.create(OBJECTIVE, {"metadata": {"name": "o"}, "spec": {"poolRef": {"name": "p"}}})
    r = _start(Reflector(api, resource, "default", signal.notify, optional=True, options=FAST), running)
    await signal.wait_for(lambda: "o" in r.objects)
    await emulator.wait_for_watches(1)
    emulator.uninstall(OBJECTIVE)  # the CRD is deleted: the watch breaks, the next watch gets 404
    emulator.drop_watches()
    await signal.wait_for(lambda: r.absent and not r.objects and r.synced, what="absent after the CRD went away")
