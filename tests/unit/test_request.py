"""Parsing OpenAI request bodies into the request model."""

from __future__ import annotations

import pytest

from endpoint_picker.errors import BadRequest
from endpoint_picker.request import ApiType, api_type_for_path, attach_body, new_request


@pytest.mark.parametrize(("path", "api"), [
    ("/v1/chat/completions", ApiType.CHAT_COMPLETIONS),
    ("/v1/completions?x=1", ApiType.COMPLETIONS),
    ("/v1/embeddings", ApiType.EMBEDDINGS),
    ("/v1/responses", ApiType.RESPONSES),
    ("/v1/conversations", ApiType.CONVERSATIONS),
    ("/v1/projects/p/locations/l/endpoints/openapi/chat/completions", ApiType.CHAT_COMPLETIONS),
    ("/generate", ApiType.COMPLETIONS),
])
def test_api_from_path(path: str, api: ApiType) -> None:
    assert api_type_for_path(path) is api


def test_request_id_is_generated_when_absent() -> None:
    r = new_request("/v1/completions", {}, None)
    assert r.generated_request_id and len(r.request_id) == 36
    r = new_request("/v1/completions", {"x-request-id": "abc", "x-gateway-inference-objective": "chat"}, None)
    assert r.request_id == "abc" and not r.generated_request_id and r.objective == "chat"
    assert r.fairness_id == "default-flow"


def test_stream_flag_and_model() -> None:
    r = new_request("/v1/chat/completions", {}, None)
    attach_body(r, b'{"model": "llama", "messages": [{"role": "user", "content": "x"}], "stream": true}')
    assert r.model == "llama" and r.stream and r.api is ApiType.CHAT_COMPLETIONS


def test_prompt_as_token_ids_is_accepted() -> None:
    r = new_request("/v1/completions", {}, None)
    attach_body(r, b'{"model": "m", "prompt": [1, 2, 3]}')
    assert r.body == {"model": "m", "prompt": [1, 2, 3]}


@pytest.mark.parametrize("body", [b'{"model": 5, "prompt": "x"}', b'{"model": "", "prompt": "x"}',
                                  b'{"model": "m", "prompt": ""}', b"\xff\xfe", b"null"])
def test_invalid(body: bytes) -> None:
    with pytest.raises(BadRequest):
        attach_body(new_request("/v1/completions", {}, None), body)
