"""Parsing and validating OpenAI Completions / Chat Completions requests, vLLM's way.

Why it exists: the HTTP handlers should only move bytes; what a body means -- prompt as text or token ids,
chat messages through the simulator's chat template, ``max_tokens`` defaults and limits, streaming
options, LoRA adapters named as the model, P/D ``kv_transfer_params`` -- is decided here, in plain
functions the unit tests drive directly. Errors are ``ApiError`` with vLLM's (OpenAI-style) JSON body.

vLLM rules reproduced: completions ``max_tokens`` defaults to 16; chat ``max_completion_tokens`` (else
``max_tokens``) defaults to what is left of ``max_model_len``; ``prompt_tokens + max_tokens >
max_model_len`` is a 400; a model name that is neither served nor a LoRA module is a 404; token ids must be
in the vocabulary. Simulator limits: one prompt per request and ``n == 1`` (else 400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from simulator.engine.chat_template import ChatTemplateError, render_chat
from simulator.engine.tokenizer import Tokenizer
from simulator.server.config import LoraModule

__all__ = ["ApiError", "GenerationRequest", "RequestKind", "decode_json", "parse_generation", "prompt_of"]

RequestKind = Literal["completions", "chat"]

_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 408: "RequestTimeoutError",
                429: "RateLimitError", 500: "InternalServerError", 503: "ServiceUnavailableError"}


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, err_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        fallback = "BadRequestError" if status < 500 else "InternalServerError"
        self.err_type = err_type or _ERROR_TYPES.get(status, fallback)

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": self.message, "type": self.err_type, "param": self.param,
                                       "code": self.status}})


def decode_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from exc
    if not isinstance(payload, dict):
        raise ApiError(400, "the JSON body must be an object")
    return payload


@dataclass(slots=True)
class GenerationRequest:
    """A validated generation request, tokenized."""

    kind: RequestKind
    # The model name to report back (the requested one, else the served name).
    model: str
    lora: LoraModule | None
    prompt_token_ids: list[int]
    max_tokens: int
    # The client asked for a fixed length (ignore_eos): generate exactly max_tokens.
    ignore_eos: bool
    min_tokens: int
    stream: bool
    include_usage: bool
    kv_transfer_params: dict[str, Any] | None
    cache_salt: str | None

    @property
    def remote_decode(self) -> bool:
        """This is the prefill half of a P/D request (the caller will decode elsewhere)."""
        kvp = self.kv_transfer_params
        return bool(kvp and kvp.get("do_remote_decode"))

    @property
    def remote_prefill(self) -> bool:
        """This is the decode half: the prompt's KV is to be pulled from a remote prefiller."""
        kvp = self.kv_transfer_params
        return bool(kvp and kvp.get("do_remote_prefill"))


