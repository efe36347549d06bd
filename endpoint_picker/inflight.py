"""The picker's own live accounting of requests and tokens in flight per endpoint.

Scraped model-server metrics lag by a scrape interval; what this picker itself has sent and not yet seen
finish does not. Every routed request holds a :class:`Lease` that is released exactly once: on completion,
on error, or when the ext_proc stream is reset by a disconnecting client.
"""

from __future__ import annotations

from collections.abc import Iterable

from endpoint_picker.journal import KeyJournal


class InFlightTracker:
    """Counts of in-flight requests and estimated tokens, keyed by endpoint ``ip:port``."""

    __slots__ = ("_requests", "_tokens", "changes")

    def __init__(self) -> None:
        self._requests: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        # Every key whose counts moved, for readers that keep views of some endpoints up to date.
        self.changes = KeyJournal()

    def acquire(self, key: str, tokens: int) -> Lease:
        self._requests[key] = self._requests.get(key, 0) + 1
        self._tokens[key] = self._tokens.get(key, 0) + tokens
        self.changes.add(key)
        return Lease(self, key, tokens)

    def requests(self, key: str) -> int:
        return self._requests.get(key, 0)

    def tokens(self, key: str) -> int:
        return self._tokens.get(key, 0)

    def total_requests(self) -> int:
        return sum(self._requests.values())

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """``{endpoint: (requests, tokens)}`` for every endpoint with something in flight."""
        return {k: (n, self._tokens.get(k, 0)) for k, n in self._requests.items()}

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the counts of endpoints that left the pool (their late releases then do nothing)."""
        for key in keys:
            self._requests.pop(key, None)
            self._tokens.pop(key, None)
            self.changes.add(key)

    def _release(self, key: str, tokens: int) -> None:
        n = self._requests.get(key)
        if n is None:
            return
        self.changes.add(key)
        if n <= 1:
            del self._requests[key]
            self._tokens.pop(key, None)
        else:
            self._requests[key] = n - 1
            self._tokens[key] = max(0, self._tokens.get(key, 0) - tokens)


class Lease:
    """One request's share of an endpoint's in-flight count; :meth:`release` is idempotent."""

    __slots__ = ("_tracker", "key", "released", "tokens")

    def __init__(self, tracker: InFlightTracker, key: str, tokens: int) -> None:
        self._tracker = tracker
        self.key = key
        self.tokens = tokens
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._tracker._release(self.key, self.tokens)
