"""Canonical CBOR encoding of the few value types that go into a vLLM block hash.

vLLM's ``sha256_cbor`` prefix-caching hash serialises ``(parent_hash, token_ids, extra_keys)`` with
``cbor2.dumps(obj, canonical=True)`` and hashes the bytes. Reproducing those hashes bit for bit needs
exactly that serialisation, and only for a handful of types: ``None``, booleans, integers, byte and text
strings, and tuples/lists (encoded as arrays). This module is that encoder (RFC 8949 deterministic
encoding: shortest-form heads, definite lengths), so the simulator does not depend on ``cbor2``.

Anything else raises ``TypeError`` rather than guessing an encoding that might not match ``cbor2``.
"""

from __future__ import annotations

import struct

__all__ = ["dumps"]

_MAJOR_UINT = 0
_MAJOR_NEGINT = 1
_MAJOR_BYTES = 2
_MAJOR_TEXT = 3
_MAJOR_ARRAY = 4

_FALSE = b"\xf4"
_TRUE = b"\xf5"
_NULL = b"\xf6"

# Heads for small unsigned ints (0..23) are one byte; precompute them for the hot token path.
_SMALL_UINT = tuple(bytes([i]) for i in range(24))


def _head(major: int, value: int) -> bytes:
    """The shortest initial byte(s) for ``major`` with argument ``value`` (0 <= value < 2**64)."""
    top = major << 5
    if value < 24:
        return bytes([top | value])
    if value < 0x100:
        return bytes([top | 24, value])
    if value < 0x10000:
        return bytes([top | 25]) + struct.pack(">H", value)
    if value < 0x100000000:
        return bytes([top | 26]) + struct.pack(">I", value)
    if value < 0x10000000000000000:
        return bytes([top | 27]) + struct.pack(">Q", value)
    raise TypeError("integers beyond 64 bits (CBOR bignums) are not supported")


def _encode(value: object, out: list[bytes]) -> None:
    if value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        v = int(value)
        if 0 <= v < 24:
            out.append(_SMALL_UINT[v])
        elif v >= 0:
            out.append(_head(_MAJOR_UINT, v))
        else:
            out.append(_head(_MAJOR_NEGINT, -1 - v))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(_head(_MAJOR_BYTES, len(raw)))
        out.append(raw)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(_head(_MAJOR_TEXT, len(raw)))
        out.append(raw)
    elif isinstance(value, (tuple, list)):
        out.append(_head(_MAJOR_ARRAY, len(value)))
        for item in value:
            _encode(item, out)
    else:
        raise TypeError(f"cannot CBOR-encode a {type(value).__name__} for a block hash")


def dumps(value: object) -> bytes:
    """Encode ``value`` as canonical CBOR, byte-identical to ``cbor2.dumps(value, canonical=True)``."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)