def _int_field(payload: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer", param=name)
    if value < minimum:
        raise ApiError(400, f"'{name}' must be >= {minimum}, got {value}", param=name)
    return value


def _bool_field(payload: Mapping[str, Any], name: str, default: bool) -> bool:
    value = payload.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be a boolean", param=name)
    return value


def _token_ids(values: Sequence[Any], vocab_size: int) -> list[int]:
    out: list[int] = []
    for t in values:
        if isinstance(t, bool) or not isinstance(t, int):
            raise ApiError(400, "token ids must be integers", param="prompt")
        if not 0 <= t < vocab_size:
            raise ApiError(400, f"token id {t} is out of vocabulary (size {vocab_size})", param="prompt")
        out.append(t)
    return out


def prompt_of(kind: RequestKind, payload: Mapping[str, Any], tokenizer: Tokenizer) -> list[int]:
    """The prompt's token ids: completions ``prompt`` (text or ids) or chat ``messages`` via the template."""
    if kind == "chat":
        if "messages" not in payload:
            raise ApiError(400, "'messages' is required", param="messages")
        try:
            text = render_chat(
                payload["messages"],
                add_generation_prompt=_bool_field(payload, "add_generation_prompt", True),
                continue_final_message=_bool_field(payload, "continue_final_message", False),
            )
        except ChatTemplateError as exc:
            raise ApiError(400, str(exc), param="messages") from exc
        tokens = tokenizer.encode(text)
    else:
        if "prompt" not in payload or payload["prompt"] is None:
            raise ApiError(400, "'prompt' is required", param="prompt")
        prompt = payload["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            tokens = tokenizer.encode(prompt)
        elif isinstance(prompt, list) and all(not isinstance(p, (str, list)) for p in prompt):
            tokens = _token_ids(prompt, tokenizer.vocab_size)
        elif isinstance(prompt, list):
            raise ApiError(400, "batched prompts are not supported by the simulator: send one prompt per request",
                           param="prompt")
        else:
            raise ApiError(400, "'prompt' must be a string or a list of token ids", param="prompt")
    if not tokens:
        raise ApiError(400, "the prompt is empty", param="messages" if kind == "chat" else "prompt")
    return tokens


def _resolve_model(payload: Mapping[str, Any], served: Sequence[str],
                   loras: Mapping[str, LoraModule]) -> tuple[str, LoraModule | None]:
    model = payload.get("model")
    if model is None or model == "":
        return served[0], None
    if not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", param="model")
    if model in served:
        return model, None
    lora = loras.get(model)
    if lora is not None:
        return model, lora
    raise ApiError(404, f"The model `{model}` does not exist.", param="model")


def parse_generation(
    kind: RequestKind,
    payload: Mapping[str, Any],
    *,
    tokenizer: Tokenizer,
    served_models: Sequence[str],
    loras: Mapping[str, LoraModule],
    max_model_len: int,
) -> GenerationRequest:
    """Validate and tokenize one request body (a decoded JSON object)."""
    model, lora = _resolve_model(payload, served_models, loras)
    n = _int_field(payload, "n", 1)
    if n is not None and n != 1:
        raise ApiError(400, "n > 1 is not supported by the simulator", param="n")
    tokens = prompt_of(kind, payload, tokenizer)
    n_prompt = len(tokens)
    if kind == "chat":
        max_tokens = _int_field(payload, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = _int_field(payload, "max_tokens", 1)
    else:
        max_tokens = _int_field(payload, "max_tokens", 1)
        if max_tokens is None:
            max_tokens = 16
    if max_tokens is None:
        if n_prompt >= max_model_len:
            raise ApiError(400, f"This model's maximum context length is {max_model_len} tokens. However, your "
                           f"request has {n_prompt} input tokens. Please reduce the length of the input messages.",
                           param="messages" if kind == "chat" else "prompt")
        max_tokens = max_model_len - n_prompt
    elif n_prompt + max_tokens > max_model_len:
        raise ApiError(400, f"This model's maximum context length is {max_model_len} tokens. However, you "
                       f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the messages, {max_tokens} in the "
                       "completion). Please reduce the length of the messages or completion.",
                       param="max_tokens")
    min_tokens = _int_field(payload, "min_tokens", 0) or 0
    if min_tokens > max_tokens:
        raise ApiError(400, f"min_tokens ({min_tokens}) must be <= max_tokens ({max_tokens})", param="min_tokens")
    stream = _bool_field(payload, "stream", False)
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    if options and not stream:
        raise ApiError(400, "stream_options can only be set when stream is true", param="stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    kvp = payload.get("kv_transfer_params")
    if kvp is not None and not isinstance(kvp, dict):
        raise ApiError(400, "'kv_transfer_params' must be an object", param="kv_transfer_params")
    salt = payload.get("cache_salt")
    if salt is not None and (not isinstance(salt, str) or not salt):
        raise ApiError(400, "'cache_salt' must be a non-empty string", param="cache_salt")
    return GenerationRequest(
        kind=kind,
        model=model,
        lora=lora,
        prompt_token_ids=tokens,
        max_tokens=max_tokens,
        ignore_eos=_bool_field(payload, "ignore_eos", False),
        min_tokens=min_tokens,
        stream=stream,
        include_usage=include_usage,
        kv_transfer_params=kvp,
        cache_salt=salt,
    )
