"""The simulator's chat template: the documented rendering, content parts, and the multi-turn prefix
property prefix-cache routing relies on."""

from __future__ import annotations

import pytest

from simulator.engine.chat_template import ChatTemplateError, render_chat
from simulator.engine.tokenizer import encode


def test_rendering_rule() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_chat(messages) == "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"
    assert render_chat(messages, add_generation_prompt=False) == "<|system|>\nBe brief.\n<|user|>\nHi\n"


def test_continue_final_message_leaves_the_last_message_open() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]
    assert render_chat(messages, add_generation_prompt=False, continue_final_message=True) == (
        "<|user|>\nHi\n<|assistant|>\nHel"
    )
    with pytest.raises(ChatTemplateError):
        render_chat(messages, continue_final_message=True)


def test_content_parts_and_null_content() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {}},
                                     {"type": "text", "text": "here"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    assert render_chat(messages, add_generation_prompt=False) == (
        "<|user|>\nlook\n<image_url>\nhere\n<|assistant|>\n\n"
    )


@pytest.mark.parametrize(
    "messages",
    [[], "hi", [{"content": "x"}], [{"role": "", "content": "x"}], ["not an object"],
     [{"role": "user", "content": 5}], [{"role": "user", "content": [3]}]],
)
def test_invalid_conversations(messages: object) -> None:
    with pytest.raises(ChatTemplateError):
        render_chat(messages)


def test_a_later_turn_extends_the_earlier_prompt_tokens() -> None:
    turn1 = [{"role": "user", "content": "What is KV caching?"}]
    reply = "bako dime fulo"
    turn2 = [*turn1, {"role": "assistant", "content": reply}, {"role": "user", "content": "And prefixes?"}]
    first = encode(render_chat(turn1))
    second = encode(render_chat(turn2))
    assert second[: len(first)] == first
    assert second[len(first) : len(first) + 3] == encode(reply)
