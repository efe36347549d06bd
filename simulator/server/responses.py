"""The bytes of OpenAI responses as vLLM writes them: JSON bodies, SSE chunks, ``usage``.

Why it exists: the picker and benchmark clients parse these -- usage (with
``prompt_tokens_details.cached_tokens``) from a JSON body or from the final SSE chunk, TTFT from the first
content chunk -- so the shapes live in one place with nothing else in it. Generated text is the
simulator's pseudo-words; each token is sent as ``" word"`` (a leading space, like a real BPE token),
except the first token of a chat reply, which has none, so the whole reply re-tokenizes to the ids the
engine generated.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from simulator.engine.tokenizer import Tokenizer
from simulator.server.openai_api import RequestKind

__all__ = [
    "SSE_DONE",
    "ResponseWriter",
    "usage_json",
]

SSE_DONE = b"data: [DONE]\n\n"


def usage_json(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class ResponseWriter:
    """Formats one response (JSON or SSE) for one request."""

    __slots__ = ("_first_piece", "_tokenizer", "created", "id", "kind", "model")

    def __init__(self, kind: RequestKind, model: str, tokenizer: Tokenizer, request_id: str | None = None) -> None:
        self.kind = kind
        self.model = model
        self._tokenizer = tokenizer
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        self.id = request_id or f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._first_piece = True

    def text(self, token_ids: list[int]) -> str:
        """The text of the next generated tokens (see the module docstring for spacing)."""
        if not token_ids:
            return ""
        words = self._tokenizer.decode(token_ids)
        if self._first_piece and self.kind == "chat":
            self._first_piece = False
            return words
        self._first_piece = False
        return " " + words

    # -- non-streaming --------------------------------------------------------------------------------

    def body(self, text: str, finish_reason: str, usage: dict[str, Any],
             kv_transfer_params: dict[str, Any] | None = None) -> bytes:
        choice: dict[str, Any]
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                      "logprobs": None, "finish_reason": finish_reason, "stop_reason": None}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                      "stop_reason": None}
            obj = "text_completion"
        out: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                               "choices": [choice], "usage": usage}
        if kv_transfer_params is not None:
            out["kv_transfer_params"] = kv_transfer_params
        return orjson.dumps(out)

    # -- streaming ------------------------------------------------------------------------------------

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def role_chunk(self) -> bytes:
        """Chat's first chunk (the assistant role, empty content); empty bytes for completions."""
        if self.kind != "chat":
            return b""
        return _sse(self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None}]))

    def token_chunk(self, text: str, finish_reason: str | None = None) -> bytes:
        choice: dict[str, Any]
        if self.kind == "chat":
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if finish_reason is not None:
            choice["stop_reason"] = None
        return _sse(self._chunk([choice]))

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        chunk = self._chunk([])
        chunk["usage"] = usage
        return _sse(chunk)
