"""Paged KV-cache blocks with vLLM v1's automatic prefix cache (``block_pool.py``, ``kv_cache_manager.py``).

Why it exists: KV capacity is what gates admission, forces preemption, and decides which prefixes an
engine still holds -- the facts a cache-aware router bets on. This module keeps vLLM's semantics:

- ``num_gpu_blocks`` blocks; block 0 is the reserved null block and never used;
- a block is cached (has a hash) once full; cached blocks are ref-counted and shared by every request
  whose prompt hashes to the same chain; a lookup walks the request's block hashes and stops at the first
  miss, covering at most ``num_tokens - 1`` tokens (the last token is always recomputed for its logits);
- free blocks wait in one queue: freed cached blocks go to the tail (a request frees its blocks in reverse,
  so its tail blocks are evicted before its head), freed uncached blocks go to the head (reused first);
  allocation pops from the head and evicts the hash of a cached block it reuses -- LRU eviction, lazily;
  blocks never used yet sit in the middle of that queue in id order, and are only created when first
  allocated (a fleet of a thousand engines would otherwise build 29 million block objects up front);
- ``kv_cache_usage_perc = 1 - free / (num_gpu_blocks - 1)``: cached blocks nobody references count as free;
- events: ``BlockStored`` per request per allocation that completes blocks, ``BlockRemoved`` per evicted
  hash, ``AllBlocksCleared`` on reset.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from simulator.engine.events import AllBlocksCleared, BlockRemoved, BlockStored, EventHash, KVCacheEvent
from simulator.engine.hashing import to_event_hash
from simulator.engine.sequence import Sequence

__all__ = ["KVBlock", "KVCacheManager"]


@dataclass(slots=True, eq=False)
class KVBlock:
    block_id: int
    ref_cnt: int = 0
    # Full 32-byte chain digest while the block is in the prefix cache.
    block_hash: bytes | None = None


class KVCacheManager:
    """The block pool, the prefix-cache index and per-request block tables (held on the sequences)."""

    __slots__ = (
        "_cached",
        "_emit",
        "_free",
        "_fresh",
        "_head",
        "_int_hashes",
        "block_size",
        "blocks",
        "enable_caching",
        "num_gpu_blocks",
        "usable_blocks",
    )

    def __init__(
        self,
        num_gpu_blocks: int,
        block_size: int,
        *,
        enable_caching: bool = True,
        emit: Callable[[KVCacheEvent], None] | None = None,
        int_hashes: bool = True,
    ) -> None:
        if num_gpu_blocks < 2:
            raise ValueError("num_gpu_blocks must be >= 2")
        self.num_gpu_blocks = num_gpu_blocks
        self.usable_blocks = num_gpu_blocks - 1
        self.block_size = block_size
        self.enable_caching = enable_caching
        # The blocks created so far, by id (block 0 is the null block: never free, never allocated).
        self.blocks = [KVBlock(0)]
        # The free queue in eviction order is _head, then the never-used blocks _fresh..num_gpu_blocks-1
        # (created on first allocation), then _free. _head holds freed uncached blocks (reused first; never
        # a prefix-cache hit, so never removed from the middle); _free freed blocks in LRU order.
        self._head: deque[KVBlock] = deque()
        self._fresh = 1
        self._free: OrderedDict[int, KVBlock] = OrderedDict()
        # Prefix-cache index: digest -> {block_id: block}, or the block itself while it is the only one (no
        # dict per cached block). vLLM does not deduplicate: two requests that compute the same block
        # concurrently both cache it; the first cached is the one hits use.
        self._cached: dict[bytes, KVBlock | dict[int, KVBlock]] = {}
        self._emit = emit
        self._int_hashes = int_hashes

    # -- gauges ---------------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks not referenced by any request (cached ones included)."""
        return len(self._head) + self.num_gpu_blocks - self._fresh + len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - (len(self._head) + self.num_gpu_blocks - self._fresh + len(self._free)) / self.usable_blocks

    @property
    def num_cached_blocks(self) -> int:
        return sum(1 if type(d) is KVBlock else len(d) for d in self._cached.values())

    def cached_hashes(self) -> set[bytes]:
        """Digests currently matchable in the prefix cache."""
        return set(self._cached)

    def free_queue_ids(self) -> list[int]:
        """Free block ids in eviction order (for inspection and tests)."""
        return [b.block_id for b in self._head] + list(range(self._fresh, self.num_gpu_blocks)) + list(self._free)

    # -- prefix cache ---------------------------------------------------------------------------------

    def find_cached_prefix(self, seq: Sequence) -> list[KVBlock]:
        """The longest run of the request's leading blocks present in the cache (<= num_tokens - 1 tokens)."""
        if not self.enable_caching:
            return []
        max_blocks = (seq.num_tokens - 1) // self.block_size
        hashes = seq.block_hashes
        cached = self._cached
        hits: list[KVBlock] = []
        for i in range(min(max_blocks, len(hashes))):
            entry = cached.get(hashes[i])
            if not entry:
                break
            hits.append(entry if type(entry) is KVBlock else next(iter(entry.values())))
        return hits

    # -- allocation -----------------------------------------------------------------------------------

    def allocate_slots(
        self,
        seq: Sequence,
        num_new_tokens: int,
        computed_blocks: list[KVBlock] | None = None,
        reserve_tokens: int = 0,
    ) -> bool:
        """Give ``seq`` slots for ``num_new_tokens`` more tokens; False (nothing changed) if blocks run out.

        ``computed_blocks`` are prefix-cache hits of a request being admitted (its ``num_computed_tokens``
        is still 0). ``reserve_tokens`` makes admission require room for that many tokens in total (the
        whole uncached prompt), although only the current chunk is allocated now.
        """
        bs = self.block_size
        if not computed_blocks and not reserve_tokens:
            # Fast path (a decode, or a chunk inside blocks already held): no allocation needed.
            total = seq.num_computed_tokens + num_new_tokens
            if total <= len(seq.blocks) * bs:
                if self.enable_caching and total // bs > seq.num_cached_blocks:
                    self._cache_full_blocks(seq, min(total, len(seq.token_ids)))
                return True
        hits = computed_blocks or []
        num_computed = seq.num_computed_tokens + len(hits) * bs
        total = num_computed + num_new_tokens
        held = len(seq.blocks) + len(hits)
        n_alloc = max(0, -(-total // bs) - held)
        need = n_alloc
        if reserve_tokens:
            need = max(need, -(-reserve_tokens // bs) - held)
        if need > 0:
            evictable_hits = 0
            for b in hits:
                if b.ref_cnt == 0:
                    evictable_hits += 1
            if need > self.num_free_blocks - evictable_hits:
                return False
        free = self._free
        if hits:
            for b in hits:
                if b.ref_cnt == 0:
                    del free[b.block_id]
                b.ref_cnt += 1
            seq.blocks.extend(hits)
            seq.num_cached_blocks = len(seq.blocks)
        blocks = seq.blocks
        head = self._head
        for _ in range(n_alloc):
            if head:
                b = head.popleft()
            elif self._fresh < self.num_gpu_blocks:
                b = KVBlock(self._fresh)
                self.blocks.append(b)
                self._fresh += 1
            else:
                _, b = free.popitem(last=False)
                if b.block_hash is not None:
                    self._evict(b)
            b.ref_cnt = 1
            blocks.append(b)
        if self.enable_caching:
            self._cache_full_blocks(seq, min(total, seq.num_tokens))
        return True

    def _cache_full_blocks(self, seq: Sequence, num_tokens: int) -> None:
        bs = self.block_size
        n_full = num_tokens // bs
        start = seq.num_cached_blocks
        if n_full <= start:
            return
        hashes = seq.block_hashes
        blocks = seq.blocks
        cached = self._cached
        for i in range(start, n_full):
            b = blocks[i]
            h = hashes[i]
            b.block_hash = h
            entry = cached.get(h)
            if entry is None:
                cached[h] = b
            elif type(entry) is KVBlock:
                if entry is not b:
                    cached[h] = {entry.block_id: entry, b.block_id: b}
            else:
                entry[b.block_id] = b
        seq.num_cached_blocks = n_full
        if self._emit is not None:
            conv = self._event_hash
            keys = seq.keys
            self._emit(
                BlockStored(
                    block_hashes=[conv(hashes[i]) for i in range(start, n_full)],
                    parent_block_hash=conv(hashes[start - 1]) if start > 0 else None,
                    token_ids=seq.token_ids[start * bs : n_full * bs],
                    block_size=bs,
                    lora_id=seq.lora_id,
                    medium="GPU",
                    lora_name=seq.lora_name,
                    extra_keys=[keys.event_for_block(i) for i in range(start, n_full)],
                )
            )

    def _evict(self, block: KVBlock) -> None:
        h = block.block_hash
        assert h is not None
        block.block_hash = None
        entry = self._cached.get(h)
        if entry is None:
            return
        if type(entry) is KVBlock:
            if entry is not block:
                return
            del self._cached[h]
        else:
            if entry.pop(block.block_id, None) is None:
                return
            if not entry:
                del self._cached[h]
        if self._emit is not None:
            self._emit(BlockRemoved(block_hashes=[self._event_hash(h)], medium="GPU"))

    def _event_hash(self, digest: bytes) -> EventHash:
        return to_event_hash(digest) if self._int_hashes else digest

    def free(self, seq: Sequence) -> None:
        """Release every block of ``seq``: cached ones join the LRU tail (its tail first), others the head."""
        free = self._free
        reuse_first: list[KVBlock] = []
        caching = self.enable_caching
        for b in reversed(seq.blocks):
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                if b.block_hash is None or not caching:
                    reuse_first.append(b)
                else:
                    free[b.block_id] = b
        self._head.extendleft(reversed(reuse_first))
        seq.blocks = []
        seq.num_cached_blocks = 0

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block (vLLM refuses while any block is in use)."""
        if self.num_free_blocks != self.usable_blocks:
            return False
        for b in self.blocks:
            b.block_hash = None
        self._cached.clear()
        if self._emit is not None:
            self._emit(AllBlocksCleared())
        return True
