"""Usage and token timing read from JSON and SSE responses."""

from __future__ import annotations

import orjson
import pytest

from extproc.response_observer import ResponseObserver, usage_from_object


@pytest.mark.parametrize(("obj", "expected"), [
    ({"object": "chat.completion", "usage": {"prompt_tokens": 5, "completion_tokens": 6,
                                             "prompt_tokens_details": {"cached_tokens": 2}}}, (5, 6, 2)),
    ({"usage": {"prompt_tokens": 5, "completion_tokens": 6, "prompt_token_details": {"cached_tokens": 3}}},
     (5, 6, 3)),
    ({"object": "response", "usage": {"input_tokens": 9, "output_tokens": 1,
                                      "input_tokens_details": {"cached_tokens": 8}}}, (9, 1, 8)),
    ({"type": "response.completed", "response": {"usage": {"input_tokens": 4, "output_tokens": 2}}}, (4, 2, None)),
])
def test_usage_shapes(obj: dict, expected: tuple) -> None:
    usage = usage_from_object(obj)
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == expected


@pytest.mark.parametrize("obj", [{}, {"usage": None}, {"usage": {"prompt_tokens": "x"}}, [1], "s"])
def test_no_usage(obj: object) -> None:
    assert usage_from_object(obj) is None


def test_sse_with_crlf_and_split_lines_counts_tokens_and_reads_usage() -> None:
    events = [{"choices": [{"text": t}]} for t in "abc"]
    events.append({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 3}})
    stream = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events) + b"data: [DONE]\r\n\r\n"
    obs = ResponseObserver(streaming=True)
    for i, byte in enumerate(stream):
        obs.feed(bytes([byte]), now=float(i))
    summary = obs.summary()
    assert summary.usage is not None and summary.usage.completion_tokens == 3
    assert summary.stream_events == 3
    assert summary.first_token_at is not None and summary.last_token_at is not None
    assert summary.first_token_at < summary.last_token_at
    assert summary.response_bytes == len(stream)


def test_sse_without_usage_still_counts_events() -> None:
    obs = ResponseObserver(streaming=True)
    obs.feed(b'data: {"choices":[{"text":"a"}]}\n\ndata: {"choices":[{"text":"b"}]}\n\ndata: [DONE]\n\n', 1.0)
    summary = obs.summary()
    assert summary.usage is None and summary.stream_events == 2


def test_json_is_parsed_once_at_the_end() -> None:
    body = orjson.dumps({"usage": {"prompt_tokens": 2, "completion_tokens": 5}})
    obs = ResponseObserver(streaming=False)
    obs.feed(body[:7], 1.0)
    obs.feed(body[7:], 2.0)
    summary = obs.summary()
    assert summary.usage is not None and summary.usage.completion_tokens == 5
    assert summary.first_token_at == 1.0


def test_garbage_responses_do_not_raise() -> None:
    for streaming in (True, False):
        obs = ResponseObserver(streaming=streaming)
        obs.feed(b'data: {"usage": {broken\n\n\xff\xfe', 1.0)
        assert obs.summary().usage is None
