"""Decision records and picker state -> endpoint_picker.v1 messages, and their human-readable rendering."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from endpoint_picker.datalayer.model import EndpointMetrics
from endpoint_picker.datastore import Endpoint, PoolSettings
from endpoint_picker.decisions import DecisionRecord, ProfileDecision
from endpoint_picker.scheduling.prefix_index import ApproxPrefixIndex
from picker_api.convert import (
    StateInputs,
    decision_to_proto,
    outcome_of,
    prefix_indexes_of,
    state_to_proto,
    to_json_dict,
)
from picker_api.render import render_decision, render_decision_line, render_state
from picker_api.stubs import picker_pb2 as pb

A, B, C, D = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "[fd00::4]:8000"


def record() -> DecisionRecord:
    profile = ProfileDecision(
        name="default",
        candidates=[A, B, C, D],
        filtered=[("by-label", [D])],
        scored=[A, B, C],
        scores=[("queue-scorer", 2.0, [1.0, 0.5, 0.0]), ("prefix-cache-scorer", 3.0, [0.0, 1.0, 0.25])],
        totals=[2.0, 4.0, 0.75],
        picked=[B, A],
    )
    return DecisionRecord(
        request_id="req-7", model="llama", priority=0, candidates=[A, B, C, D], at=1_700_000_000.25,
        profiles=[profile], primary_profile="default", pick=B, fallbacks=[A], saturation=0.4,
        timings_us={"producers": 12.5, "default/by-label": 1.0, "default/queue-scorer": 2.0, "total": 40.0},
    )


def test_decision_mirrors_the_record() -> None:
    msg = decision_to_proto(record())
    assert (msg.request_id, msg.model, msg.priority) == ("req-7", "llama", 0)
    assert list(msg.candidates) == [A, B, C, D]
    assert msg.time.ToNanoseconds() == 1_700_000_000_250_000_000
    assert msg.HasField("saturation") and msg.saturation == pytest.approx(0.4)
    assert (msg.primary_profile, msg.pick, list(msg.fallbacks)) == ("default", B, [A])
    assert msg.outcome == pb.OUTCOME_SCHEDULED and msg.outcome_detail == ""
    assert [(t.stage, t.microseconds) for t in msg.timings] == [
        ("producers", 12.5), ("default/by-label", 1.0), ("default/queue-scorer", 2.0), ("total", 40.0)]

    (p,) = msg.profiles
    assert p.name == "default" and list(p.candidates) == [A, B, C, D]
    assert [(f.filter, list(f.removed_endpoints)) for f in p.filters] == [("by-label", [D])]
    assert list(p.scored_endpoints) == [A, B, C]
    queue, prefix = p.scorers
    assert (queue.scorer, queue.weight) == ("queue-scorer", 2.0)
    assert [(s.endpoint, s.raw, s.weighted) for s in queue.scores] == [(A, 1.0, 2.0), (B, 0.5, 1.0), (C, 0.0, 0.0)]
    assert [(s.endpoint, s.raw, s.weighted) for s in prefix.scores] == [(A, 0.0, 0.0), (B, 1.0, 3.0), (C, 0.25, 0.75)]
    assert [(t.endpoint, t.total) for t in p.totals] == [(A, 2.0), (B, 4.0), (C, 0.75)]
    # The weighted scores add up to the totals the scheduler summed.
    for i, total in enumerate(p.totals):
        assert sum(s.scores[i].weighted for s in p.scorers) == pytest.approx(total.total)
    assert list(p.picked) == [B, A]


def test_decision_matches_the_json_of_debug_decisions() -> None:
    rec = record()
    data = to_json_dict(decision_to_proto(rec))
    legacy = rec.to_dict()
    assert data["requestId"] == legacy["requestId"] and data["pick"] == legacy["pick"]
    (profile,) = data["profiles"]
    (legacy_profile,) = legacy["profiles"]
    for scorer, legacy_scorer in zip(profile["scorers"], legacy_profile["scorers"], strict=True):
        assert {s["endpoint"]: s["raw"] for s in scorer["scores"]} == legacy_scorer["raw"]
        assert {s["endpoint"]: s["weighted"] for s in scorer["scores"]} == legacy_scorer["weighted"]
    assert {t["endpoint"]: t["total"] for t in profile["totals"]} == legacy_profile["totals"]


def test_rejected_record_has_no_pick_and_keeps_the_reason() -> None:
    rec = DecisionRecord("req-8", "m", -1, [A], saturation=1.0, outcome="rejected: system saturated, "
                         "sheddable request dropped")
    msg = decision_to_proto(rec)
    assert msg.outcome == pb.OUTCOME_REJECTED
    assert msg.outcome_detail == "system saturated, sheddable request dropped"
    assert (msg.pick, msg.primary_profile, list(msg.fallbacks), list(msg.profiles)) == ("", "", [], [])
    assert msg.priority == -1
    assert "rejected: system saturated" in render_decision(msg)
    assert "rejected: system saturated" in render_decision_line(msg)


def test_unknown_outcome_and_absent_saturation() -> None:
    assert outcome_of("scheduled") == (pb.OUTCOME_SCHEDULED, "")
    assert outcome_of("rejected") == (pb.OUTCOME_REJECTED, "")
    assert outcome_of("something new") == (pb.OUTCOME_UNSPECIFIED, "something new")
    msg = decision_to_proto(DecisionRecord("r", "m", 0, []))
    assert not msg.HasField("saturation")


def test_render_decision_shows_filters_scores_totals_and_pick() -> None:
    text = render_decision(decision_to_proto(record()))
    assert "request     req-7" in text
    assert "pick        10.0.0.2:8000" in text
    assert f"by-label  1: {D}" in text
    assert "queue-scorer x2" in text and "prefix-cache-scorer x3" in text
    rows = [line for line in text.splitlines() if line.startswith("    10.0.0.")]
    # Rows are ordered by total, the pick first, marked; raw -> weighted per scorer.
    assert rows[0].startswith(f"    {B}") and rows[0].endswith("4.000  pick")
    assert "0.500 -> 1.000" in rows[0] and "1.000 -> 3.000" in rows[0]
    assert rows[1].startswith(f"    {A}") and rows[1].endswith("fallback 1")
    assert rows[2].startswith(f"    {C}") and rows[2].rstrip().endswith("0.750")
    assert "total" in text.split("timings (microseconds)")[1]


def _metrics(scraped_at: float, **fields: object) -> EndpointMetrics:
    return EndpointMetrics(scraped_at=scraped_at, **fields)  # type: ignore[arg-type]


def test_state_lists_endpoints_with_metrics_in_flight_and_prefix_entries() -> None:
    eps = [Endpoint("ep-b", "10.0.0.2", 8000, {"role": "serve"}), Endpoint("ep-a", "10.0.0.1", 8000),
           Endpoint("ep-d", "fd00::4", 8000)]
    index = ApproxPrefixIndex()
    index.add(A, [1, 2, 3], capacity=100)
    index.add(B, [1], capacity=100)
    now = 500.0
    inputs = StateInputs(
        pool=PoolSettings("pool-x", "ns-y"),
        synced=True,
        endpoints=eps,
        metrics={A: _metrics(499.5, waiting_queue_size=3, running_requests=2, kv_cache_usage=0.25, block_size=16,
                             num_gpu_blocks=1000, active_models=frozenset({"lora-b", "lora-a"}),
                             max_active_models=4, prefix_cache_queries=10.0, prefix_cache_hits=4.0),
                 B: _metrics(490.0)},
        metrics_now=now,
        in_flight={A: (2, 300), "10.9.9.9:1": (1, 1)},  # an endpoint no longer in the pool is left out
        prefix_indexes={"approx-prefix-cache-producer": index},
        staleness_threshold=2.0,
        decisions_recorded=17,
        wall_time=1_700_000_000.0,
    )
    msg = state_to_proto(inputs)
    assert (msg.pool.name, msg.pool.namespace, msg.synced, msg.decisions_recorded) == ("pool-x", "ns-y", True, 17)
    assert msg.time.ToSeconds() == 1_700_000_000
    assert msg.staleness_threshold.ToMilliseconds() == 2000
    assert [(i.plugin, i.entries) for i in msg.prefix_indexes] == [("approx-prefix-cache-producer", 4)]
    a, b, d = msg.endpoints  # ordered by key
    assert (a.key, a.name, a.address, a.port, dict(a.labels)) == (A, "ep-a", "10.0.0.1", 8000, {})
    assert (a.in_flight.requests, a.in_flight.tokens, a.prefix_index_entries) == (2, 300, 3)
    m = a.metrics
    assert m.age.ToMilliseconds() == 500 and not m.stale
    assert (m.waiting_queue_size, m.running_requests, m.kv_cache_usage) == (3, 2, 0.25)
    assert (m.block_size, m.num_gpu_blocks, m.max_active_models) == (16, 1000, 4)
    assert list(m.active_models) == ["lora-a", "lora-b"] and list(m.waiting_models) == []
    assert (m.prefix_cache_queries, m.prefix_cache_hits) == (10.0, 4.0)
    assert dict(b.labels) == {"role": "serve"} and b.prefix_index_entries == 1
    assert b.metrics.stale and b.metrics.age.ToSeconds() == 10
    assert not b.metrics.HasField("block_size") and not b.metrics.HasField("num_gpu_blocks")
    assert d.key == "[fd00::4]:8000" and not d.HasField("metrics")
    assert (d.in_flight.requests, d.in_flight.tokens, d.prefix_index_entries) == (0, 0, 0)

    text = render_state(msg)
    assert "ns-y/pool-x" in text and "decisions recorded 17" in text
    assert "approx-prefix-cache-producer: 4 entries" in text
    row_a = next(line for line in text.splitlines() if line.startswith(A))
    assert row_a.split() == [A, "ep-a", "3", "2", "25.0%", "500ms", "2", "300", "3", "-"]
    row_b = next(line for line in text.splitlines() if line.startswith(B))
    assert "10.0s STALE" in row_b and "role=serve" in row_b
    assert "never scraped" in next(line for line in text.splitlines() if line.startswith("[fd00::4]"))


def test_zero_staleness_threshold_means_never_stale() -> None:
    inputs = StateInputs(pool=PoolSettings(), synced=False, endpoints=[Endpoint("ep", "10.0.0.1", 8000)],
                         metrics={A: _metrics(0.0)}, metrics_now=1e6, in_flight={}, prefix_indexes={},
                         staleness_threshold=0.0, decisions_recorded=0)
    msg = state_to_proto(inputs)
    assert not msg.endpoints[0].metrics.stale
    assert abs(msg.time.ToSeconds() - time.time()) < 60  # wall clock when not given
    assert "stale after never" in render_state(msg)


def test_prefix_indexes_are_found_on_producer_plugins() -> None:
    index = ApproxPrefixIndex()
    plugins = [SimpleNamespace(name="approx-prefix-cache-producer", index=index),
               SimpleNamespace(name="queue-scorer"), SimpleNamespace(name="odd", index=object())]
    assert prefix_indexes_of(plugins) == {"approx-prefix-cache-producer": index}
