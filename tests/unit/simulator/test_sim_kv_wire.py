"""KV-cache events on the wire: msgpack payloads decoded and compared with vLLM's format
(model-servers.md 6.2/6.3) -- three frames, 3-element batch, map form (>= 0.24) and positional form
(<= 0.23) -- and ``--kv-events-config`` parsing with vLLM's bind/connect rule."""

from __future__ import annotations

import msgpack
import pytest

from simulator.engine import AllBlocksCleared, BlockRemoved, BlockStored, Engine, EngineConfig, EngineRequest
from simulator.engine.hashing import compute_block_hashes
from simulator.server.kv_events_config import KVEventsConfig, is_bind_endpoint, parse_kv_events_config
from simulator.server.kv_wire import (
    END_SEQ,
    decode_seq,
    encode_batch,
    encode_event,
    encode_seq,
    event_frames,
    replay_end_frames,
)

BIG = 2**64 - 5  # a u64 hash above the int64 range

STORED = BlockStored(
    block_hashes=[BIG, 7],
    parent_block_hash=None,
    token_ids=list(range(32)),
    block_size=16,
    lora_id=None,
    medium="GPU",
    lora_name=None,
    extra_keys=[None, None],
)


def unpack(payload: bytes) -> object:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def test_batch_is_a_three_element_array_of_map_events() -> None:
    payload = encode_batch(1789095808.83, [STORED, BlockRemoved([BIG]), AllBlocksCleared()], dp_rank=0)
    ts, events, rank = unpack(payload)  # type: ignore[misc]
    assert ts == 1789095808.83 and rank == 0
    stored, removed, cleared = events
    assert list(stored) == ["type", "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                            "medium", "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind"]
    assert stored == {"type": "BlockStored", "block_hashes": [BIG, 7], "parent_block_hash": None,
                      "token_ids": list(range(32)), "block_size": 16, "lora_id": None, "medium": "GPU",
                      "lora_name": None, "extra_keys": [None, None], "group_idx": 0,
                      "kv_cache_spec_kind": "full_attention"}
    assert list(removed) == ["type", "block_hashes", "medium", "group_idx"]
    assert removed == {"type": "BlockRemoved", "block_hashes": [BIG], "medium": "GPU", "group_idx": 0}
    assert cleared == {"type": "AllBlocksCleared"}


def test_u64_hashes_are_msgpack_uint64() -> None:
    packed = msgpack.packb(encode_event(BlockRemoved([BIG]))["block_hashes"])
    assert packed[1:2] == b"\xcf"  # uint 64 marker
    assert unpack(packed) == [BIG]


def test_positional_form() -> None:
    stored = encode_event(STORED, "positional")
    assert stored == ["BlockStored", [BIG, 7], None, list(range(32)), 16, None, "GPU", None, [None, None], 0,
                      "full_attention", None]
    assert encode_event(BlockRemoved([3]), "positional") == ["BlockRemoved", [3], "GPU", 0]
    assert encode_event(AllBlocksCleared(), "positional") == ["AllBlocksCleared"]


def test_extra_keys_and_sliding_window() -> None:
    event = BlockStored([1], 9, list(range(16)), 16, 3, "GPU", "sql", [("sql",)], kv_cache_spec_sliding_window=128)
    out = encode_event(event)
    assert out["parent_block_hash"] == 9 and out["lora_id"] == 3 and out["lora_name"] == "sql"
    assert out["extra_keys"] == [["sql"]]
    assert out["kv_cache_spec_sliding_window"] == 128


def test_frames_and_replay_markers() -> None:
    topic, seq, payload = event_frames("kv@10.0.0.1:8000@m", 5, b"xyz")
    assert topic == b"kv@10.0.0.1:8000@m" and seq == b"\x00" * 7 + b"\x05" and payload == b"xyz"
    assert decode_seq(encode_seq(2**63 + 1)) == 2**63 + 1
    assert replay_end_frames() == [b"", b"\xff" * 8, b""] and END_SEQ == b"\xff" * 8


def test_engine_events_carry_vllms_block_hashes() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=50, enable_kv_cache_events=True))
    prompt = list(range(100, 164))
    engine.add_request(EngineRequest("r", prompt, max_tokens=1))
    while engine.has_unfinished_requests():
        engine.step()
    (batch,) = engine.drain_kv_events()
    _ts, events, _rank = unpack(encode_batch(batch.ts, batch.events))  # type: ignore[misc]
    (stored,) = events
    assert stored["block_hashes"] == compute_block_hashes(prompt, 16)
    assert stored["token_ids"] == prompt and stored["parent_block_hash"] is None


def test_kv_events_config_defaults_and_rules() -> None:
    off = parse_kv_events_config("{}")
    assert off.publisher == "null" and not off.active
    on = parse_kv_events_config('{"enable_kv_cache_events": true, "replay_endpoint": "tcp://*:5558", '
                                '"topic": "kv@x@m", "buffer_steps": 5}')
    assert on.publisher == "zmq" and on.active and on.endpoint == "tcp://*:5557"
    assert (on.replay_endpoint, on.topic, on.buffer_steps, on.hwm) == ("tcp://*:5558", "kv@x@m", 5, 100_000)
    with pytest.raises(ValueError, match="unknown"):
        parse_kv_events_config('{"enable_kv_cache_events": true, "bogus": 1}')
    with pytest.raises(ValueError):
        parse_kv_events_config('{"publisher": "nats"}')
    assert is_bind_endpoint("tcp://*:5557") and is_bind_endpoint("tcp://[::]:5557")
    assert is_bind_endpoint("ipc:///tmp/kv") and is_bind_endpoint("tcp://127.0.0.1:*")
    assert not is_bind_endpoint("tcp://127.0.0.1:5557")


def test_kv_events_config_for_replicas() -> None:
    cfg = KVEventsConfig(enable_kv_cache_events=True, endpoint="tcp://*:5557", replay_endpoint="tcp://*:6000",
                         topic="kv@{host}:{port}@{model}")
    first = cfg.for_replica(index=0, host="10.0.0.1", port=8000, model="m")
    third = cfg.for_replica(index=2, host="10.0.0.3", port=8002, model="m")
    assert (first.endpoint, first.topic) == ("tcp://*:5557", "kv@10.0.0.1:8000@m")
    assert (third.endpoint, third.replay_endpoint, third.topic) == ("tcp://*:5559", "tcp://*:6002",
                                                                    "kv@10.0.0.3:8002@m")
    templated = KVEventsConfig(enable_kv_cache_events=True, endpoint="tcp://{host}:*")
    assert templated.for_replica(index=3, host="127.0.0.5", port=1, model="m").endpoint == "tcp://127.0.0.5:*"
    ephemeral = KVEventsConfig(enable_kv_cache_events=True, endpoint="tcp://127.0.0.1:*")
    assert ephemeral.for_replica(index=4, host="h", port=1, model="m").endpoint == "tcp://127.0.0.1:*"
