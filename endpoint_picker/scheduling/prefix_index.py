"""The approximate prefix index: which endpoint was last sent which blocks of which prompts.

Upstream's ``approx-prefix-cache-producer`` design: the prompt's bytes are cut into blocks (block size in
tokens x 4 characters), each block hashed chained to its parent (the first seeded with the model), and the
picker remembers, per endpoint, an LRU of the block hashes of requests it routed there, plus a reverse index
hash -> endpoints. A request's match on an endpoint is the length of the longest run of its leading blocks
that endpoint holds. Hashes use Python's built-in hash (fast, and only ever compared inside this process).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence


def block_hashes(data: bytes, seed: object, block_bytes: int, max_blocks: int) -> list[int]:
    """Chained hashes of the full blocks of ``data`` (at most ``max_blocks``; 0 = no limit)."""
    n = len(data) // block_bytes
    if max_blocks:
        n = min(n, max_blocks)
    out: list[int] = []
    parent = hash(seed)
    for i in range(n):
        parent = hash((parent, data[i * block_bytes : (i + 1) * block_bytes]))
        out.append(parent)
    return out


class ApproxPrefixIndex:
    """Per-endpoint LRUs of block hashes with a reverse index, bounded per endpoint."""

    def __init__(self) -> None:
        self._holders: dict[int, set[str]] = {}
        self._lru: dict[str, OrderedDict[int, None]] = {}

    def size(self) -> int:
        """Number of (endpoint, block) entries held."""
        return sum(len(lru) for lru in self._lru.values())

    def endpoint_size(self, key: str) -> int:
        lru = self._lru.get(key)
        return len(lru) if lru else 0

    def match(self, hashes: Sequence[int], candidates: Iterable[str] | Collection[str]) -> dict[str, int]:
        """Leading blocks of ``hashes`` each candidate holds (candidates with no match are left out).

        ``candidates`` may be a set or a dict keyed by endpoint key: then only the holders of the first block
        are looked up in it, instead of every candidate in the holders.
        """
        holders = self._holders
        first = holders.get(hashes[0]) if hashes else None
        if not first:
            return {}
        # Only holders of the first block can match at all: start from them.
        if isinstance(candidates, (set, frozenset, dict)) and len(first) <= len(candidates):
            alive = {c for c in first if c in candidates}
        else:
            alive = first.intersection(candidates)
        matched: dict[str, int] = {}
        for i in range(1, len(hashes)):
            if not alive:
                break
            have = holders.get(hashes[i])
            if not have:
                for c in alive:
                    matched[c] = i
                alive = set()
                break
            still = alive & have
            if len(still) != len(alive):
                for c in alive - still:
                    matched[c] = i
                alive = still
        for c in alive:
            matched[c] = len(hashes)
        return matched  # every count is >= 1: the candidates all hold the first block

    def add(self, key: str, hashes: Sequence[int], capacity: int) -> None:
        """Remember that ``key`` was sent these blocks; evict its least recently used beyond ``capacity``."""
        lru = self._lru.get(key)
        if lru is None:
            lru = self._lru[key] = OrderedDict()
        holders = self._holders
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                s = holders.get(h)
                if s is None:
                    holders[h] = {key}
                else:
                    s.add(key)
        while len(lru) > capacity:
            old, _ = lru.popitem(last=False)
            self._drop(old, key)

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            lru = self._lru.pop(key, None)
            if lru:
                for h in lru:
                    self._drop(h, key)

    def _drop(self, h: int, key: str) -> None:
        s = self._holders.get(h)
        if s is not None:
            s.discard(key)
            if not s:
                del self._holders[h]
