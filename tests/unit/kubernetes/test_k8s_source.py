"""The Kubernetes source against the emulator: pool + pods -> datastore, every kind of change, sync state,
the no-CRD mode, and the objective/rewrite tables."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from endpoint_picker.datastore.kubernetes.api import KubeApi
from endpoint_picker.datastore.kubernetes.pool import standalone_pool
from endpoint_picker.datastore.kubernetes.reflector import ReflectorOptions, cancel_and_wait
from endpoint_picker.datastore.kubernetes.source import KubernetesSettings, KubernetesSource
from stack.polling import async_wait_until
from tests.kube_apiserver_emulator import (
    INFERENCE_MODEL,
    MODEL_REWRITE,
    OBJECTIVE,
    POD,
    POOL_V1,
    POOL_V1ALPHA2,
    KubeApiEmulator,
    inference_pool,
    inference_pool_v1alpha2,
    pod,
    set_pod_ready,
)
from tests.unit.kubernetes.conftest import Signal, SignallingDatastore

FAST = ReflectorOptions(watch_timeout=(30, 30), absent_retry=0.2, backoff_initial=0.02, backoff_cap=0.1)


class Harness:
    def __init__(self, api: KubeApi, signal: Signal) -> None:
        self.api = api
        self.signal = signal
        self.datastore = SignallingDatastore(signal)
        self.synced_changes: list[bool] = []
        self.source: KubernetesSource | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, **settings: Any) -> KubernetesSource:
        def on_synced(synced: bool) -> None:
            self.synced_changes.append(synced)
            self.signal.notify()

        self.source = KubernetesSource(self.api, KubernetesSettings(reflector=FAST, **settings), self.datastore,
                                       on_synced=on_synced, on_update=self.signal.notify)
        self.task = asyncio.create_task(self.source.run())
        return self.source

    async def until(self, predicate: Callable[[], object], what: str = "condition", within: float = 3.0) -> None:
        await self.signal.wait_for(predicate, within=within, what=what)

    def keys(self) -> set[str]:
        return self.datastore.keys()


@pytest.fixture
async def harness(api: KubeApi, signal: Signal) -> AsyncIterator[Harness]:
    h = Harness(api, signal)
    yield h
    await cancel_and_wait(h.task)


def _seed(emulator: KubeApiEmulator, *, ports: tuple[int, ...] = (8000,)) -> None:
    emulator.create(POOL_V1, inference_pool("pool", {"app": "m"}, ports))
    emulator.create(POD, pod("a", "10.0.0.1", labels={"app": "m"}))
    emulator.create(POD, pod("b", "10.0.0.2", labels={"app": "m"}))
    emulator.create(POD, pod("x", "10.0.0.9", labels={"app": "other"}))


async def test_pool_and_pods_sync_into_the_datastore(emulator: KubeApiEmulator, harness: Harness) -> None:
    _seed(emulator)
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.synced, "synced")
    assert harness.keys() == {"10.0.0.1:8000", "10.0.0.2:8000"}
    assert harness.datastore.pool.name == "pool"
    assert harness.synced_changes == [True]


async def test_pods_appear_vanish_and_flip_readiness(emulator: KubeApiEmulator, harness: Harness) -> None:
    _seed(emulator)
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.synced)
    emulator.create(POD, pod("c", "10.0.0.3", labels={"app": "m"}))
    await harness.until(lambda: "10.0.0.3:8000" in harness.keys(), "new pod")
    emulator.modify(POD, "default", "a", lambda o: set_pod_ready(o, False))
    await harness.until(lambda: "10.0.0.1:8000" not in harness.keys(), "unready pod leaves")
    emulator.modify(POD, "default", "a", lambda o: set_pod_ready(o, True))
    await harness.until(lambda: "10.0.0.1:8000" in harness.keys(), "ready again")
    emulator.delete(POD, "default", "b")
    await harness.until(lambda: harness.keys() == {"10.0.0.1:8000", "10.0.0.3:8000"}, "deleted pod leaves")
    emulator.modify(POD, "default", "c", lambda o: o["metadata"]["labels"].update(app="other"))
    await harness.until(lambda: harness.keys() == {"10.0.0.1:8000"}, "relabelled pod leaves")
    assert source.synced


async def test_selector_change_restarts_the_pod_watch(emulator: KubeApiEmulator, harness: Harness) -> None:
    _seed(emulator)
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.synced)
    emulator.modify(POOL_V1, "default", "pool",
                    lambda o: o["spec"]["selector"].update(matchLabels={"app": "other"}))
    await harness.until(lambda: harness.keys() == {"10.0.0.9:8000"}, "pods of the new selector")
    pod_lists = [r.query for r in emulator.requests_for("pods") if not r.is_watch]
    assert [q["labelSelector"] for q in pod_lists] == ["app=m", "app=other"]
    assert harness.synced_changes == [True]  # never unready while the new watch listed


async def test_selector_change_serves_old_pods_until_the_new_list(emulator: KubeApiEmulator,
                                                                  harness: Harness) -> None:
    _seed(emulator)
    emulator.modify(POD, "default", "b", lambda o: o["metadata"]["labels"].update(tier="gpu"))
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.synced)
    emulator.fail_requests("labelSelector=app=m,tier=gpu", 500, count=1000)  # the new list cannot happen
    emulator.modify(POOL_V1, "default", "pool",
                    lambda o: o["spec"]["selector"]["matchLabels"].update(tier="gpu"))
    await harness.until(lambda: harness.keys() == {"10.0.0.2:8000"}, "old pods filtered by the new selector")

    async def new_list_failed() -> bool:  # failed lists notify nobody: poll the emulator's log (bounded)
        return sum(r.status == 500 for r in emulator.requests_for("pods")) >= 2
    await async_wait_until(new_list_failed, within=3, interval=0.01, what="the new selector's list failing")
    assert source.synced and harness.synced_changes == [True]
    assert harness.keys() == {"10.0.0.2:8000"}
    emulator.clear_failures()
    emulator.create(POD, pod("c", "10.0.0.3", labels={"app": "m", "tier": "gpu"}))
    await harness.until(lambda: harness.keys() == {"10.0.0.2:8000", "10.0.0.3:8000"}, "new list arrived")


async def test_target_port_change_and_active_ports(emulator: KubeApiEmulator, harness: Harness) -> None:
    _seed(emulator)
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.synced)
    emulator.modify(POOL_V1, "default", "pool", lambda o: o["spec"].update(targetPorts=[{"number": 8000},
                                                                                     {"number": 8001}]))
    await harness.until(lambda: len(harness.keys()) == 4, "two ranks per pod")
    emulator.modify(POD, "default", "a", lambda o: o["metadata"].update(
        annotations={"inference.networking.k8s.io/active-ports": "8001"}))
    await harness.until(lambda: harness.keys() == {"10.0.0.1:8001", "10.0.0.2:8000", "10.0.0.2:8001"})
    names = {e.key: e.name for e in harness.datastore.endpoints()}
    assert names["10.0.0.1:8001"] == "a-rank-1"


async def test_pool_deleted_then_recreated(emulator: KubeApiEmulator, harness: Harness) -> None:
    _seed(emulator)
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.synced)
    emulator.delete(POOL_V1, "default", "pool")
    await harness.until(lambda: not source.synced and not harness.keys(), "pool gone: no endpoints, not synced")
    emulator.create(POOL_V1, inference_pool("pool", {"app": "m"}, [8000]))
    await harness.until(lambda: source.synced and len(harness.keys()) == 2, "pool back")
    assert harness.synced_changes == [True, False, True]


async def test_missing_pool_and_unsupported_protocol_keep_it_unsynced(emulator: KubeApiEmulator,
                                                                      harness: Harness) -> None:
    emulator.create(POD, pod("a", "10.0.0.1", labels={"app": "m"}))
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.reflectors and source.reflectors[0].synced, "pool list done")
    assert not source.synced
    emulator.create(POOL_V1, inference_pool("pool", {"app": "m"}, [8000], app_protocol="kubernetes.io/h2c"))
    await harness.until(lambda: source.reflectors[0].objects, "pool seen")
    assert not source.synced and not harness.keys()
    emulator.modify(POOL_V1, "default", "pool", lambda o: o["spec"].update(appProtocol="http"))
    await harness.until(lambda: source.synced, "usable pool")


async def test_v1alpha2_pool_group(emulator: KubeApiEmulator, harness: Harness) -> None:
    emulator.create(POOL_V1ALPHA2, inference_pool_v1alpha2("pool", {"app": "m"}, 9000))
    emulator.create(POD, pod("a", "10.0.0.1", labels={"app": "m"}))
    source = harness.start(namespace="default", pool_name="pool", pool_group="inference.networking.x-k8s.io")
    await harness.until(lambda: source.synced)
    assert harness.keys() == {"10.0.0.1:9000"}


async def test_standalone_selector_mode_watches_no_crds(emulator: KubeApiEmulator, harness: Harness) -> None:
    _seed(emulator)
    spec = standalone_pool("standalone", "default", {"app": "m"}, (8000, 8001))
    source = harness.start(namespace="default", standalone=spec, objective_group=None,
                           watch_legacy_inference_models=False)
    await harness.until(lambda: source.synced)
    assert len(harness.keys()) == 4
    assert {r.path.split("/")[-1] for r in emulator.requests} == {"pods"}


async def test_objectives_and_rewrites_for_this_pool(emulator: KubeApiEmulator, harness: Harness) -> None:
    _seed(emulator)
    ref = {"name": "pool"}
    emulator.create(OBJECTIVE, {"metadata": {"name": "premium"}, "spec": {"priority": 10, "poolRef": ref}})
    emulator.create(OBJECTIVE, {"metadata": {"name": "foreign"}, "spec": {"priority": 5,
                                                                       "poolRef": {"name": "other-pool"}}})
    emulator.create(MODEL_REWRITE, {"metadata": {"name": "canary"}, "spec": {"poolRef": ref, "rules": [
        {"matches": [{"model": {"type": "Exact", "value": "llama"}}],
         "targets": [{"modelRewrite": "llama-v2", "weight": 1}]}]}})
    emulator.create(INFERENCE_MODEL, {"metadata": {"name": "legacy"}, "spec": {
        "modelName": "old", "criticality": "Sheddable", "poolRef": ref, "targetModels": [{"name": "old-lora"}]}})
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.synced)
    rng = random.Random(1)
    assert source.objectives.priority("premium", "x") == 10
    assert source.objectives.priority("foreign", "x") == 0
    assert source.objectives.priority(None, "old") == -1
    assert source.rewrites.choose("llama", rng).target == "llama-v2"
    assert source.rewrites.choose("old", rng).target == "old-lora"
    emulator.modify(OBJECTIVE, "default", "premium", lambda o: o["spec"].update(priority=3))
    await harness.until(lambda: source.objectives.priority("premium", "x") == 3, "objective update")
    emulator.delete(MODEL_REWRITE, "default", "canary")
    await harness.until(lambda: source.rewrites.choose("llama", rng) is None, "rewrite removed")


async def test_missing_objective_crds_do_not_block_sync(emulator: KubeApiEmulator, harness: Harness) -> None:
    for key in (OBJECTIVE, MODEL_REWRITE, INFERENCE_MODEL):
        emulator.uninstall(key)
    _seed(emulator)
    source = harness.start(namespace="default", pool_name="pool")
    await harness.until(lambda: source.synced)
    assert len(harness.keys()) == 2
