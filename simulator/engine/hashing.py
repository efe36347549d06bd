"""vLLM's prefix-cache block hashing, bit for bit (vLLM 0.33 ``kv_cache_utils.py`` / ``hashing.py``).

Why it exists: the simulator publishes KV-cache events whose block hashes a precise prefix index (ours,
llm-d's, or anything that recomputes vLLM's hash) must be able to predict from a prompt's token ids. So
the hashes here are exactly vLLM's, not merely "some stable id":

- chain: ``h_i = H((h_{i-1}, tuple(tokens_i), extra_keys_i))`` over *full* blocks only, with
  ``h_{-1} = NONE_HASH``; the chain carries the full 32-byte digest;
- ``H``: ``sha256`` = SHA-256 of ``pickle.dumps(obj, protocol=5)`` (vLLM's default), or ``sha256_cbor`` =
  SHA-256 of canonical CBOR (the cross-language choice);
- ``NONE_HASH = H(seed)`` where the seed is ``PYTHONHASHSEED`` when set, else the fixed string
  ``"vllm-none-hash"`` (vLLM >= 0.29). The caller passes the seed; this module reads no environment;
- events carry the low 64 bits of a digest (``int.from_bytes(digest, "big") & (2**64 - 1)``), as vLLM does
  with ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1`` (its default);
- extra keys: ``None`` when nothing applies, else a tuple in the order LoRA, (multimodal), cache_salt
  (first block only). Three historical styles are supported: ``"tagged"`` (vLLM >= 0.31:
  ``("lora", name, path)``, ``("cache_salt", salt)``), ``"bare"`` (0.12-0.30: ``name``, ``salt``) and
  ``"int"`` (<= 0.11: the integer LoRA id, ``salt``).

Token ids must be plain Python ``int`` (pickle encodes a numpy integer or a bool differently).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from simulator.engine import cbor

__all__ = [
    "DEFAULT_NONE_HASH_SEED",
    "BlockHasher",
    "ExtraKeys",
    "ExtraKeysStyle",
    "HashAlgo",
    "PromptHashCache",
    "RequestKeys",
    "compute_block_hashes",
    "hash_function",
    "sha256_cbor",
    "sha256_pickle",
    "to_event_hash",
]

HashAlgo = Literal["sha256", "sha256_cbor"]
ExtraKeysStyle = Literal["tagged", "bare", "int"]
ExtraKeys = tuple[object, ...] | None

DEFAULT_NONE_HASH_SEED = "vllm-none-hash"
_U64_MASK = (1 << 64) - 1
# vLLM pickles with pickle.HIGHEST_PROTOCOL, which is 5 on every CPython it supports; pin it so a future
# protocol 6 cannot silently change every hash.
_PICKLE_PROTOCOL = 5


def sha256_pickle(obj: object) -> bytes:
    """vLLM's ``sha256``: SHA-256 over ``pickle.dumps(obj, protocol=5)``."""
    return hashlib.sha256(pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)).digest()


def sha256_cbor(obj: object) -> bytes:
    """vLLM's ``sha256_cbor``: SHA-256 over canonical CBOR."""
    return hashlib.sha256(cbor.dumps(obj)).digest()


def hash_function(algo: HashAlgo) -> Callable[[object], bytes]:
    """The serialise-and-digest function for a ``--prefix-caching-hash-algo`` value."""
    if algo == "sha256":
        return sha256_pickle
    if algo == "sha256_cbor":
        return sha256_cbor
    raise ValueError(f"unsupported prefix_caching_hash_algo {algo!r} (supported: sha256, sha256_cbor)")


def to_event_hash(digest: bytes) -> int:
    """The 64-bit integer a KV event carries for a 32-byte block digest (its last 8 bytes, big-endian)."""
    return int.from_bytes(digest, "big") & _U64_MASK


@dataclass(frozen=True, slots=True)
class RequestKeys:
    """What a request contributes to its blocks' extra keys, precomputed once per request.

    ``first`` applies to block 0 (it alone carries the cache salt), ``rest`` to every later block.
    ``event_first`` / ``event_rest`` are the untagged forms published in ``BlockStored.extra_keys``.
    """

    first: ExtraKeys = None
    rest: ExtraKeys = None
    event_first: ExtraKeys = None
    event_rest: ExtraKeys = None

    @classmethod
    def build(
        cls,
        style: ExtraKeysStyle = "tagged",
        *,
        lora_name: str | None = None,
        lora_path: str | None = None,
        lora_id: int | None = None,
        cache_salt: str | None = None,
    ) -> RequestKeys:
        lora_key: list[object] = []
        untagged_lora: list[object] = []
        if lora_name is not None:
            if style == "tagged":
                lora_key.append(("lora", lora_name, lora_path if lora_path is not None else ""))
            elif style == "bare":
                lora_key.append(lora_name)
            elif style == "int":
                if lora_id is None:
                    raise ValueError("extra_keys_style 'int' needs the request's integer LoRA id")
                lora_key.append(lora_id)
            else:
                raise ValueError(f"unknown extra_keys_style {style!r}")
            untagged_lora.append(lora_name)
        salt_key: list[object] = []
        untagged_salt: list[object] = []
        if cache_salt:
            salt_key.append(("cache_salt", cache_salt) if style == "tagged" else cache_salt)
            untagged_salt.append(cache_salt)
        return cls(
            first=tuple(lora_key + salt_key) or None,
            rest=tuple(lora_key) or None,
            event_first=tuple(untagged_lora + untagged_salt) or None,
            event_rest=tuple(untagged_lora) or None,
        )

    def for_block(self, index: int) -> ExtraKeys:
        return self.first if index == 0 else self.rest

    def event_for_block(self, index: int) -> ExtraKeys:
        return self.event_first if index == 0 else self.event_rest


