"""``serve`` discovery flags: exactly one source, the no-CRD pair, HA only with Kubernetes; and readiness that
needs both sync and the Lease, given up on shutdown."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from endpoint_picker.cli import discovery
from endpoint_picker.cli.serve import add_arguments
from endpoint_picker.config_error import ConfigError
from endpoint_picker.datastore import Datastore
from endpoint_picker.readiness import Readiness
from stack.polling import async_wait_until
from tests.kube_apiserver_emulator import LEASE, POD, POOL_V1, KubeApiEmulator, inference_pool, pod


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize(("argv", "fragment"), [
    ((), "exactly one"),
    (("--endpoints-file", "e.yaml", "--pool-name", "p"), "given: --endpoints-file, --pool-name"),
    (("--endpoint-selector", "app=m"), "required with --endpoint-selector"),
    (("--pool-name", "p", "--endpoint-target-ports", "8000"), "only valid with --endpoint-selector"),
    (("--endpoints-file", "e.yaml", "--ha-enable-leader-election"), "needs Kubernetes"),
])
def test_source_flags_are_validated(argv: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        discovery.Discovery(parse(*argv), Datastore())


def test_upstream_flag_spellings_parse() -> None:
    args = parse("--pool-name", "p", "--pool-namespace", "ns", "--pool-group", "inference.networking.x-k8s.io",
                 "--ha-enable-leader-election=true", "--ha-lease-duration", "5", "--ha-renew-deadline", "3",
                 "--ha-retry-period", "1")
    assert args.pool_name == "p" and args.ha_enable_leader_election is True
    args = parse("--endpoint-selector", "app=m", "--endpoint-target-ports", "8000,8001",
                 "--endpoint-target-ports", "8002")
    assert args.endpoint_target_ports == ["8000,8001", "8002"]


async def test_bad_pool_group_is_a_config_error(kubeconfig: Path) -> None:
    d = discovery.Discovery(parse("--pool-name", "p", "--pool-group", "example.com", "--kubeconfig", str(kubeconfig)),
                            Datastore())
    with pytest.raises(ConfigError, match="--pool-group"):
        await d.start()
    await d.shutdown()


async def test_ha_readiness_needs_sync_and_the_lease(emulator: KubeApiEmulator, kubeconfig: Path) -> None:
    emulator.create(POOL_V1, inference_pool("pool", {"app": "m"}, [8000]))
    emulator.create(POD, pod("a", "10.0.0.1", labels={"app": "m"}))
    common = ("--pool-name", "pool", "--kubeconfig", str(kubeconfig), "--ha-enable-leader-election",
              "--ha-lease-duration", "2", "--ha-renew-deadline", "1.5", "--ha-retry-period", "0.1",
              "--ha-handover-grace", "0.2")
    states: dict[str, list[bool]] = {"a": [], "b": []}
    changed = asyncio.Event()

    def recorder(name: str) -> Callable[[bool], Awaitable[None]]:
        async def set_ready(ready: bool) -> None:
            states[name].append(ready)
            changed.set()
        return set_ready

    async def until(predicate: Callable[[], bool]) -> None:
        """Readiness changes are published through set_ready: wait on those calls."""
        async def _wait() -> None:
            while not predicate():
                changed.clear()
                await changed.wait()
        await asyncio.wait_for(_wait(), 5)

    first = discovery.Discovery(parse(*common, "--ha-identity", "a"), Datastore())
    second = discovery.Discovery(parse(*common, "--ha-identity", "b"), Datastore())
    for d in (first, second):
        await d.start()
    first.run_background(recorder("a"))
    await until(lambda: states["a"][-1:] == [True])
    second.run_background(recorder("b"))
    # The standby's sync does not change its (NOT_SERVING) readiness, so there is no call to wait on: poll it.
    await async_wait_until(lambda: _true(second.readiness.conditions["synced"]), within=5, interval=0.01)
    assert states["b"] == [False]  # synced, warm, but standby
    await first.stop_readiness()  # shutdown: NOT_SERVING, then the Lease is released
    assert states["a"][-1] is False
    await until(lambda: states["b"][-1:] == [True])
    assert emulator.get(LEASE, "default", "epp-default-pool.gateway-api-inference-extension.sigs.k8s.io")[
        "spec"]["holderIdentity"] == "b"
    await first.shutdown()
    await second.shutdown()


async def _true(value: bool) -> bool:
    return value


async def test_readiness_is_the_conjunction_and_publishes_changes_only() -> None:
    readiness = Readiness("synced", "leader")
    seen: list[bool] = []
    published = asyncio.Event()

    async def apply(ready: bool) -> None:
        seen.append(ready)
        published.set()

    async def next_publish() -> None:
        await asyncio.wait_for(published.wait(), 2)
        published.clear()

    task = asyncio.create_task(readiness.publish(apply))
    await next_publish()  # the initial state
    readiness.set("synced", True)  # still not ready: nothing to publish
    readiness.set("leader", True)
    await next_publish()
    readiness.set("leader", True)  # no change
    readiness.set("synced", False)
    await next_publish()
    task.cancel()
    assert seen == [False, True, False]
    with pytest.raises(KeyError):
        readiness.set("unknown", True)
