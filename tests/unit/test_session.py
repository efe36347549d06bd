"""The ext_proc stream state machine, driven message by message for every order Envoy can send."""

from __future__ import annotations

import itertools

import orjson
import pytest

from extproc.constants import BODY_BYTE_LIMIT
from extproc.session import ProtocolError, Session
from tests.unit.conftest import Picker
from tests.unit.extproc_messages import (
    BUFFERED,
    FDS,
    NONE,
    STREAMED,
    destination_of,
    request_body,
    request_headers,
    request_trailers,
    response_body,
    response_headers,
    response_trailers,
)

COMPLETION = orjson.dumps({"model": "m", "prompt": "hello world", "max_tokens": 4})
CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})


def new_session(picker: Picker, max_body: int = 1 << 20) -> Session:
    return Session(picker.director, max_body_bytes=max_body)


def kinds(answers) -> list[str]:
    return [a.WhichOneof("response") for a in answers]


def streamed_body(answers, *, request: bool = True) -> tuple[bytes, list[bool]]:
    field = "request_body" if request else "response_body"
    pieces = [getattr(a, field).response.body_mutation.streamed_response for a in answers
              if a.WhichOneof("response") == field]
    return b"".join(p.body for p in pieces), [p.end_of_stream for p in pieces]


def status_of(answer) -> tuple[int, dict]:
    ir = answer.immediate_response
    return ir.status.code, orjson.loads(ir.body)


# --- FULL_DUPLEX_STREAMED ---------------------------------------------------------------------------------

async def test_fds_routes_after_the_last_chunk_and_echoes_the_body(picker: Picker) -> None:
    s = new_session(picker)
    assert await s.handle(request_headers()) == ()
    assert await s.handle(request_body(COMPLETION[:10], end_of_stream=False)) == ()
    assert await s.handle(request_body(COMPLETION[10:20], end_of_stream=False)) == ()
    answers = await s.handle(request_body(COMPLETION[20:], end_of_stream=True))
    assert kinds(answers) == ["request_headers", "request_body"]
    header, metadata = destination_of(answers[0])
    assert header == metadata
    primary, *fallbacks = header.split(",")
    assert primary in {ep.key for ep in picker.datastore.endpoints()}
    assert len(fallbacks) == 2 and primary not in fallbacks
    body, eos = streamed_body(answers)
    assert body == COMPLETION and eos == [True]
    assert picker.inflight.requests(primary) == 1


