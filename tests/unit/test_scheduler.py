"""Scheduling cycles: plugin formulas, weighted sums, admission, prefix affinity and decision records."""

from __future__ import annotations

import base64
import random
import time

import orjson
import pytest

from endpoint_picker.datalayer import EndpointMetrics, MetricsStore
from endpoint_picker.datastore import Endpoint
from endpoint_picker.decisions import DecisionLog
from endpoint_picker.errors import ResourceExhausted
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.request import InferenceRequest, attach_body, new_request
from endpoint_picker.scheduling import FrameworkScheduler, default_config, load_config_text
from endpoint_picker.scheduling.framework import CycleState, EndpointState

EPS = [Endpoint(f"pod-{i}", f"10.1.0.{i}", 8000, {"llm-d.ai/role": role})
       for i, role in enumerate(["decode", "prefill", "both", "decode"], start=1)]


def metrics(queue: int = 0, kv: float = 0.0, running: int = 0, age: float = 0.0, **extra) -> EndpointMetrics:
    return EndpointMetrics(scraped_at=time.monotonic() - age, waiting_queue_size=queue, kv_cache_usage=kv,
                           running_requests=running, **extra)


def make(config: str | None = None, seed: int = 1) -> tuple[FrameworkScheduler, MetricsStore, InFlightTracker]:
    store = MetricsStore()
    inflight = InFlightTracker()
    cfg = load_config_text(config, rng=random.Random(seed)) if config else default_config(random.Random(seed))
    return FrameworkScheduler(cfg, inflight, store, DecisionLog()), store, inflight


def req(prompt: str = "hello", model: str = "m", *, priority: int = 0, headers: dict | None = None,
        request_id: str = "r") -> InferenceRequest:
    r = new_request("/v1/completions", {"x-request-id": request_id, **(headers or {})}, None)
    attach_body(r, orjson.dumps({"model": model, "prompt": prompt}))
    r.priority = priority
    return r


def one_scorer(type_name: str, parameters: str = "{}") -> str:
    return f"""
plugins:
- {{type: {type_name}, parameters: {parameters}}}
schedulingProfiles: [{{name: p, plugins: [{{pluginRef: {type_name}}}]}}]
"""


def scores(s: FrameworkScheduler, request: InferenceRequest) -> dict[str, float]:
    """Run one scorer-only profile and return its raw scores per endpoint name."""
    (profile,) = s.config.profiles.values()
    states = s.states(EPS)
    cycle = CycleState()
    raw = profile.scorers[0].scorer.score(cycle, request, states)
    return {st.endpoint.name: v for st, v in zip(states, raw, strict=True)}


# --- formulas ---------------------------------------------------------------------------------------------

def test_queue_scorer_min_max_and_stale_counts_as_longest() -> None:
    s, store, _ = make(one_scorer("queue-scorer"))
    for ep, q in zip(EPS, [0, 10, 5], strict=False):
        store.put(ep.key, metrics(queue=q))
    store.put(EPS[3].key, metrics(queue=0, age=60))  # stale
    assert scores(s, req()) == {"pod-1": 1.0, "pod-2": 0.0, "pod-3": 0.5, "pod-4": 0.0}


def test_kv_cache_scorer() -> None:
    s, store, _ = make(one_scorer("kv-cache-utilization-scorer"))
    for ep, kv in zip(EPS, [0.1, 0.5, 0.9, 0.0], strict=True):
        store.put(ep.key, metrics(kv=kv))
    assert scores(s, req()) == pytest.approx({"pod-1": 0.9, "pod-2": 0.5, "pod-3": 0.1, "pod-4": 1.0})


def test_lora_affinity_scorer() -> None:
    s, store, _ = make(one_scorer("lora-affinity-scorer"))
    store.put(EPS[0].key, metrics(active_models=frozenset({"sql"}), max_active_models=1))
    store.put(EPS[1].key, metrics(active_models=frozenset(), max_active_models=2))
    store.put(EPS[2].key, metrics(active_models=frozenset({"x"}), waiting_models=frozenset({"sql"}),
                                  max_active_models=1))
    store.put(EPS[3].key, metrics(active_models=frozenset({"x"}), max_active_models=1))
    assert scores(s, req(model="sql")) == {"pod-1": 1.0, "pod-2": 0.8, "pod-3": 0.6, "pod-4": 0.0}


