"""Conversion of the picker's in-memory records and state into ``endpoint_picker.v1`` messages.

Pure functions over plain inputs (no gRPC), so they are unit-tested on hand-built records. A decision
record's per-scorer raw score lists are aligned with the profile's scored endpoints; the weighted score is
raw times weight, exactly as the scheduler summed it into the totals.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf import json_format

from endpoint_picker.datalayer.model import EndpointMetrics
from endpoint_picker.datastore import Endpoint, PoolSettings
from endpoint_picker.decisions import DecisionRecord, ProfileDecision
from picker_api.stubs import picker_pb2 as pb

SCHEDULED = "scheduled"
REJECTED_PREFIX = "rejected"


def set_time(ts: Any, at: float) -> None:
    """Set a ``google.protobuf.Timestamp`` from epoch seconds (whole seconds kept exact, not via nanoseconds)."""
    seconds = math.floor(at)
    nanos = round((at - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    ts.seconds, ts.nanos = seconds, nanos


def outcome_of(text: str) -> tuple[pb.Outcome, str]:
    """``(Outcome, detail)`` for a record's outcome text (``scheduled`` or ``rejected: <reason>``)."""
    if text == SCHEDULED:
        return pb.OUTCOME_SCHEDULED, ""
    if text.startswith(REJECTED_PREFIX):
        return pb.OUTCOME_REJECTED, text[len(REJECTED_PREFIX):].lstrip(": ").strip()
    return pb.OUTCOME_UNSPECIFIED, text


def profile_to_proto(p: ProfileDecision) -> pb.ProfileDecision:
    scored = p.scored
    return pb.ProfileDecision(
        name=p.name,
        candidates=p.candidates,
        filters=[pb.FilterResult(filter=name, removed_endpoints=removed) for name, removed in p.filtered],
        scored_endpoints=scored,
        scorers=[
            pb.ScorerResult(scorer=name, weight=weight, scores=[
                pb.EndpointScore(endpoint=key, raw=raw, weighted=raw * weight)
                for key, raw in zip(scored, raws, strict=False)
            ])
            for name, weight, raws in p.scores
        ],
        totals=[pb.EndpointTotal(endpoint=key, total=total) for key, total in zip(scored, p.totals, strict=False)],
        picked=p.picked,
    )


def decision_to_proto(record: DecisionRecord) -> pb.Decision:
    outcome, detail = outcome_of(record.outcome)
    msg = pb.Decision(
        request_id=record.request_id,
        model=record.model,
        priority=record.priority,
        candidates=record.candidates,
        profiles=[profile_to_proto(p) for p in record.profiles],
        primary_profile=record.primary_profile or "",
        pick=record.pick or "",
        fallbacks=record.fallbacks,
        outcome=outcome,
        outcome_detail=detail,
        timings=[pb.StageTiming(stage=stage, microseconds=us) for stage, us in record.timings_us.items()],
    )
    set_time(msg.time, record.at)
    if record.saturation is not None:
        msg.saturation = record.saturation
    return msg


def metrics_to_proto(m: EndpointMetrics, age: float, stale: bool) -> pb.EndpointMetrics:
    msg = pb.EndpointMetrics(
        stale=stale,
        waiting_queue_size=max(0, int(m.waiting_queue_size)),
        running_requests=max(0, int(m.running_requests)),
        kv_cache_usage=float(m.kv_cache_usage),
        active_models=sorted(m.active_models),
        waiting_models=sorted(m.waiting_models),
        max_active_models=max(0, int(m.max_active_models)),
        prefix_cache_queries=float(m.prefix_cache_queries),
        prefix_cache_hits=float(m.prefix_cache_hits),
    )
    msg.age.FromNanoseconds(round(max(0.0, age) * 1e9))
    if m.block_size is not None:
        msg.block_size = max(0, int(m.block_size))
    if m.num_gpu_blocks is not None:
        msg.num_gpu_blocks = max(0, int(m.num_gpu_blocks))
    return msg


class PrefixIndexLike(Protocol):
    """What the state snapshot needs of a prefix index (``ApproxPrefixIndex``)."""

    def size(self) -> int: ...

    def endpoint_size(self, key: str) -> int: ...


@dataclass(frozen=True, slots=True)
class StateInputs:
    """Everything a state snapshot is built from, read at one instant on the event loop."""

    pool: PoolSettings
    synced: bool
    endpoints: Sequence[Endpoint]
    metrics: Mapping[str, EndpointMetrics]
    metrics_now: float  # the metrics store's clock (monotonic) at the snapshot
    in_flight: Mapping[str, tuple[int, int]]  # key -> (requests, tokens)
    prefix_indexes: Mapping[str, PrefixIndexLike]  # producer plugin name -> its index
    staleness_threshold: float
    decisions_recorded: int
    wall_time: float | None = None


def state_to_proto(inputs: StateInputs) -> pb.State:
    msg = pb.State(
        pool=pb.Pool(name=inputs.pool.name, namespace=inputs.pool.namespace),
        synced=inputs.synced,
        decisions_recorded=max(0, inputs.decisions_recorded),
        prefix_indexes=[pb.PrefixIndex(plugin=name, entries=index.size())
                        for name, index in sorted(inputs.prefix_indexes.items())],
    )
    set_time(msg.time, time.time() if inputs.wall_time is None else inputs.wall_time)
    msg.staleness_threshold.FromNanoseconds(round(inputs.staleness_threshold * 1e9))
    indexes = list(inputs.prefix_indexes.values())
    for ep in sorted(inputs.endpoints, key=lambda e: e.key):
        key = ep.key
        requests, tokens = inputs.in_flight.get(key, (0, 0))
        state = msg.endpoints.add(
            key=key, name=ep.name, address=ep.address, port=ep.port, labels=dict(ep.labels),
            in_flight=pb.InFlight(requests=max(0, requests), tokens=max(0, tokens)),
            prefix_index_entries=sum(index.endpoint_size(key) for index in indexes),
        )
        m = inputs.metrics.get(key)
        if m is not None:
            age = inputs.metrics_now - m.scraped_at
            stale = inputs.staleness_threshold > 0 and age > inputs.staleness_threshold  # <= 0: age check off
            state.metrics.CopyFrom(metrics_to_proto(m, age, stale))
    return msg


def prefix_indexes_of(plugins: Iterable[Any]) -> dict[str, PrefixIndexLike]:
    """The prefix indexes held by data-producer plugins (``approx-prefix-cache-producer``), by plugin name."""
    out: dict[str, PrefixIndexLike] = {}
    for plugin in plugins:
        index = getattr(plugin, "index", None)
        if index is not None and callable(getattr(index, "endpoint_size", None)) and callable(
                getattr(index, "size", None)):
            out[str(getattr(plugin, "name", type(plugin).__name__))] = index
    return out


def to_json_dict(msg: Any) -> dict[str, Any]:
    """A message as JSON-ready data (proto3 JSON mapping, field names in lowerCamelCase, zeros included)."""
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