async def test_fds_rechunks_large_bodies_below_the_limit(picker: Picker) -> None:
    prompt = "x" * 200_000
    raw = orjson.dumps({"model": "m", "prompt": prompt})
    s = new_session(picker)
    await s.handle(request_headers())
    answers = await s.handle(request_body(raw, end_of_stream=True))
    pieces = [a.request_body.response.body_mutation.streamed_response for a in answers[1:]]
    assert all(len(p.body) <= BODY_BYTE_LIMIT for p in pieces)
    assert len(pieces) == -(-len(raw) // BODY_BYTE_LIMIT)
    assert [p.end_of_stream for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert b"".join(p.body for p in pieces) == raw


async def test_fds_trailers_end_the_body_and_are_answered_last(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers())
    assert await s.handle(request_body(COMPLETION, end_of_stream=False)) == ()
    answers = await s.handle(request_trailers())
    assert kinds(answers) == ["request_headers", "request_body", "request_trailers"]
    body, eos = streamed_body(answers)
    assert body == COMPLETION and eos == [False]


async def test_fds_empty_body_is_a_bad_request(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers())
    answers = await s.handle(request_body(b"", end_of_stream=True))
    code, body = status_of(answers[0])
    assert code == 400 and "empty" in body["error"]["message"]


async def test_without_protocol_config_the_session_assumes_full_duplex(picker: Picker) -> None:
    s = new_session(picker)
    assert await s.handle(request_headers(mode=None)) == ()
    answers = await s.handle(request_body(COMPLETION))
    assert kinds(answers) == ["request_headers", "request_body"]


# --- BUFFERED ---------------------------------------------------------------------------------------------

async def test_buffered_answers_headers_at_once_and_routes_in_the_body_response(picker: Picker) -> None:
    s = new_session(picker)
    answers = await s.handle(request_headers(mode=BUFFERED))
    assert kinds(answers) == ["request_headers"]
    assert not answers[0].request_headers.response.header_mutation.set_headers
    answers = await s.handle(request_body(COMPLETION, end_of_stream=True))
    assert kinds(answers) == ["request_body"]
    header, metadata = destination_of(answers[0])
    assert header == metadata
    assert not answers[0].request_body.response.HasField("body_mutation")


async def test_buffered_trailers_get_their_own_answer(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers(mode=BUFFERED))
    await s.handle(request_body(COMPLETION, end_of_stream=True))
    assert kinds(await s.handle(request_trailers())) == ["request_trailers"]


# --- header-only, NONE, unsupported modes -----------------------------------------------------------------

@pytest.mark.parametrize("mode", [FDS, BUFFERED, NONE])
async def test_header_only_requests_are_routed_on_the_headers(picker: Picker, mode: int) -> None:
    s = new_session(picker)
    answers = await s.handle(request_headers("/v1/models", mode=mode, end_of_stream=True))
    assert kinds(answers) == ["request_headers"]
    header, _ = destination_of(answers[0])
    assert "," not in header  # random pick, no fallbacks, like the reference EPP


async def test_body_mode_none_routes_on_the_headers_even_without_end_of_stream(picker: Picker) -> None:
    s = new_session(picker)
    answers = await s.handle(request_headers(mode=NONE))
    assert kinds(answers) == ["request_headers"]
    destination_of(answers[0])


async def test_unsupported_body_mode_is_a_protocol_error(picker: Picker) -> None:
    s = new_session(picker)
    with pytest.raises(ProtocolError, match="STREAMED"):
        await s.handle(request_headers(mode=STREAMED))


async def test_body_before_headers_is_a_protocol_error(picker: Picker) -> None:
    s = new_session(picker)
    with pytest.raises(ProtocolError):
        await s.handle(request_body(COMPLETION))


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "body", "fragment"), [
    ("/v1/completions", b"{not json", "not valid JSON"),
    ("/v1/completions", b"[1,2]", "JSON object"),
    ("/v1/completions", b'{"prompt": "hi"}', "model not found"),
    ("/v1/completions", b'{"model": "m"}', "'prompt'"),
    ("/v1/chat/completions", b'{"model": "m", "messages": []}', "at least one message"),
    ("/v1/embeddings", b'{"model": "m"}', "'input'"),
    ("/v1/responses", b'{"model": "m"}', "'input'"),
])
@pytest.mark.parametrize("mode", [FDS, BUFFERED])
async def test_bad_bodies_get_400_with_a_json_error(picker: Picker, path: str, body: bytes, fragment: str,
                                                   mode: int) -> None:
    s = new_session(picker)
    await s.handle(request_headers(path, mode=mode))
    answers = await s.handle(request_body(body))
    code, error = status_of(answers[0])
    assert code == 400
    assert fragment in error["error"]["message"]
    assert answers[0].immediate_response.details == "epp_BadRequest"
    # After the immediate response every further message is ignored, and nothing leaked.
    assert await s.handle(response_headers()) == ()
    assert picker.inflight.total_requests() == 0
    assert picker.metric("inference_objective_request_error_total", {
        "model_name": "", "target_model_name": "", "error_code": "BadRequest"}) == 1


async def test_oversized_body_gets_413_without_buffering_the_rest(picker: Picker) -> None:
    s = new_session(picker, max_body=100)
    await s.handle(request_headers())
    answers = await s.handle(request_body(b"x" * 101, end_of_stream=False))
    assert status_of(answers[0])[0] == 413
    assert await s.handle(request_body(b"x" * 10, end_of_stream=True)) == ()


async def test_empty_pool_gets_503() -> None:
    picker = Picker(endpoints=())
    s = new_session(picker)
    await s.handle(request_headers())
    code, _ = status_of((await s.handle(request_body(COMPLETION)))[0])
    assert code == 503


async def test_header_only_request_with_empty_pool_gets_503() -> None:
    s = new_session(Picker(endpoints=()))
    code, _ = status_of((await s.handle(request_headers(end_of_stream=True)))[0])
    assert code == 503


# --- subset hint ------------------------------------------------------------------------------------------

async def test_subset_hint_limits_candidates_by_ip(picker: Picker) -> None:
    for _ in range(20):
        s = new_session(picker)
        await s.handle(request_headers(subset=["10.0.0.3:9999"]))
        header, _ = destination_of((await s.handle(request_body(COMPLETION)))[0])
        assert {key.rsplit(":", 1)[0] for key in header.split(",")} == {"10.0.0.3"}
        s.close()


@pytest.mark.parametrize("subset", [[], ["192.168.9.9:8000"]])
async def test_empty_or_unmatched_subset_hint_gets_503(picker: Picker, subset: list[str]) -> None:
    s = new_session(picker)
    await s.handle(request_headers(subset=subset))
    assert status_of((await s.handle(request_body(COMPLETION)))[0])[0] == 503


