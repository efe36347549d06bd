"""A deterministic, download-free tokenizer shared by the simulator and the picker.

Why it exists: prefix-cache routing compares token-block hashes, so the picker and the simulated model
server must turn the same text into the same token ids, without a Hugging Face download. The rule is
simple enough to re-implement in any language:

1. Split the text into pieces with the regular expression ``\\w+|[^\\w\\s]`` (Python ``re``, Unicode):
   every maximal run of word characters is one piece, every other non-space character is a piece of
   its own, whitespace separates pieces and is dropped.
2. A piece's id is the 32-bit FNV-1a hash of its UTF-8 bytes, modulo ``vocab_size`` (default 128256,
   Llama-3's vocabulary size). FNV-1a: ``h = 0x811C9DC5``; for each byte ``h = ((h ^ b) * 0x01000193)
   mod 2**32``.

Text the simulator *generates* is made of pseudo-words from a fixed list (``OUTPUT_WORDS``: two
consonant-vowel syllables, e.g. ``"bako"``), joined by single spaces. Each of those words tokenizes to
exactly one id and the list keeps only words with distinct ids, so a generated reply re-tokenizes to the
very ids the engine produced: a multi-turn conversation that sends the reply back hits the blocks the
engine cached while decoding. ``decode`` maps such ids back to their words (other ids have no inverse;
they decode to ``"<id>"``).

This module imports only the standard library (the picker may vendor a copy of it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "OUTPUT_TOKEN_IDS",
    "OUTPUT_WORDS",
    "Tokenizer",
    "decode",
    "encode",
    "fnv1a_32",
]

DEFAULT_VOCAB_SIZE = 128256

_PIECE = re.compile(r"\w+|[^\w\s]")
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a of ``data``."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK32
    return h


def _pseudo_words() -> list[str]:
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    return [a + b for a in syllables for b in syllables]


class Tokenizer:
    """Text to token ids by the rule in the module docstring, for one vocabulary size."""

    __slots__ = ("_cache", "_word_of", "output_token_ids", "output_words", "vocab_size")

    def __init__(self, vocab_size: int = DEFAULT_VOCAB_SIZE) -> None:
        if vocab_size < 2:
            raise ValueError("vocab_size must be at least 2")
        self.vocab_size = vocab_size
        self._cache: dict[str, int] = {}
        words: list[str] = []
        ids: list[int] = []
        word_of: dict[int, str] = {}
        for word in _pseudo_words():
            token_id = self.piece_id(word)
            if token_id in word_of:
                continue  # keep decode unambiguous
            word_of[token_id] = word
            words.append(word)
            ids.append(token_id)
        self.output_words: tuple[str, ...] = tuple(words)
        self.output_token_ids: tuple[int, ...] = tuple(ids)
        self._word_of = word_of

    def piece_id(self, piece: str) -> int:
        """The id of one piece (a word-character run or a single punctuation character)."""
        token_id = self._cache.get(piece)
        if token_id is None:
            token_id = fnv1a_32(piece.encode("utf-8")) % self.vocab_size
            if len(self._cache) < 1_000_000:
                self._cache[piece] = token_id
        return token_id

    def pieces(self, text: str) -> list[str]:
        return _PIECE.findall(text)

    def encode(self, text: str) -> list[int]:
        piece_id = self.piece_id
        return [piece_id(p) for p in _PIECE.findall(text)]

    def count(self, text: str) -> int:
        return len(_PIECE.findall(text))

    def decode(self, token_ids: Iterable[int]) -> str:
        """Words for ids of generated text, ``"<id>"`` for ids with no known word, joined by spaces."""
        word_of = self._word_of
        ids = token_ids if isinstance(token_ids, (list, tuple)) else list(token_ids)
        try:
            return " ".join(map(word_of.__getitem__, ids))  # every id a known word: no Python loop
        except KeyError:
            return " ".join(word_of.get(t, f"<{t}>") for t in ids)


_DEFAULT = Tokenizer()
OUTPUT_WORDS: tuple[str, ...] = _DEFAULT.output_words
OUTPUT_TOKEN_IDS: tuple[int, ...] = _DEFAULT.output_token_ids


def encode(text: str) -> list[int]:
    """Token ids of ``text`` with the default vocabulary size."""
    return _DEFAULT.encode(text)


def decode(token_ids: Iterable[int]) -> str:
    """Text for generated token ids with the default vocabulary size."""
    return _DEFAULT.decode(token_ids)
