"""KV-cache events in vLLM's wire format: msgpack payloads and the three ZMQ frames around them.

Why it exists: a consumer decodes what real vLLM sends, so the bytes must match (model-servers.md 6.2/6.3):

- frames ``[topic (utf-8), seq (8-byte big-endian uint64, +1 per batch from 0), payload]``;
- payload: msgspec ``array_like`` batch = a 3-element array ``[ts: float, events: array, dp_rank: int]``;
- event encoding ``"map"`` (vLLM >= 0.24, the default here): a map with ``"type"`` first, then the fields in
  declaration order; required fields always present (nil allowed), defaulted ones omitted when equal to
  their default -- what current vLLM sends, e.g. ``{"type": "BlockStored", "block_hashes": [...],
  "parent_block_hash": nil, "token_ids": [...], "block_size": 16, "lora_id": nil, "medium": "GPU",
  "lora_name": nil, "extra_keys": [nil, ...], "group_idx": 0, "kv_cache_spec_kind": "full_attention"}``;
- event encoding ``"positional"`` (vLLM <= 0.23): ``[tag, field1, field2, ...]`` with every field of the
  0.23 layout present.

Replay (vLLM >= 0.26): the reply per buffered batch is ``[topic, seq, payload]`` and the end marker is
``[b"", -1 as 8-byte signed big-endian, b""]``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgpack

from simulator.engine.events import AllBlocksCleared, BlockRemoved, BlockStored, KVCacheEvent

__all__ = [
    "END_SEQ",
    "EventEncoding",
    "decode_seq",
    "encode_batch",
    "encode_event",
    "encode_seq",
    "event_frames",
    "replay_end_frames",
]

EventEncoding = Literal["map", "positional"]

# vLLM's replay end marker: -1 as a signed 64-bit big-endian integer (0xFF...FF).
END_SEQ = (-1).to_bytes(8, "big", signed=True)


def encode_seq(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=False)


def decode_seq(frame: bytes) -> int:
    return int.from_bytes(frame, "big", signed=False)


def _extra_keys(extra: list[Any] | None) -> list[Any] | None:
    if extra is None:
        return None
    return [None if keys is None else list(keys) for keys in extra]


def _stored_map(e: BlockStored) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "BlockStored",
        "block_hashes": list(e.block_hashes),
        "parent_block_hash": e.parent_block_hash,
        "token_ids": list(e.token_ids),
        "block_size": e.block_size,
        "lora_id": e.lora_id,
        "medium": e.medium,
        "lora_name": e.lora_name,
        "extra_keys": _extra_keys(e.extra_keys),
        "group_idx": e.group_idx,
        "kv_cache_spec_kind": e.kv_cache_spec_kind,
    }
    if e.kv_cache_spec_sliding_window is not None:
        out["kv_cache_spec_sliding_window"] = e.kv_cache_spec_sliding_window
    return out


def encode_event(event: KVCacheEvent, encoding: EventEncoding = "map") -> Any:
    """The msgpack-ready object of one event."""
    if isinstance(event, BlockStored):
        if encoding == "map":
            return _stored_map(event)
        return [
            "BlockStored",
            list(event.block_hashes),
            event.parent_block_hash,
            list(event.token_ids),
            event.block_size,
            event.lora_id,
            event.medium,
            event.lora_name,
            _extra_keys(event.extra_keys),
            event.group_idx,
            event.kv_cache_spec_kind,
            event.kv_cache_spec_sliding_window,
        ]
    if isinstance(event, BlockRemoved):
        if encoding == "map":
            return {
                "type": "BlockRemoved",
                "block_hashes": list(event.block_hashes),
                "medium": event.medium,
                "group_idx": event.group_idx,
            }
        return ["BlockRemoved", list(event.block_hashes), event.medium, event.group_idx]
    if isinstance(event, AllBlocksCleared):
        return {"type": "AllBlocksCleared"} if encoding == "map" else ["AllBlocksCleared"]
    raise TypeError(f"not a KV cache event: {event!r}")


def encode_batch(ts: float, events: list[KVCacheEvent], dp_rank: int = 0, encoding: EventEncoding = "map") -> bytes:
    """The msgpack payload of one batch: ``[ts, [event, ...], dp_rank]``."""
    return msgpack.packb([ts, [encode_event(e, encoding) for e in events], dp_rank], use_bin_type=True)


def event_frames(topic: str, seq: int, payload: bytes) -> list[bytes]:
    """The three PUB frames of one batch (also one replay reply)."""
    return [topic.encode("utf-8"), encode_seq(seq), payload]


def replay_end_frames() -> list[bytes]:
    """vLLM >= 0.26's end-of-replay marker."""
    return [b"", END_SEQ, b""]
