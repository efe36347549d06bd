"""Fixtures for the Kubernetes unit tests: the API-server emulator on the test's loop, a client for it, and a
way to wait for a condition that is signalled (not polled).

Why this file exists: reflectors, the source and leader election run as tasks on the test's event loop against
a real HTTP server (:mod:`tests.kube_apiserver_emulator`); tests wait on their change notifications.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest

from endpoint_picker.datastore import Datastore, Endpoint
from endpoint_picker.datastore.kubernetes.api import KubeApi
from tests.kube_apiserver_emulator import KubeApiEmulator


class Signal:
    """Set by ``notify()`` from callbacks; ``wait_for(pred)`` returns once ``pred()`` holds after a notification."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self.count = 0

    def notify(self, *_args: object) -> None:
        self.count += 1
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], object], within: float = 3.0, what: str = "condition") -> None:
        async def _wait() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: bool(predicate()))
        try:
            await asyncio.wait_for(_wait(), within)
        except TimeoutError:
            raise AssertionError(f"{what} did not hold within {within}s") from None


class SignallingDatastore(Datastore):
    """A datastore that tells a :class:`Signal` whenever its endpoints are replaced."""

    def __init__(self, signal: Signal) -> None:
        super().__init__()
        self.signal = signal

    def replace_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        super().replace_endpoints(endpoints)
        self.signal.notify()

    def keys(self) -> set[str]:
        return {e.key for e in self.endpoints()}


@pytest.fixture
async def emulator() -> AsyncIterator[KubeApiEmulator]:
    emu = KubeApiEmulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
def kubeconfig(emulator: KubeApiEmulator, tmp_path: Path) -> Path:
    return emulator.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[KubeApi]:
    client = await KubeApi.connect(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def signal() -> Signal:
    return Signal()
