"""KV-cache events as vLLM emits them, and the bounded buffer a publisher drains.

Why it exists: a precise prefix index learns what each engine holds only from these events, so the
engine core records them exactly where vLLM's ``block_pool.py`` does -- ``BlockStored`` when a
request's blocks become full and cached (one event per request per step), ``BlockRemoved`` lazily, one
per hash, when a cached block is evicted for reuse, ``AllBlocksCleared`` on a prefix-cache reset. They
are plain dataclasses whose fields follow vLLM 0.33's declaration order; turning them into msgpack and
ZMQ frames is the publisher's job, not the engine's.

Hashes are 64-bit ints (vLLM's ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1`` default) or raw 32-byte
digests when the engine is configured for bytes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "EventHash",
    "KVCacheEvent",
    "KVEventBatch",
    "KVEventBuffer",
]

EventHash = int | bytes


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Blocks that became full and cached, in chain order."""

    block_hashes: list[EventHash]
    # The block before the first stored one; None when the first stored block starts the sequence.
    parent_block_hash: EventHash | None
    # Tokens of all stored blocks concatenated (len == len(block_hashes) * block_size).
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None = "GPU"
    lora_name: str | None = None
    # One entry per block: None for plain text, else the untagged extra keys (LoRA name, cache salt).
    extra_keys: list[tuple[object, ...] | None] | None = None
    group_idx: int = 0
    kv_cache_spec_kind: str = "full_attention"
    kv_cache_spec_sliding_window: int | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """Cached blocks evicted for reuse (vLLM sends one hash per event)."""

    block_hashes: list[EventHash]
    medium: str | None = "GPU"
    group_idx: int = 0


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """The whole prefix cache was reset."""


KVCacheEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class KVEventBatch:
    """The events of one engine step, stamped with the step's (virtual) end time."""

    ts: float
    events: list[KVCacheEvent]
    data_parallel_rank: int | None = None


@dataclass(slots=True)
class KVEventBuffer:
    """Batches waiting for the publisher; the oldest are dropped past ``max_batches`` (vLLM's queue bound)."""

    max_batches: int = 100_000
    dropped_batches: int = 0
    _batches: deque[KVEventBatch] = field(default_factory=deque)

    def append(self, batch: KVEventBatch) -> None:
        if len(self._batches) >= self.max_batches:
            self._batches.popleft()
            self.dropped_batches += 1
        self._batches.append(batch)

    def drain(self) -> list[KVEventBatch]:
        """Every buffered batch, oldest first; the buffer is empty afterwards."""
        batches = list(self._batches)
        self._batches.clear()
        return batches

    def __len__(self) -> int:
        return len(self._batches)
