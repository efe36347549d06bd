"""The simulator's chat template: OpenAI chat messages flattened to one prompt text.

Why it exists: a chat request is tokenized as the text its template renders, so the picker (to predict
prefix-cache hits) and the simulated model server (to fill its cache) must render messages identically.
The rule is deliberately simple and easy to re-implement:

- every message renders as ``<|{role}|>\\n{content}\\n``;
- ``content`` is a string, or a list of content parts of which the ``text`` of every ``{"type": "text"}``
  part counts, joined by ``"\\n"``; any other part renders as ``<{type}>`` (e.g. ``<image_url>``), so
  it still occupies a token position; a missing or ``null`` content renders as the empty string;
- ``add_generation_prompt`` (default true) appends ``<|assistant|>\\n``;
- ``continue_final_message`` (default false) leaves the last message open: no trailing ``\\n`` after its
  content and no generation prompt (as in vLLM, the two options exclude each other).

With the simulator's tokenizer (which drops whitespace) a multi-turn conversation that sends a reply back
renders to the previous prompt's tokens followed by the reply's tokens, so it hits the blocks the engine
cached while decoding.

This module imports only the standard library (the picker may vendor a copy of it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ChatTemplateError", "content_text", "render_chat"]


class ChatTemplateError(ValueError):
    """The messages are not a valid OpenAI chat conversation."""


def content_text(content: Any) -> str:
    """The text one message's ``content`` contributes."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        pieces: list[str] = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, Mapping):
                kind = part.get("type", "text")
                if kind == "text":
                    text = part.get("text", "")
                    pieces.append(text if isinstance(text, str) else str(text))
                else:
                    pieces.append(f"<{kind}>")
            else:
                raise ChatTemplateError("content parts must be objects or strings")
        return "\n".join(pieces)
    raise ChatTemplateError("message content must be a string, a list of parts or null")


def render_chat(
    messages: Any,
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
) -> str:
    """The prompt text of a chat conversation (see the module docstring for the rule)."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise ChatTemplateError("'messages' must be a non-empty list")
    if add_generation_prompt and continue_final_message:
        raise ChatTemplateError("'continue_final_message' and 'add_generation_prompt' cannot both be true")
    out: list[str] = []
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError("each message must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ChatTemplateError("each message needs a non-empty string 'role'")
        out.append(f"<|{role}|>\n")
        out.append(content_text(message.get("content")))
        if not (continue_final_message and i == last):
            out.append("\n")
    if add_generation_prompt:
        out.append("<|assistant|>\n")
    return "".join(out)
