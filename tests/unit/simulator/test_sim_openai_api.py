"""Request parsing of the simulated server: prompts as text or ids, chat through the template, vLLM's
max_tokens defaults and limits, model / LoRA resolution, and OpenAI-style errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from simulator.engine.chat_template import render_chat
from simulator.engine.tokenizer import Tokenizer
from simulator.server.config import LoraModule
from simulator.server.openai_api import ApiError, GenerationRequest, decode_json, parse_generation

TOK = Tokenizer()
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
LORA = LoraModule("sql-lora", "/adapters/sql")


def parse(kind: str, payload: dict[str, Any], max_model_len: int = 4096) -> GenerationRequest:
    return parse_generation(kind, payload, tokenizer=TOK, served_models=(MODEL, "alias"),  # type: ignore[arg-type]
                            loras={LORA.name: LORA}, max_model_len=max_model_len)


def error_of(kind: str, payload: dict[str, Any], max_model_len: int = 4096) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(kind, payload, max_model_len)
    return info.value


def test_text_prompt_is_tokenized_with_the_builtin_tokenizer() -> None:
    gen = parse("completions", {"model": MODEL, "prompt": "Hello, world!"})
    assert gen.prompt_token_ids == TOK.encode("Hello, world!")
    assert gen.max_tokens == 16  # vLLM's completions default
    assert gen.model == MODEL and gen.lora is None
    assert not gen.stream and not gen.include_usage and not gen.ignore_eos


def test_token_id_prompt_and_batch_of_one() -> None:
    assert parse("completions", {"prompt": [5, 6, 7]}).prompt_token_ids == [5, 6, 7]
    assert parse("completions", {"prompt": [[5, 6]]}).prompt_token_ids == [5, 6]
    assert parse("completions", {"prompt": ["a b"]}).prompt_token_ids == TOK.encode("a b")


def test_chat_messages_go_through_the_chat_template() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    gen = parse("chat", {"messages": messages})
    assert gen.prompt_token_ids == TOK.encode(render_chat(messages))
    # No max_tokens: what is left of the context window.
    assert gen.max_tokens == 4096 - len(gen.prompt_token_ids)


def test_chat_max_completion_tokens_wins_over_max_tokens() -> None:
    gen = parse("chat", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 9,
                         "max_completion_tokens": 3})
    assert gen.max_tokens == 3


def test_streaming_options_and_sampling_flags() -> None:
    gen = parse("completions", {"prompt": "x", "stream": True, "stream_options": {"include_usage": True},
                                "ignore_eos": True, "min_tokens": 2, "max_tokens": 5, "cache_salt": "s1"})
    assert gen.stream and gen.include_usage and gen.ignore_eos
    assert (gen.min_tokens, gen.max_tokens, gen.cache_salt) == (2, 5, "s1")


def test_model_names_and_lora_adapters_resolve() -> None:
    assert parse("completions", {"model": "alias", "prompt": "x"}).model == "alias"
    gen = parse("completions", {"model": "sql-lora", "prompt": "x"})
    assert gen.lora == LORA and gen.model == "sql-lora"
    err = error_of("completions", {"model": "nope", "prompt": "x"})
    assert err.status == 404 and err.err_type == "NotFoundError"


def test_kv_transfer_params_mark_the_pd_halves() -> None:
    prefill = parse("completions", {"prompt": "x", "kv_transfer_params": {"do_remote_decode": True}})
    decode = parse("completions", {"prompt": "x", "kv_transfer_params": {"do_remote_prefill": True}})
    assert prefill.remote_decode and not prefill.remote_prefill
    assert decode.remote_prefill and not decode.remote_decode


@pytest.mark.parametrize(
    ("kind", "payload", "param"),
    [
        ("completions", {}, "prompt"),
        ("completions", {"prompt": None}, "prompt"),
        ("completions", {"prompt": ""}, "prompt"),
        ("completions", {"prompt": ["a", "b"]}, "prompt"),
        ("completions", {"prompt": [1, -2]}, "prompt"),
        ("completions", {"prompt": [1, 200_000]}, "prompt"),
        ("completions", {"prompt": 3}, "prompt"),
        ("chat", {}, "messages"),
        ("chat", {"messages": []}, "messages"),
        ("chat", {"messages": [{"content": "no role"}]}, "messages"),
        ("completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("completions", {"prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ("completions", {"prompt": "x", "n": 2}, "n"),
        ("completions", {"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
        ("completions", {"prompt": "x", "stream": "yes"}, "stream"),
        ("completions", {"prompt": "x", "max_tokens": 2, "min_tokens": 3}, "min_tokens"),
        ("completions", {"prompt": "x", "model": 5}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(kind: str, payload: dict[str, Any], param: str) -> None:
    err = error_of(kind, payload)
    assert err.status == 400
    assert err.param == param
    body = orjson.loads(err.body())
    assert body == {"error": {"message": err.message, "type": "BadRequestError", "param": param, "code": 400}}


def test_prompt_too_long_is_a_400() -> None:
    long_prompt = " ".join(["word"] * 100)
    err = error_of("completions", {"prompt": long_prompt, "max_tokens": 1}, max_model_len=64)
    assert err.status == 400 and "maximum context length is 64 tokens" in err.message
    # Prompt fits but prompt + max_tokens does not.
    err = error_of("completions", {"prompt": " ".join(["w"] * 60), "max_tokens": 10}, max_model_len=64)
    assert "requested 70 tokens (60 in the messages, 10 in the completion)" in err.message
    # Chat without max_tokens and a prompt filling the window.
    err = error_of("chat", {"messages": [{"role": "user", "content": long_prompt}]}, max_model_len=64)
    assert err.status == 400


def test_decode_json_rejects_malformed_and_non_object_bodies() -> None:
    assert decode_json(b'{"a": 1}') == {"a": 1}
    for raw in (b"{bad", b"[1, 2]", b""):
        with pytest.raises(ApiError) as info:
            decode_json(raw)
        assert info.value.status == 400
