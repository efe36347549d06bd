"""The API-server emulator honours what the watchers rely on: list, watch from a version, selectors, 410 Gone,
timeouts, dropped connections, auth, optimistic concurrency. Checked over raw HTTP, without the picker's client."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from tests.kube_apiserver_emulator import (
    LEASE,
    OBJECTIVE,
    POD,
    KubeApiEmulator,
    label_selector_matcher,
    pod,
)

PODS_PATH = "/api/v1/namespaces/default/pods"


def _auth(emu: KubeApiEmulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.token}"}


async def _get(emu: KubeApiEmulator, path: str, **params: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(emu.url + path, params=params, headers=_auth(emu)) as r:
        return r.status, await r.json()


async def _watch_lines(emu: KubeApiEmulator, path: str, count: int, **params: str) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch (or fewer if the server ends it)."""
    events: list[dict[str, Any]] = []
    params = {"watch": "true", **params}
    async with aiohttp.ClientSession() as s, s.get(emu.url + path, params=params, headers=_auth(emu)) as r:
        assert r.status == 200
        while len(events) < count:
            line = await asyncio.wait_for(r.content.readline(), 3)
            if not line:
                break
            events.append(orjson.loads(line))
    return events


def test_label_selector_syntax() -> None:
    match = label_selector_matcher("app=m, tier!=db, zone in (a, b), !canary, gpu")
    assert match({"app": "m", "zone": "a", "gpu": "1"})
    assert not match({"app": "m", "zone": "c", "gpu": "1"})
    assert not match({"app": "m", "zone": "a", "gpu": "1", "canary": "x"})
    assert not match({"app": "m", "zone": "a", "gpu": "1", "tier": "db"})
    assert label_selector_matcher("zone notin (a)")({"zone": "b"})
    with pytest.raises(ValueError):
        label_selector_matcher("=x")


async def test_list_filters_by_selectors_and_reports_version(emulator: KubeApiEmulator) -> None:
    emulator.create(POD, pod("a", "10.0.0.1", labels={"app": "m"}))
    emulator.create(POD, pod("b", "10.0.0.2", labels={"app": "n"}))
    emulator.create(POD, pod("c", "10.0.0.3", labels={"app": "m"}, namespace="other"))
    status, body = await _get(emulator, PODS_PATH, labelSelector="app=m")
    assert status == 200
    assert [p["metadata"]["name"] for p in body["items"]] == ["a"]
    assert body["metadata"]["resourceVersion"] == str(emulator.resource_version)
    _, body = await _get(emulator, PODS_PATH, fieldSelector="metadata.name=b")
    assert [p["metadata"]["name"] for p in body["items"]] == ["b"]


async def test_watch_replays_history_after_version_with_selector_transitions(emulator: KubeApiEmulator) -> None:
    emulator.create(POD, pod("a", "10.0.0.1", labels={"app": "m"}))
    start = emulator.resource_version
    emulator.create(POD, pod("b", "10.0.0.2", labels={"app": "m"}))
    emulator.modify(POD, "default", "a", lambda o: o["metadata"]["labels"].update(app="x"))  # leaves the selector
    emulator.modify(POD, "default", "a", lambda o: o["metadata"]["labels"].update(app="m"))  # comes back
    emulator.delete(POD, "default", "b")
    events = await _watch_lines(emulator, PODS_PATH, 4, resourceVersion=str(start), labelSelector="app=m",
                                timeoutSeconds="1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"), ("DELETED", "a"), ("ADDED", "a"), ("DELETED", "b")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > start


async def test_watch_without_version_starts_with_current_objects_then_streams(emulator: KubeApiEmulator) -> None:
    emulator.create(POD, pod("a", "10.0.0.1"))

    async def later() -> None:
        await emulator.wait_for_watches(1)
        emulator.create(POD, pod("b", "10.0.0.2"))

    task = asyncio.create_task(later())
    events = await _watch_lines(emulator, PODS_PATH, 2, timeoutSeconds="2")
    await task
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("ADDED", "b")]


async def test_expired_version_yields_410_error_event(emulator: KubeApiEmulator) -> None:
    emulator.create(POD, pod("a", "10.0.0.1"))
    old = emulator.resource_version
    emulator.create(POD, pod("b", "10.0.0.2"))
    emulator.compact()
    events = await _watch_lines(emulator, PODS_PATH, 2, resourceVersion=str(old - 1))
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    # A version at or after the horizon still resumes.
    assert await _watch_lines(emulator, PODS_PATH, 1, resourceVersion=str(emulator.resource_version),
                              timeoutSeconds="1") == []


async def test_timeout_ends_watch_cleanly_and_drop_aborts_it(emulator: KubeApiEmulator) -> None:
    assert await _watch_lines(emulator, PODS_PATH, 1, resourceVersion=str(emulator.resource_version),
                              timeoutSeconds="1") == []

    async with aiohttp.ClientSession() as s, s.get(emulator.url + PODS_PATH, params={"watch": "1"},
                                                   headers=_auth(emulator)) as r:
        await emulator.wait_for_watches(1)
        assert emulator.drop_watches() == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(r.content.read(), 3)


async def test_auth_missing_kinds_and_injected_failures(emulator: KubeApiEmulator) -> None:
    async with aiohttp.ClientSession() as s, s.get(emulator.url + PODS_PATH) as r:
        assert r.status == 401
    emulator.uninstall(OBJECTIVE)
    status, body = await _get(emulator, "/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/default/"
                              "inferenceobjectives")
    assert status == 404 and body["reason"] == "NotFound"
    emulator.fail_requests("/pods", 503, count=1)
    assert (await _get(emulator, PODS_PATH))[0] == 503
    assert (await _get(emulator, PODS_PATH))[0] == 200


async def test_lease_create_and_optimistic_replace(emulator: KubeApiEmulator) -> None:
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    lease = {"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}
    async with aiohttp.ClientSession(headers=_auth(emulator)) as s:
        async with s.post(emulator.url + path, json=lease) as r:
            assert r.status == 201
            created = await r.json()
        async with s.post(emulator.url + path, json=lease) as r:
            assert r.status == 409
        stale = dict(created, spec={"holderIdentity": "b"})
        async with s.put(f"{emulator.url}{path}/l", json=stale) as r:
            assert r.status == 200
        async with s.put(f"{emulator.url}{path}/l", json=stale) as r:  # same (now stale) resourceVersion
            assert r.status == 409 and (await r.json())["reason"] == "Conflict"
    assert emulator.get(LEASE, "default", "l")["spec"]["holderIdentity"] == "b"