async def test_subset_filter_can_be_disabled() -> None:
    picker = Picker()
    picker.director._honour_subset_hint = False
    s = new_session(picker)
    await s.handle(request_headers(subset=[]))
    destination_of((await s.handle(request_body(COMPLETION)))[0])


# --- the client never chooses the destination -------------------------------------------------------------

async def test_client_supplied_destination_headers_do_not_decide_the_route(picker: Picker) -> None:
    forged = {"x-gateway-destination-endpoint": "6.6.6.6:80",
              "x-gateway-destination-endpoint-subset": "6.6.6.6:80",
              "x-gateway-destination-endpoint-served": "6.6.6.6:80"}
    for mode in (FDS, BUFFERED):
        s = new_session(picker)
        await s.handle(request_headers(mode=mode, extra=forged))
        answers = await s.handle(request_body(COMPLETION))
        route = answers[0]
        header, _ = destination_of(route)
        assert "6.6.6.6" not in header
        kind = route.WhichOneof("response")
        option = getattr(route, kind).response.header_mutation.set_headers[0]
        assert option.append_action == option.OVERWRITE_IF_EXISTS_OR_ADD
        s.close()


# --- response path ----------------------------------------------------------------------------------------

def sse(*events: dict) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


async def test_sse_response_is_echoed_byte_identical_and_usage_is_read(picker: Picker) -> None:
    ticks = itertools.count()
    s = Session(picker.director, max_body_bytes=1 << 20, clock=lambda: 1.0 + next(ticks) / 100)
    await s.handle(request_headers("/v1/chat/completions"))
    await s.handle(request_body(CHAT))
    primary = s.routed.lease.key
    assert kinds(await s.handle(response_headers(content_type="text/event-stream"))) == ["response_headers"]
    stream = sse({"choices": [{"delta": {"content": "a"}}], "usage": None},
                 {"choices": [{"delta": {"content": "b"}}]},
                 {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2,
                                           "prompt_tokens_details": {"cached_tokens": 4}}})
    echoed = []
    for i in range(0, len(stream), 13):  # arbitrary chunk boundaries, mid-line
        piece = stream[i : i + 13]
        assert picker.inflight.requests(primary) == 1
        echoed.extend(await s.handle(response_body(piece, end_of_stream=i + 13 >= len(stream))))
    body, eos = streamed_body(echoed, request=False)
    assert body == stream and eos[-1] is True and not any(eos[:-1])
    assert picker.inflight.requests(primary) == 0
    labels = {"model_name": "m", "target_model_name": "m"}
    assert picker.metric("inference_objective_input_tokens_sum", labels) == 7
    assert picker.metric("inference_objective_output_tokens_sum", labels) == 2
    assert picker.metric("inference_objective_prompt_cached_tokens_sum", labels) == 4
    assert picker.metric("inference_objective_request_tpot_seconds_count", labels) == 1
    s.close()
    assert picker.metric("inference_objective_request_error_total",
                         {**labels, "error_code": "Unknown"}) == 0