def test_load_aware_and_token_load_and_active_request_scorers() -> None:
    s, store, inflight = make(one_scorer("load-aware-scorer", "{threshold: 10}"))
    for ep, q in zip(EPS, [0, 5, 10, 20], strict=True):
        store.put(ep.key, metrics(queue=q))
    assert scores(s, req()) == {"pod-1": 0.5, "pod-2": 0.25, "pod-3": 0.0, "pod-4": 0.0}

    s, _, inflight = make(one_scorer("token-load-scorer", "{queueThresholdTokens: 100}"))
    inflight.acquire(EPS[0].key, 50)
    inflight.acquire(EPS[1].key, 500)
    assert scores(s, req()) == {"pod-1": 0.5, "pod-2": 0.0, "pod-3": 1.0, "pod-4": 1.0}

    s, _, inflight = make(one_scorer("active-request-scorer"))
    for _ in range(4):
        inflight.acquire(EPS[0].key, 1)
    inflight.acquire(EPS[1].key, 1)
    assert scores(s, req()) == {"pod-1": 0.0, "pod-2": 0.75, "pod-3": 1.0, "pod-4": 1.0}


def test_running_requests_size_scorer() -> None:
    s, store, _ = make(one_scorer("running-requests-size-scorer"))
    for ep, n in zip(EPS, [2, 4, 6, 4], strict=True):
        store.put(ep.key, metrics(running=n))
    assert scores(s, req()) == {"pod-1": 1.0, "pod-2": 0.5, "pod-3": 0.0, "pod-4": 0.5}


def test_session_affinity_scorer() -> None:
    s, _, _ = make(one_scorer("session-affinity-scorer"))
    token = base64.b64encode(b"ns/pod-3").decode()
    assert scores(s, req(headers={"x-session-token": token})) == {
        "pod-1": 0.0, "pod-2": 0.0, "pod-3": 1.0, "pod-4": 0.0}
    assert set(scores(s, req(headers={"x-session-token": "%%%"})).values()) == {0.0}


# --- cycles -----------------------------------------------------------------------------------------------

async def test_weighted_sum_picks_the_best_and_records_why() -> None:
    s, store, _ = make()
    store.put(EPS[0].key, metrics(queue=4, kv=0.9))
    store.put(EPS[1].key, metrics(queue=0, kv=0.2))
    store.put(EPS[2].key, metrics(queue=2, kv=0.5))
    store.put(EPS[3].key, metrics(queue=4, kv=0.8))
    result = await s.schedule(req(request_id="why"), EPS)
    assert result.primary.name == "pod-2"
    record = s.decisions.get("why")
    assert record is not None and record.pick == EPS[1].key and record.outcome == "scheduled"
    d = record.to_dict()
    (profile,) = d["profiles"]
    assert [sc["scorer"] for sc in profile["scorers"]] == [
        "queue-scorer", "kv-cache-utilization-scorer", "prefix-cache-scorer", "active-request-scorer"]
    kv = profile["scorers"][1]
    assert kv["raw"][EPS[1].key] == pytest.approx(0.8) and kv["weighted"][EPS[1].key] == pytest.approx(0.8)
    # queue 1 x 1.0 + kv 1 x 0.8 + prefix 3 x 0 + active-request 1 x 1.0 (nothing in flight)
    assert profile["totals"][EPS[1].key] == pytest.approx(1.0 + 0.8 + 1.0)
    assert "hello" not in orjson.dumps(d).decode()  # no prompt text in records


async def test_same_prompt_sticks_to_the_endpoint_holding_its_prefix() -> None:
    s, store, _ = make()
    for ep in EPS:
        store.put(ep.key, metrics())
    long_prompt = "You are a helpful assistant. " * 200
    first = await s.schedule(req(long_prompt + "Q1"), EPS)
    for i in range(10):
        again = await s.schedule(req(long_prompt + f"Q{i + 2}", request_id=f"r{i}"), EPS)
        assert again.primary == first.primary
    other = {(await s.schedule(req(f"unrelated {i} " * 40, request_id=f"u{i}"), EPS)).primary for i in range(12)}
    assert len(other) > 1  # no prefix in common: the ties break at random


