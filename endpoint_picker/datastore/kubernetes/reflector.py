"""A reflector: keeps a local copy of one resource collection in step with the API server.

Why this module exists: every watched kind (InferencePool, Pods, objectives, rewrites) needs the same loop,
as client-go's reflector does it: list, then watch from the list's ``resourceVersion``; on a watch that ends
(server timeout) or drops (connection lost), watch again from the last version seen, after a short backoff;
on 410 Gone (that version was compacted), list again. Failures back off exponentially with jitter up to a
cap, and a success resets the backoff. Bookmarks only advance the version.

A kind whose CRD is not installed (404) or that RBAC forbids (403) is an *optional* kind's normal state: the
reflector counts as synced with no objects and retries the list every ``absent_retry`` seconds, so a missing
optional CRD never keeps the picker unready. For a required kind it stays unsynced and keeps retrying.

The owner is told about every change through ``on_change`` (called on the event loop, never concurrently);
it reads :attr:`Reflector.objects`, a name -> object dict it must not mutate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from endpoint_picker.datastore.kubernetes.api import ApiError, Gone, KubeApi, Resource

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Exponential backoff with full jitter on the upper half: ``initial * factor**n``, capped."""

    initial: float = 0.1
    cap: float = 10.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next(self) -> float:
        base = min(self.cap, self.initial * self.factor**self._attempt)
        self._attempt += 1
        return base / 2 + self.rng.random() * base / 2

    def reset(self) -> None:
        self._attempt = 0


@dataclass
class ReflectorOptions:
    watch_timeout: tuple[int, int] = (300, 600)  # server-side watch timeout, drawn uniformly per watch
    absent_retry: float = 30.0  # how often to look again for a missing optional CRD
    backoff_initial: float = 0.1
    backoff_cap: float = 10.0
    list_timeout: float = 60.0


class Reflector:
    """Mirror of ``resource`` in ``namespace`` filtered by the selectors; ``await run()`` until cancelled."""

    def __init__(self, api: KubeApi, resource: Resource, namespace: str, on_change: Callable[[], None], *,
                 label_selector: str | None = None, field_selector: str | None = None, optional: bool = False,
                 options: ReflectorOptions | None = None, rng: random.Random | None = None) -> None:
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.optional = optional
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = False
        self.absent = False  # the kind answered 404/403 at the last list
        self.resource_version = ""
        self.lists = 0  # full lists done (tests and logs: a relist after 410 shows here)
        self._api = api
        self._on_change = on_change
        self._options = options or ReflectorOptions()
        self._rng = rng or random.Random()
        self._backoff = Backoff(self._options.backoff_initial, self._options.backoff_cap, rng=self._rng)

    def __repr__(self) -> str:
        selectors = ",".join(s for s in (self.label_selector, self.field_selector) if s)
        return f"<Reflector {self.resource} ns={self.namespace} {selectors}>"

    async def run(self) -> None:
        while True:
            try:
                if not self.resource_version:
                    if not await self._list():
                        await asyncio.sleep(self._options.absent_retry)
                        continue
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Gone as exc:
                log.info("%r: %s; listing again", self, exc.message)
                self.resource_version = ""
            except ApiError as exc:
                if exc.status in (403, 404):
                    self.resource_version = ""  # the kind went away or was forbidden: a list finds out which
                delay = self._backoff.next()
                log.warning("%r: API error %s; retrying in %.2fs", self, exc, delay)
                await asyncio.sleep(delay)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                delay = self._backoff.next()
                log.info("%r: connection lost (%s: %s); resuming from %s in %.2fs", self, type(exc).__name__,
                         exc, self.resource_version or "a new list", delay)
                await asyncio.sleep(delay)

    async def _list(self) -> bool:
        """Replace the cache with a fresh list; False if the kind is absent (404/403) and should be retried later."""
        try:
            result = await self._api.list(self.resource, self.namespace, label_selector=self.label_selector,
                                          field_selector=self.field_selector,
                                          request_timeout=self._options.list_timeout)
        except ApiError as exc:
            if exc.status not in (403, 404) or isinstance(exc, Gone):
                raise
            if not self.absent:
                level = logging.INFO if self.optional else logging.ERROR
                log.log(level, "%r: %s (%s); %s", self, exc.reason or exc.status, exc.message,
                        "treating as empty" if self.optional else "not ready until it can be listed")
            self.absent = True
            self.objects = {}
            self.synced = self.optional
            self._on_change()
            return False
        self.absent = False
        self.objects = {_name(o): o for o in result.items}
        self.resource_version = result.resource_version
        self.synced = True
        self.lists += 1
        self._backoff.reset()
        log.debug("%r: listed %d objects at %s", self, len(self.objects), self.resource_version)
        self._on_change()
        return True

    async def _watch(self) -> None:
        low, high = self._options.watch_timeout
        timeout = self._rng.randint(low, high) if high > low else low
        loop = asyncio.get_running_loop()
        started, events = loop.time(), 0
        async for event in self._api.watch(self.resource, self.namespace, resource_version=self.resource_version,
                                           label_selector=self.label_selector,
                                           field_selector=self.field_selector, timeout_seconds=timeout):
            version = event.resource_version
            if event.type == "BOOKMARK":
                if version:
                    self.resource_version = version
                continue
            name = _name(event.object)
            if event.type == "DELETED":
                self.objects.pop(name, None)
            elif event.type in ("ADDED", "MODIFIED"):
                self.objects[name] = event.object
            else:
                log.debug("%r: ignoring event type %s", self, event.type)
                continue
            if version:
                self.resource_version = version
            events += 1
            self._backoff.reset()
            self._on_change()
        if events == 0 and loop.time() - started < 1.0:
            # A server that ends watches at once would otherwise make this a busy loop.
            await asyncio.sleep(self._backoff.next())


def _name(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a reflector task and wait for it to finish."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
