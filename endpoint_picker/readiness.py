"""Readiness as the conjunction of named conditions (``synced``, ``leader``), published when it changes.

Why this module exists: the gRPC ``readiness`` health status has several inputs that change independently —
the Kubernetes source syncing or losing its pool, this replica winning or losing the Lease — and must be
SERVING only while all hold. Sources set their condition synchronously from the event loop; one task
publishes the combined value, so the health servicer is updated in order and never from two places.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Readiness:
    """``ready`` is true when every condition named at construction is true."""

    def __init__(self, *conditions: str) -> None:
        self._conditions = dict.fromkeys(conditions, False)
        self._changed = asyncio.Event()

    @property
    def ready(self) -> bool:
        return all(self._conditions.values())

    @property
    def conditions(self) -> dict[str, bool]:
        return dict(self._conditions)

    def set(self, condition: str, value: bool) -> None:
        if condition not in self._conditions:
            raise KeyError(f"unknown readiness condition {condition!r}")
        if self._conditions[condition] != value:
            self._conditions[condition] = value
            self._changed.set()

    async def publish(self, apply: Callable[[bool], Awaitable[None]]) -> None:
        """Call ``apply(ready)`` now and after every change of ``ready``; runs until cancelled."""
        last: bool | None = None
        while True:
            self._changed.clear()
            ready = self.ready
            if ready != last:
                log.info("readiness %s (%s)", "SERVING" if ready else "NOT_SERVING",
                         ", ".join(f"{k}={v}" for k, v in self._conditions.items()))
                await apply(ready)
                last = ready
            await self._changed.wait()
