"""Which keys a store wrote, in order, so a reader can catch up without rereading every key.

Why it exists: the scheduler builds a view of every candidate endpoint per request. Between two requests
only the endpoints whose metrics were scraped or whose in-flight counts moved have changed -- a handful
out of hundreds -- so rebuilding all views is wasted work at fleet scale. The metrics store and the in-flight
tracker note each write here; a reader keeps a cursor and asks for the keys written since.
"""

from __future__ import annotations

__all__ = ["KeyJournal"]


class KeyJournal:
    """An append-only log of written keys, of which only the most recent ``limit`` are kept.

    ``cursor`` is the position after the latest write. ``since(cursor)`` lists the keys written after
    ``cursor`` (repeats included), or returns None when some of them were already dropped: the reader has
    fallen too far behind and must reread everything.
    """

    __slots__ = ("_base", "_keys", "_limit")

    def __init__(self, limit: int = 8192) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._keys: list[str] = []
        self._base = 0  # the position of _keys[0]
        self._limit = limit

    def add(self, key: str) -> None:
        keys = self._keys
        keys.append(key)
        if len(keys) > self._limit:
            drop = len(keys) - self._limit // 2  # halve at once: trimming is O(limit), not per write
            del keys[:drop]
            self._base += drop

    @property
    def cursor(self) -> int:
        return self._base + len(self._keys)

    def since(self, cursor: int) -> list[str] | None:
        if cursor < self._base:
            return None
        return self._keys[cursor - self._base :]
