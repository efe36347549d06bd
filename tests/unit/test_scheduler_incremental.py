"""Carrying work over between scheduling cycles changes nothing: the incremental scheduler (states kept across
cycles, scorers updating only the endpoints that changed) decides exactly as one that recomputes everything,
under random metrics, in-flight counts, staleness, prompts and candidate lists."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from endpoint_picker.datalayer import EndpointMetrics, MetricsStore
from endpoint_picker.datastore import Endpoint
from endpoint_picker.decisions import DecisionLog
from endpoint_picker.errors import ResourceExhausted
from endpoint_picker.inflight import InFlightTracker, Lease
from endpoint_picker.journal import KeyJournal
from endpoint_picker.request import attach_body, new_request
from endpoint_picker.scheduling import FrameworkScheduler, default_config, load_config_text
from endpoint_picker.scheduling.config import UPSTREAM_DEFAULT_CONFIG

FILTERED = """
plugins:
- {type: decode-filter}
- {type: queue-scorer}
- {type: running-requests-size-scorer}
- {type: token-load-scorer, parameters: {queueThresholdTokens: 5000}}
- {type: kv-cache-utilization-scorer}
- {type: max-score-picker, parameters: {maxNumOfEndpoints: 3}}
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: decode-filter}
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: running-requests-size-scorer, weight: 0.5}
  - {pluginRef: token-load-scorer, weight: 1}
  - {pluginRef: kv-cache-utilization-scorer, weight: 1.5}
  - {pluginRef: max-score-picker}
"""

# Every scorer with a delta path, unfiltered, weights other than 1, the length-weighted prefix formula.
ALL_DELTA_SCORERS = """
plugins:
- {type: prefix-cache-scorer, parameters: {matchLengthWeight: 0.3, matchLengthScaleTokens: 64}}
- {type: active-request-scorer, parameters: {idleThreshold: 1, maxBusyScore: 0.8}}
- {type: queue-scorer}
- {type: running-requests-size-scorer}
- {type: token-load-scorer, parameters: {queueThresholdTokens: 3000}}
- {type: kv-cache-utilization-scorer}
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: active-request-scorer}
  - {pluginRef: queue-scorer, weight: 0.7}
  - {pluginRef: running-requests-size-scorer, weight: 2}
  - {pluginRef: token-load-scorer}
  - {pluginRef: kv-cache-utilization-scorer, weight: 1.25}
"""

CONFIGS = {"default": None, "upstream": UPSTREAM_DEFAULT_CONFIG, "filtered": FILTERED, "all": ALL_DELTA_SCORERS}


class Side:
    """One scheduler with its own store, tracker, leases and virtual clock."""

    def __init__(self, config: str | None, incremental: bool) -> None:
        self.now = 100.0
        self.store = MetricsStore(clock=lambda: self.now)
        self.inflight = InFlightTracker()
        rng = random.Random(7)
        cfg = load_config_text(config, rng=rng) if config else default_config(rng)
        self.scheduler = FrameworkScheduler(cfg, self.inflight, self.store, DecisionLog(capacity=4),
                                            staleness_threshold=2.0, incremental=incremental)
        self.leases: list[Lease] = []

    async def decide(self, prompt: str, request_id: str, candidates: Any) -> object:
        request = new_request("/v1/completions", {"x-request-id": request_id}, None)
        attach_body(request, orjson.dumps({"model": "m", "prompt": prompt}))
        try:
            result = await self.scheduler.schedule(request, candidates)
        except ResourceExhausted as exc:
            return ("rejected", exc.message)
        assert result.decision is not None
        doc = result.decision.to_dict()
        doc.pop("time")
        doc.pop("timingsMicroseconds")
        self.leases.append(self.inflight.acquire(result.primary.key, request.estimated_input_tokens))
        return (result.primary.key, [e.key for e in result.fallbacks], doc)


def _pool(rng: random.Random, n: int) -> list[Endpoint]:
    roles = ["decode", "prefill", "both"]
    return [Endpoint(f"pod-{i}", f"10.3.0.{i + 1}", 8000, {"llm-d.ai/role": rng.choice(roles)}) for i in range(n)]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", list(CONFIGS))
async def test_incremental_cycles_decide_as_full_ones(name: str, seed: int) -> None:
    rng = random.Random(seed)
    fast, full = Side(CONFIGS[name], True), Side(CONFIGS[name], False)
    sides = (fast, full)
    pool = _pool(rng, 40)
    candidates: Any = tuple(pool)
    bases = [" ".join(f"w{rng.randrange(500)}" for _ in range(rng.randrange(20, 300))) for _ in range(6)]
    incremental_cycles = 0
    original_states = fast.scheduler._states

    def counting(c: Any) -> Any:
        nonlocal incremental_cycles
        out = original_states(c)
        incremental_cycles += out[2].previous is not None
        return out

    fast.scheduler._states = counting  # type: ignore[method-assign]

    for step in range(300):
        op = rng.random()
        if op < 0.4:  # scrapes of a few endpoints, some already stale when they land
            for _ in range(rng.randrange(1, 6)):
                ep = rng.choice(pool)
                m = EndpointMetrics(scraped_at=fast.now - rng.choice([0.0, 0.5, 1.9, 2.5]),
                                    waiting_queue_size=rng.choice([0, 0, 0, 1, 3, 8]),
                                    running_requests=rng.randrange(0, 20), kv_cache_usage=rng.random() * 1.1,
                                    block_size=16, num_gpu_blocks=1000)
                for side in sides:
                    side.store.put(ep.key, m)
        elif op < 0.45:
            gone = rng.choice(pool).key
            for side in sides:
                side.store.forget([gone])
        elif op < 0.6 and fast.leases:
            i = rng.randrange(len(fast.leases))
            for side in sides:
                side.leases.pop(i).release()
        elif op < 0.65:
            choice = rng.random()
            if choice < 0.3:
                candidates = tuple(pool)
            elif choice < 0.5:
                candidates = list(candidates)  # the same endpoints in a fresh list
            elif choice < 0.7:
                candidates = tuple(rng.sample(pool, rng.randrange(5, len(pool))))
            else:  # a pod replaced by a new object at the same address
                i = rng.randrange(len(pool))
                pool[i] = Endpoint(pool[i].name, pool[i].address, 8000, {"llm-d.ai/role": "both"})
                candidates = tuple(pool)
        elif op < 0.7:
            later = fast.now + rng.choice([0.01, 0.3, 1.0, 2.5])
            for side in sides:
                side.now = later
        elif op < 0.72:
            gone = rng.choice(pool).key
            for side in sides:
                side.scheduler.forget(frozenset({gone}))
        prompt = rng.choice(bases) + f" q{rng.randrange(1000)}"
        a = await fast.decide(prompt, f"r{step}", candidates)
        b = await full.decide(prompt, f"r{step}", candidates)
        assert a == b, f"step {step}"
    assert incremental_cycles > 100  # the fast path was really taken


def test_key_journal_reports_writes_since_a_cursor_and_forgets_old_ones() -> None:
    journal = KeyJournal(limit=4)
    start = journal.cursor
    for key in "abc":
        journal.add(key)
    assert journal.since(start) == ["a", "b", "c"]
    middle = journal.cursor
    journal.add("d")
    assert journal.since(middle) == ["d"]
    for key in "efgh":
        journal.add(key)
    assert journal.since(start) is None  # dropped: the reader must start over
    assert journal.since(journal.cursor) == []