async def test_filters_and_fallback_order() -> None:
    s, _, inflight = make("""
plugins:
- {type: decode-filter}
- {type: active-request-scorer}
- {type: max-score-picker, parameters: {maxNumOfEndpoints: 3}}
schedulingProfiles:
- {name: d, plugins: [{pluginRef: decode-filter}, {pluginRef: active-request-scorer}, {pluginRef: max-score-picker}]}
""")
    inflight.acquire(EPS[0].key, 1)
    result = await s.schedule(req(request_id="f"), EPS)
    assert [e.name for e in result.targets][-1] == "pod-1"  # busiest last
    assert "pod-2" not in [e.name for e in result.targets]  # prefill-only removed
    record = s.decisions.get("f")
    assert record is not None
    assert record.profiles[0].filtered == [("decode-filter", [EPS[1].key])]


async def test_filters_removing_everyone_is_429() -> None:
    s, _, _ = make("""
plugins: [{type: by-label, parameters: {label: gpu, validValues: [tpu]}}]
""")
    with pytest.raises(ResourceExhausted, match="no endpoint passed"):
        await s.schedule(req(request_id="x"), EPS)
    record = s.decisions.get("x")
    assert record is not None and record.outcome.startswith("rejected")


async def test_sheddable_requests_are_dropped_only_when_saturated() -> None:
    s, store, _ = make()
    for ep in EPS:
        store.put(ep.key, metrics(queue=10, kv=0.95))  # way over queue 5 / kv 0.8
    with pytest.raises(ResourceExhausted, match="sheddable"):
        await s.schedule(req(priority=-1), EPS)
    await s.schedule(req(priority=0), EPS)  # standard traffic is never shed
    for ep in EPS:
        store.put(ep.key, metrics(queue=1, kv=0.3))
    await s.schedule(req(priority=-1), EPS)


async def test_missing_metrics_count_as_saturated_for_shedding() -> None:
    s, _, _ = make()
    with pytest.raises(ResourceExhausted):
        await s.schedule(req(priority=-1), EPS)


async def test_utilization_filter_keeps_everyone_when_everyone_is_over() -> None:
    s, store, _ = make("plugins: [{type: utilization-detector}, {type: queue-scorer}]\n"
                       "schedulingProfiles: [{name: p, plugins: [{pluginRef: utilization-detector}, "
                       "{pluginRef: queue-scorer}]}]")
    for ep in EPS:
        store.put(ep.key, metrics(queue=9))
    assert (await s.schedule(req(), EPS)).primary in EPS
    store.put(EPS[2].key, metrics(queue=1))
    for i in range(5):
        assert (await s.schedule(req(request_id=f"u{i}"), EPS)).primary == EPS[2]


async def test_no_hit_lru_spreads_cold_requests() -> None:
    s, _, _ = make("""
plugins: [{type: prefix-cache-scorer}, {type: no-hit-lru-scorer}]
schedulingProfiles: [{name: p, plugins: [{pluginRef: prefix-cache-scorer, weight: 3},
                                         {pluginRef: no-hit-lru-scorer}]}]
""")
    picks = [(await s.schedule(req(f"cold prompt number {i} " * 20, request_id=f"c{i}"), EPS)).primary
             for i in range(4)]
    assert sorted(e.name for e in picks) == ["pod-1", "pod-2", "pod-3", "pod-4"]


async def test_weighted_random_picker_prefers_higher_scores() -> None:
    s, store, _ = make("""
plugins: [{type: kv-cache-utilization-scorer}, {type: weighted-random-picker}]
schedulingProfiles: [{name: p, plugins: [{pluginRef: kv-cache-utilization-scorer},
                                         {pluginRef: weighted-random-picker}]}]
""")
    for ep, kv in zip(EPS, [0.0, 0.9, 0.9, 1.0], strict=True):
        store.put(ep.key, metrics(kv=kv))
    picks = [(await s.schedule(req(request_id=f"w{i}"), EPS)).primary.name for i in range(200)]
    assert picks.count("pod-1") > 120 and "pod-4" not in picks


def test_forget_drops_prefix_state() -> None:
    s, _, _ = make()
    producer = s.config.producers[0]
    producer.index.add(EPS[0].key, [1, 2, 3], 100)  # type: ignore[attr-defined]
    s.forget(frozenset({EPS[0].key}))
    assert producer.index.size() == 0  # type: ignore[attr-defined]


def test_endpoint_states_carry_staleness_and_in_flight() -> None:
    s, store, inflight = make()
    store.put(EPS[0].key, metrics(age=0.0))
    store.put(EPS[1].key, metrics(age=10.0))
    inflight.acquire(EPS[0].key, 42)
    states: list[EndpointState] = s.states(EPS)
    assert [st.stale for st in states] == [False, True, True, True]
    assert (states[0].inflight_requests, states[0].inflight_tokens) == (1, 42)
