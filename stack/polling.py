"""Wait for a condition with a deadline instead of sleeping for a guessed time.

Why this module exists: the gateway is several processes that converge asynchronously (Envoy's health checks
of the picker, access-log flushes, a restarted picker). Tests and the harness poll the actual condition, with
a bound on time, and fail with the last observed value when the bound is hit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    *,
    within: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; return that value. Exceptions count as "not yet"."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as exc:  # probing a system that is still converging may raise
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {within}s (last: {last!r})")
        time.sleep(interval)


async def async_wait_until(
    probe: Callable[[], Awaitable[T]],
    *,
    within: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Async :func:`wait_until`."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            value = await probe()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {within}s (last: {last!r})")
        await asyncio.sleep(interval)
