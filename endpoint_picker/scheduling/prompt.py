"""The bytes of a request's prompt, as the prefix index hashes them (one definition for every plugin)."""

from __future__ import annotations

import orjson

from endpoint_picker.request import ApiType, InferenceRequest

_FIELD = {
    ApiType.COMPLETIONS: "prompt",
    ApiType.CHAT_COMPLETIONS: "messages",
    ApiType.RESPONSES: "input",
    ApiType.CONVERSATIONS: "items",
    ApiType.EMBEDDINGS: "input",
}


def prompt_bytes(request: InferenceRequest) -> bytes:
    """Text prompts as UTF-8; structured prompts (messages, token ids, items) as compact JSON."""
    body = request.body
    if body is None or request.api is None:
        return b""
    value = body.get(_FIELD[request.api])
    if isinstance(value, str):
        return value.encode()
    if value is None:
        return b""
    return orjson.dumps(value)
