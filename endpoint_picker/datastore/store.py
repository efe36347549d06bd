"""The in-memory datastore that endpoint sources write and the request path reads.

Writes replace whole snapshots (tuples), so the request path reads without locks and never sees a
half-applied change. Listeners hear about removed endpoints so per-endpoint state can be dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from endpoint_picker.datastore.model import Endpoint, PoolSettings

RemovalListener = Callable[[frozenset[str]], None]


class Datastore:
    """Holds the current pool settings and endpoints; ``synced`` turns true after the first full load."""

    def __init__(self) -> None:
        self._pool = PoolSettings()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._by_key: dict[str, Endpoint] = {}
        self._synced = asyncio.Event()
        self._removal_listeners: list[RemovalListener] = []

    @property
    def pool(self) -> PoolSettings:
        return self._pool

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def get(self, key: str) -> Endpoint | None:
        return self._by_key.get(key)

    def on_removed(self, listener: RemovalListener) -> None:
        self._removal_listeners.append(listener)

    def set_pool(self, pool: PoolSettings) -> None:
        self._pool = pool

    def replace_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Make ``endpoints`` the whole set (later keys win on duplicates) and mark the store synced."""
        by_key = {ep.key: ep for ep in endpoints}
        removed = frozenset(self._by_key.keys() - by_key.keys())
        self._by_key = by_key
        self._endpoints = tuple(sorted(by_key.values(), key=lambda ep: ep.key))
        self._synced.set()
        if removed:
            for listener in self._removal_listeners:
                listener(removed)