async def test_json_response_in_buffered_mode_completes_on_end_of_stream(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers(mode=BUFFERED, response_mode=BUFFERED))
    await s.handle(request_body(COMPLETION))
    await s.handle(response_headers())
    body = orjson.dumps({"object": "text_completion", "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    answers = await s.handle(response_body(body, end_of_stream=True))
    assert kinds(answers) == ["response_body"]
    assert not answers[0].response_body.response.HasField("body_mutation")
    assert picker.inflight.total_requests() == 0
    assert picker.metric("inference_objective_output_tokens_sum", {"model_name": "m", "target_model_name": "m"}) == 4


async def test_response_trailers_finish_the_request(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers())
    await s.handle(request_body(COMPLETION))
    await s.handle(response_headers())
    await s.handle(response_body(b"{}", end_of_stream=False))
    assert picker.inflight.total_requests() == 1
    assert kinds(await s.handle(response_trailers())) == ["response_trailers"]
    assert picker.inflight.total_requests() == 0


async def test_response_body_mode_none_finishes_on_response_headers(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers(mode=BUFFERED, response_mode=NONE))
    await s.handle(request_body(COMPLETION))
    await s.handle(response_headers())
    assert picker.inflight.total_requests() == 0


async def test_served_endpoint_moves_the_in_flight_count(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers())
    await s.handle(request_body(COMPLETION))
    primary = s.routed.lease.key
    fallback = s.routed.result.fallbacks[0].key
    await s.handle(response_headers(served=fallback))
    assert picker.inflight.requests(primary) == 0
    assert picker.inflight.requests(fallback) == 1
    await s.handle(response_body(b"{}", end_of_stream=True))
    assert picker.inflight.total_requests() == 0


# --- resets -----------------------------------------------------------------------------------------------

async def test_reset_mid_body_leaks_nothing(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers())
    await s.handle(request_body(COMPLETION[:5], end_of_stream=False))
    s.close()
    assert picker.inflight.total_requests() == 0


async def test_reset_after_routing_releases_the_in_flight_count(picker: Picker) -> None:
    s = new_session(picker)
    await s.handle(request_headers("/v1/chat/completions"))
    await s.handle(request_body(CHAT))
    await s.handle(response_headers(content_type="text/event-stream"))
    await s.handle(response_body(b"data: {}\n\n", end_of_stream=False))
    assert picker.inflight.total_requests() == 1
    s.close()
    s.close()  # idempotent
    assert picker.inflight.total_requests() == 0
    assert picker.metric("inference_objective_running_requests", {"model_name": "m"}) == 0
    assert picker.metric("inference_objective_request_error_total",
                         {"model_name": "m", "target_model_name": "m", "error_code": "Unknown"}) == 1


async def test_least_in_flight_spreads_concurrent_requests(picker: Picker) -> None:
    sessions = []
    for _ in range(8):
        s = new_session(picker)
        await s.handle(request_headers())
        await s.handle(request_body(COMPLETION))
        sessions.append(s)
    assert sorted(picker.inflight.snapshot()[k][0] for k in picker.inflight.snapshot()) == [2, 2, 2, 2]
    for s in sessions:
        s.close()
    assert picker.inflight.total_requests() == 0


async def test_clean_close_after_routing_counts_as_served_not_aborted(picker: Picker) -> None:
    # A gateway that skips response processing half-closes the stream once the request is routed.
    s = new_session(picker)
    await s.handle(request_headers(mode=BUFFERED, response_mode=NONE))
    await s.handle(request_body(COMPLETION))
    s.close(clean=True)
    assert picker.inflight.total_requests() == 0
    labels = {"model_name": "m", "target_model_name": "m"}
    assert picker.metric("inference_objective_request_error_total", {**labels, "error_code": "Unknown"}) == 0
    assert picker.metric("inference_objective_request_duration_seconds_count", labels) == 1


async def test_endpoint_scores_are_emitted_as_metadata_when_asked() -> None:
    picker = Picker(emit_endpoint_scores=True)
    s = new_session(picker)
    await s.handle(request_headers())
    route = (await s.handle(request_body(COMPLETION)))[0]
    fields = route.dynamic_metadata.fields["envoy.lb"].struct_value.fields
    scores = orjson.loads(fields["x-gateway-destination-endpoint-scores"].string_value)
    assert set(scores) == {ep.key for ep in picker.datastore.endpoints()}
    assert picker.decisions.get("req-1") is not None
    plain = Picker()
    s = new_session(plain)
    await s.handle(request_headers())
    route = (await s.handle(request_body(COMPLETION)))[0]
    assert "x-gateway-destination-endpoint-scores" not in route.dynamic_metadata.fields["envoy.lb"].struct_value.fields


def test_pool_gauges_average_fresh_metrics_only(picker: Picker) -> None:
    import time

    from endpoint_picker.datalayer import EndpointMetrics

    a, b, c, _ = picker.datastore.endpoints()
    now = time.monotonic()
    picker.store.put(a.key, EndpointMetrics(scraped_at=now, waiting_queue_size=2, kv_cache_usage=0.2,
                                            running_requests=4))
    picker.store.put(b.key, EndpointMetrics(scraped_at=now, waiting_queue_size=4, kv_cache_usage=0.6,
                                            running_requests=8))
    picker.store.put(c.key, EndpointMetrics(scraped_at=now - 60, waiting_queue_size=100, kv_cache_usage=1.0))
    pool = {"name": picker.datastore.pool.name}
    assert picker.metric("inference_pool_average_queue_size", pool) == 3
    assert picker.metric("inference_pool_average_kv_cache_utilization", pool) == pytest.approx(0.4)
    assert picker.metric("inference_pool_average_running_requests", pool) == 6
    assert picker.metric("inference_pool_per_pod_queue_size", {**pool, "model_server_pod": a.name}) == 2
    assert picker.metric("inference_pool_ready_pods", pool) == 4
