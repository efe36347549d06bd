"""The built-in tokenizer: the documented rule, stability, generated-text round trip, no engine imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from simulator.engine import tokenizer
from simulator.engine.tokenizer import OUTPUT_TOKEN_IDS, OUTPUT_WORDS, Tokenizer, decode, encode, fnv1a_32


def test_fnv1a_reference_values() -> None:
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


def test_rule_pieces_and_ids() -> None:
    tok = Tokenizer()
    assert tok.pieces("Hello, world!  x_1") == ["Hello", ",", "world", "!", "x_1"]
    expected = [fnv1a_32(p.encode()) % 128256 for p in ["Hello", ",", "world", "!"]]
    assert encode("Hello, world!") == expected
    # Whitespace only separates.
    assert encode("Hello ,\n\tworld !") == expected
    assert tok.count("a b, c") == 4


def test_ids_in_vocab_and_stable_across_instances() -> None:
    small = Tokenizer(vocab_size=1000)
    text = "The quick brown fox jumps over the lazy dog. Ünïcödé 漢字 too!"
    ids = small.encode(text)
    assert ids == Tokenizer(vocab_size=1000).encode(text)
    assert all(0 <= i < 1000 for i in ids)
    assert encode("fox") == [fnv1a_32(b"fox") % 128256]


def test_generated_words_round_trip() -> None:
    assert len(OUTPUT_WORDS) == len(OUTPUT_TOKEN_IDS) > 4000
    assert len(set(OUTPUT_TOKEN_IDS)) == len(OUTPUT_TOKEN_IDS)
    ids = list(OUTPUT_TOKEN_IDS[:50]) + list(OUTPUT_TOKEN_IDS[-50:])
    text = decode(ids)
    assert encode(text) == ids
    assert decode([OUTPUT_TOKEN_IDS[0]]) == OUTPUT_WORDS[0]


def test_unknown_ids_decode_to_placeholders() -> None:
    unknown = next(i for i in range(128256) if i not in set(OUTPUT_TOKEN_IDS))
    assert decode([unknown]) == f"<{unknown}>"


def test_module_imports_only_the_standard_library() -> None:
    source = Path(tokenizer.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
