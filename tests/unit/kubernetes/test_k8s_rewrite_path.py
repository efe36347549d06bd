"""Objectives and model rewrites on the request path: the director sets priority and rewrites the body's model,
the session re-emits the rewritten bytes (FDS chunks; BUFFERED body mutation with content-length), and the
response gets the client's model name back, also when the name is split across chunks."""

from __future__ import annotations

import random

import orjson
import pytest

from endpoint_picker.director import Director
from endpoint_picker.model_rewrite import ModelRewrite, ModelRewrites, RewriteRule, RewriteTarget
from endpoint_picker.objectives import Objective, Objectives
from endpoint_picker.request import attach_body, new_request
from extproc.model_name_restore import ModelNameRestorer
from extproc.session import Session
from tests.unit.conftest import Picker
from tests.unit.extproc_messages import (
    BUFFERED,
    FDS,
    request_body,
    request_headers,
    response_body,
    response_headers,
    response_trailers,
)

BODY = orjson.dumps({"model": "llama", "prompt": "hello", "max_tokens": 4})


def rewriting_picker(target: str = "llama-lora-v2") -> tuple[Picker, Director]:
    picker = Picker()
    objectives = Objectives()
    objectives.replace([Objective("premium", 7)])
    rewrites = ModelRewrites()
    rewrites.replace([ModelRewrite("canary", "t", (RewriteRule(("llama",), (RewriteTarget(target),)),))])
    director = Director(picker.datastore, picker.scheduler, picker.inflight, picker.metrics, objectives=objectives,
                        rewrites=rewrites, rng=random.Random(1))
    return picker, director


async def test_director_sets_priority_and_rewrites_model() -> None:
    picker, director = rewriting_picker()
    request = new_request("/v1/completions", {"x-gateway-inference-objective": "premium"}, None)
    attach_body(request, BODY)
    routed = await director.route(request)
    assert request.priority == 7
    assert request.model == "llama" and request.served_model == "llama-lora-v2"
    assert orjson.loads(request.rewritten_body or b"")["model"] == "llama-lora-v2"
    assert picker.metric("inference_extension_model_rewrite_decisions_total", {
        "model_rewrite_name": "canary", "model_name": "llama", "target_model": "llama-lora-v2"}) == 1
    assert picker.metric("inference_objective_request_total", {
        "model_name": "llama", "target_model_name": "llama-lora-v2", "priority": "0"}) == 1
    routed.abort("test")


async def test_header_forces_the_target_and_no_rule_means_no_rewrite() -> None:
    _, director = rewriting_picker()
    forced = new_request("/v1/completions", {"x-gateway-model-name-rewrite": "pinned"}, None)
    attach_body(forced, BODY)
    (await director.route(forced)).abort("test")
    assert forced.served_model == "pinned"
    other = new_request("/v1/completions", {}, None)
    attach_body(other, orjson.dumps({"model": "mistral", "prompt": "x"}))
    (await director.route(other)).abort("test")
    assert other.rewritten_body is None and other.served_model == "mistral" and other.priority == 0


async def test_fds_sends_the_rewritten_body_and_restores_the_response_model() -> None:
    _, director = rewriting_picker()
    s = Session(director, max_body_bytes=1 << 20)
    await s.handle(request_headers(mode=FDS))
    answers = await s.handle(request_body(BODY))
    sent = b"".join(a.request_body.response.body_mutation.streamed_response.body for a in answers
                    if a.WhichOneof("response") == "request_body")
    assert orjson.loads(sent)["model"] == "llama-lora-v2"

    await s.handle(response_headers(content_type="text/event-stream"))
    stream = (b'data: {"id":"1","model":"llama-lora-v2","choices":[{"text":"a"}]}\n\n'
              b'data: {"id":"1","model": "llama-lora-v2","choices":[{"text":"llama-lora-v2"}]}\n\n'
              b"data: [DONE]\n\n")
    out = b""
    for i in range(0, len(stream), 7):  # seven-byte chunks split the name everywhere
        piece = stream[i : i + 7]
        last = i + 7 >= len(stream)
        for a in await s.handle(response_body(piece, end_of_stream=last)):
            out += a.response_body.response.body_mutation.streamed_response.body
    assert out == stream.replace(b'"model":"llama-lora-v2"', b'"model":"llama"').replace(
        b'"model": "llama-lora-v2"', b'"model": "llama"')
    assert b'"text":"llama-lora-v2"' in out  # generated text is not a "model" member: untouched


async def test_fds_response_trailers_flush_held_back_bytes() -> None:
    _, director = rewriting_picker()
    s = Session(director, max_body_bytes=1 << 20)
    await s.handle(request_headers(mode=FDS))
    await s.handle(request_body(BODY))
    await s.handle(response_headers())
    first = await s.handle(response_body(b'{"model":"llama-lora-v2","x":1}', end_of_stream=False))
    rest = await s.handle(response_trailers())
    body = b"".join(a.response_body.response.body_mutation.streamed_response.body for a in [*first, *rest]
                    if a.WhichOneof("response") == "response_body")
    assert body == b'{"model":"llama","x":1}'
    assert rest[-1].WhichOneof("response") == "response_trailers"


async def test_buffered_mutates_the_body_with_a_matching_content_length() -> None:
    _, director = rewriting_picker()
    s = Session(director, max_body_bytes=1 << 20)
    await s.handle(request_headers(mode=BUFFERED, response_mode=BUFFERED))
    (answer,) = await s.handle(request_body(BODY))
    common = answer.request_body.response
    new_body = common.body_mutation.body
    assert orjson.loads(new_body)["model"] == "llama-lora-v2"
    headers = {o.header.key: o.header.raw_value.decode() for o in common.header_mutation.set_headers}
    assert headers["content-length"] == str(len(new_body))
    assert "x-gateway-destination-endpoint" in headers

    await s.handle(response_headers())
    (resp,) = await s.handle(response_body(b'{"model":"llama-lora-v2","choices":[]}', end_of_stream=True))
    mutated = resp.response_body.response
    assert mutated.body_mutation.body == b'{"model":"llama","choices":[]}'
    assert {o.header.key: o.header.raw_value for o in mutated.header_mutation.set_headers} == {
        "content-length": str(len(b'{"model":"llama","choices":[]}')).encode()}


async def test_buffered_without_rewrite_sends_no_body_mutation(picker: Picker) -> None:
    s = Session(picker.director, max_body_bytes=1 << 20)
    await s.handle(request_headers(mode=BUFFERED))
    (answer,) = await s.handle(request_body(BODY))
    assert not answer.request_body.response.HasField("body_mutation")


@pytest.mark.parametrize("chunk", [1, 3, 16, 1000])
def test_restorer_every_split(chunk: int) -> None:
    text = b'{"a":"llama-v2","model" : "llama-v2","m":{"model":"llama-v2"}}' * 3
    r = ModelNameRestorer("llama-v2", "llama")
    out = b"".join(r.feed(text[i : i + chunk], i + chunk >= len(text)) for i in range(0, len(text), chunk))
    assert out == text.replace(b'"model" : "llama-v2"', b'"model" : "llama"').replace(
        b'"model":"llama-v2"', b'"model":"llama"')
    assert r.replaced == 6


def test_restorer_escapes_names() -> None:
    r = ModelNameRestorer('we"ird', "plain")
    assert r.feed(b'{"model":"we\\"ird"}', True) == b'{"model":"plain"}'
