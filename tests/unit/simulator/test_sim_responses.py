"""Response bytes of the simulated server: vLLM's JSON bodies and SSE chunks, usage with cached tokens,
and generated text that re-tokenizes to the generated ids."""

from __future__ import annotations

from typing import Any

import orjson

from simulator.engine.tokenizer import OUTPUT_TOKEN_IDS, Tokenizer
from simulator.server.responses import SSE_DONE, ResponseWriter, usage_json

TOK = Tokenizer()


def sse_payload(chunk: bytes) -> dict[str, Any]:
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
    return orjson.loads(chunk[len(b"data: ") : -2])


def test_usage_carries_cached_tokens() -> None:
    assert usage_json(100, 7, 64) == {
        "prompt_tokens": 100,
        "total_tokens": 107,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 64},
    }


def test_completion_body() -> None:
    w = ResponseWriter("completions", "m", TOK)
    ids = list(OUTPUT_TOKEN_IDS[:3])
    body = orjson.loads(w.body(w.text(ids), "length", usage_json(5, 3, 0)))
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == "m"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length" and choice["logprobs"] is None
    assert choice["text"] == " " + TOK.decode(ids)
    assert body["usage"]["completion_tokens"] == 3
    assert "kv_transfer_params" not in body


def test_chat_body_and_kv_transfer_params() -> None:
    w = ResponseWriter("chat", "m", TOK)
    ids = list(OUTPUT_TOKEN_IDS[5:9])
    body = orjson.loads(w.body(w.text(ids), "stop", usage_json(5, 4, 0), {"do_remote_prefill": True}))
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert TOK.encode(message["content"]) == ids  # a reply sent back hits the engine's cached blocks
    assert body["kv_transfer_params"] == {"do_remote_prefill": True}


def test_chat_stream_chunks() -> None:
    w = ResponseWriter("chat", "m", TOK)
    ids = list(OUTPUT_TOKEN_IDS[:3])
    role = sse_payload(w.role_chunk())
    assert role["object"] == "chat.completion.chunk"
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}]
    pieces = []
    for i, token in enumerate(ids):
        chunk = sse_payload(w.token_chunk(w.text([token]), "stop" if i == 2 else None))
        assert chunk["id"] == role["id"]
        pieces.append(chunk["choices"][0]["delta"]["content"])
        assert chunk["choices"][0]["finish_reason"] == ("stop" if i == 2 else None)
    assert not pieces[0].startswith(" ") and all(p.startswith(" ") for p in pieces[1:])
    assert TOK.encode("".join(pieces)) == ids
    usage = sse_payload(w.usage_chunk(usage_json(4, 3, 0)))
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7
    assert SSE_DONE == b"data: [DONE]\n\n"


def test_completion_stream_chunks() -> None:
    w = ResponseWriter("completions", "m", TOK)
    assert w.role_chunk() == b""
    chunk = sse_payload(w.token_chunk(w.text([OUTPUT_TOKEN_IDS[0]]), "length"))
    assert chunk["object"] == "text_completion"
    (choice,) = chunk["choices"]
    assert choice["text"].startswith(" ") and choice["finish_reason"] == "length"
