"""vLLM block hashing: the reference test vectors, chaining, seeds, extra keys, and the CBOR encoder."""

from __future__ import annotations

import hashlib
import pickle

import pytest

from simulator.engine import cbor
from simulator.engine.hashing import (
    BlockHasher,
    RequestKeys,
    compute_block_hashes,
    sha256_cbor,
    sha256_pickle,
    to_event_hash,
)

BLOCK1 = list(range(16))
BLOCK2 = list(range(16, 32))


def test_none_hash_vectors() -> None:
    pickle_none = BlockHasher("sha256").none_hash.hex()
    assert pickle_none.startswith("066b1e89") and pickle_none.endswith("d71198")
    cbor_none = BlockHasher("sha256_cbor").none_hash.hex()
    assert cbor_none.startswith("9bd96a48") and cbor_none.endswith("81eef0")


def test_sha256_cbor_vectors() -> None:
    hasher = BlockHasher("sha256_cbor")
    h1 = hasher.hash_block(None, BLOCK1)
    assert h1.hex().startswith("dc918a88") and h1.hex().endswith("ac0749")
    assert to_event_hash(h1) == 2233398808101521225
    h2 = hasher.hash_block(h1, BLOCK2)
    assert to_event_hash(h2) == 17911472383915781900
    assert compute_block_hashes(BLOCK1 + BLOCK2, 16, "sha256_cbor") == [2233398808101521225, 17911472383915781900]


def test_sha256_pickle_vectors() -> None:
    assert compute_block_hashes(BLOCK1 + BLOCK2, 16, "sha256") == [3262291359910021016, 7142137847444424233]


def test_cbor_bytes_of_block_one() -> None:
    none_hash = BlockHasher("sha256_cbor").none_hash
    encoded = cbor.dumps((none_hash, tuple(BLOCK1), None))
    assert encoded == b"\x83\x58\x20" + none_hash + b"\x90" + bytes(range(16)) + b"\xf6"
    assert sha256_cbor((none_hash, tuple(BLOCK1), None)) == hashlib.sha256(encoded).digest()


def test_pickle_hash_is_vllm_formula() -> None:
    obj = (b"x" * 32, (1, 2, 3), None)
    assert sha256_pickle(obj) == hashlib.sha256(pickle.dumps(obj, protocol=5)).digest()


def test_chain_uses_parent_and_only_full_blocks() -> None:
    tokens = list(range(40))  # two full blocks and a partial one
    hashes = compute_block_hashes(tokens, 16)
    assert len(hashes) == 2
    # Same second block after a different first block: a different hash (the chain carries the prefix).
    other = compute_block_hashes([99] * 16 + tokens[16:32], 16)
    assert other[1] != hashes[1]
    # Recompute manually through the hasher.
    hasher = BlockHasher("sha256")
    h1 = hasher.hash_block(None, tokens[:16])
    h2 = hasher.hash_block(h1, tokens[16:32])
    assert [to_event_hash(h1), to_event_hash(h2)] == hashes


def test_event_hash_is_low_64_bits() -> None:
    digest = bytes(range(32))
    assert to_event_hash(digest) == int.from_bytes(digest[-8:], "big")


def test_seed_overrides_none_hash() -> None:
    seeded = BlockHasher("sha256", seed="0")
    assert seeded.none_hash == hashlib.sha256(pickle.dumps("0", protocol=5)).digest()
    assert compute_block_hashes(BLOCK1, 16, seed="0") != compute_block_hashes(BLOCK1, 16)
    assert BlockHasher("sha256", seed="vllm-none-hash").none_hash == BlockHasher("sha256").none_hash


def test_lora_extra_key_changes_every_block() -> None:
    tokens = list(range(48))
    plain = compute_block_hashes(tokens, 16)
    lora = compute_block_hashes(tokens, 16, lora_name="sql", lora_path="/adapters/sql")
    assert all(a != b for a, b in zip(plain, lora, strict=True))
    # Tagged form (vLLM >= 0.31) is ("lora", name, path) on every block.
    hasher = BlockHasher("sha256")
    h1 = hasher.hash_block(None, tokens[:16], (("lora", "sql", "/adapters/sql"),))
    h2 = hasher.hash_block(h1, tokens[16:32], (("lora", "sql", "/adapters/sql"),))
    assert [to_event_hash(h1), to_event_hash(h2)] == lora[:2]
    # Bare form (0.12-0.30) is the name alone.
    bare = compute_block_hashes(tokens, 16, lora_name="sql", extra_keys_style="bare")
    assert to_event_hash(hasher.hash_block(None, tokens[:16], ("sql",))) == bare[0]
    assert bare != lora


def test_cache_salt_only_on_first_block() -> None:
    keys = RequestKeys.build("tagged", cache_salt="tenant-a")
    assert keys.for_block(0) == (("cache_salt", "tenant-a"),)
    assert keys.for_block(1) is None
    assert keys.event_for_block(0) == ("tenant-a",)
    tokens = list(range(32))
    salted = compute_block_hashes(tokens, 16, cache_salt="tenant-a")
    hasher = BlockHasher("sha256")
    h1 = hasher.hash_block(None, tokens[:16], (("cache_salt", "tenant-a"),))
    h2 = hasher.hash_block(h1, tokens[16:32], None)
    assert salted == [to_event_hash(h1), to_event_hash(h2)]


def test_lora_and_salt_order_and_int_style() -> None:
    keys = RequestKeys.build("tagged", lora_name="a", lora_path="/p", cache_salt="s")
    assert keys.first == (("lora", "a", "/p"), ("cache_salt", "s"))
    assert keys.rest == (("lora", "a", "/p"),)
    assert keys.event_first == ("a", "s") and keys.event_rest == ("a",)
    assert RequestKeys.build("int", lora_name="a", lora_id=3).rest == (3,)
    with pytest.raises(ValueError):
        RequestKeys.build("int", lora_name="a")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32, "1b0000000100000000"),
        (2**64 - 1, "1bffffffffffffffff"),
        (-1, "20"),
        (-25, "3818"),
        ("a", "6161"),
        ("ü", "62c3bc"),
        (b"", "40"),
        (b"\x01\x02", "420102"),
        ([], "80"),
        ((1, [2, 3]), "8201820203"),
        (None, "f6"),
        (True, "f5"),
        (False, "f4"),
    ],
)
def test_cbor_canonical_encodings(value: object, encoded: str) -> None:
    assert cbor.dumps(value).hex() == encoded


def test_cbor_rejects_what_it_cannot_match() -> None:
    with pytest.raises(TypeError):
        cbor.dumps(1.5)
    with pytest.raises(TypeError):
        cbor.dumps(2**64)
    with pytest.raises(ValueError):
        BlockHasher("xxhash")  # type: ignore[arg-type]