NO_KEYS = RequestKeys()


class BlockHasher:
    """Hashes full token blocks into vLLM's chain for one algorithm and seed."""

    __slots__ = ("_fn", "algo", "none_hash", "seed")

    def __init__(self, algo: HashAlgo = "sha256", seed: str | None = None) -> None:
        self.algo: HashAlgo = algo
        self._fn = hash_function(algo)
        # vLLM: PYTHONHASHSEED if set, else the fixed default seed (for the cryptographic algorithms).
        self.seed: str = DEFAULT_NONE_HASH_SEED if seed is None else seed
        self.none_hash: bytes = self._fn(self.seed)

    def hash_block(self, parent: bytes | None, tokens: Sequence[int], extra_keys: ExtraKeys = None) -> bytes:
        """``hash_block_tokens``: the digest of one full block given its parent's digest (None = first)."""
        return self._fn((parent or self.none_hash, tuple(tokens), extra_keys))

    def extend(
        self,
        hashes: list[bytes],
        token_ids: Sequence[int],
        block_size: int,
        keys: RequestKeys = NO_KEYS,
    ) -> None:
        """Append the digests of every full block of ``token_ids`` not yet in ``hashes``."""
        n_full = len(token_ids) // block_size
        parent = hashes[-1] if hashes else None
        fn = self._fn
        none_hash = self.none_hash
        for i in range(len(hashes), n_full):
            start = i * block_size
            block = tuple(token_ids[start : start + block_size])
            parent = fn((parent or none_hash, block, keys.first if i == 0 else keys.rest))
            hashes.append(parent)


class PromptHashCache:
    """The block digests of prompts already hashed, by the identity of the prompt's token list.

    Why it exists: hashing a prompt (serialise and SHA-256 every block) is the largest part of adding a
    request to an engine, and a simulated fleet sends the same prompts again and again -- its workloads reuse
    one token list per prompt. Engines that share a cache look a list up by identity instead of rehashing it.
    Only for callers that never mutate a token list they submitted (a changed length is detected and
    rehashed, changed contents are not); only for requests without extra keys (no LoRA, no cache salt).
    Holds at most ``capacity`` lists (keeping them alive keeps their ids unique) and starts over when full.
    """

    __slots__ = ("_capacity", "_entries")

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        # (algorithm, seed, block size, id of the token list) -> (the list, its digests)
        self._entries: dict[tuple[str, str, int, int], tuple[Sequence[int], tuple[bytes, ...]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, hasher: BlockHasher, block_size: int, token_ids: Sequence[int]) -> tuple[bytes, ...] | None:
        hit = self._entries.get((hasher.algo, hasher.seed, block_size, id(token_ids)))
        if hit is None or hit[0] is not token_ids or len(hit[1]) != len(token_ids) // block_size:
            return None
        return hit[1]

    def put(self, hasher: BlockHasher, block_size: int, token_ids: Sequence[int], digests: Sequence[bytes]) -> None:
        if len(self._entries) >= self._capacity:
            self._entries.clear()
        self._entries[(hasher.algo, hasher.seed, block_size, id(token_ids))] = (token_ids, tuple(digests))


def compute_block_hashes(
    token_ids: Sequence[int],
    block_size: int = 16,
    algo: HashAlgo = "sha256",
    *,
    seed: str | None = None,
    lora_name: str | None = None,
    lora_path: str | None = None,
    lora_id: int | None = None,
    cache_salt: str | None = None,
    extra_keys_style: ExtraKeysStyle = "tagged",
) -> list[int]:
    """The 64-bit event hashes of every full block of a prompt, as vLLM would publish them."""
    hasher = BlockHasher(algo, seed)
    keys = RequestKeys.build(
        extra_keys_style, lora_name=lora_name, lora_path=lora_path, lora_id=lora_id, cache_salt=cache_salt
    )
    digests: list[bytes] = []
    hasher.extend(digests, token_ids, block_size, keys)
    return [to_event_hash(d) for d in digests]
