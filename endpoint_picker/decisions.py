"""Decision records: why each request went where it went.

Every scheduling cycle yields one :class:`DecisionRecord` (candidates, which filter removed whom, each
scorer's raw and weighted score per endpoint, the pick and fallbacks, profile, admission outcome, timings).
Records hold references to lists the cycle built anyway and are turned into JSON only when someone asks, so
recording costs little on the request path. No prompt text is ever recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ProfileDecision:
    name: str
    candidates: list[str]
    filtered: list[tuple[str, list[str]]] = field(default_factory=list)  # (filter name, removed endpoint keys)
    scored: list[str] = field(default_factory=list)  # endpoint keys in scoring order
    scores: list[tuple[str, float, list[float]]] = field(default_factory=list)  # (scorer, weight, raw scores)
    totals: list[float] = field(default_factory=list)
    picked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "candidates": self.candidates,
            "filtered": [{"filter": f, "removed": removed} for f, removed in self.filtered],
            "scorers": [
                {"scorer": name, "weight": weight,
                 "raw": dict(zip(self.scored, raw, strict=True)),
                 "weighted": {k: v * weight for k, v in zip(self.scored, raw, strict=True)}}
                for name, weight, raw in self.scores
            ],
            "totals": dict(zip(self.scored, self.totals, strict=True)),
            "picked": self.picked,
        }


@dataclass(slots=True)
class DecisionRecord:
    request_id: str
    model: str
    priority: int
    candidates: list[str]
    at: float = field(default_factory=time.time)
    profiles: list[ProfileDecision] = field(default_factory=list)
    primary_profile: str | None = None
    pick: str | None = None
    fallbacks: list[str] = field(default_factory=list)
    outcome: str = "scheduled"  # or "rejected: <reason>"
    saturation: float | None = None
    timings_us: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "model": self.model,
            "priority": self.priority,
            "time": self.at,
            "candidates": self.candidates,
            "saturation": self.saturation,
            "profiles": [p.to_dict() for p in self.profiles],
            "primaryProfile": self.primary_profile,
            "pick": self.pick,
            "fallbacks": self.fallbacks,
            "outcome": self.outcome,
            "timingsMicroseconds": self.timings_us,
        }

    def scores_summary(self) -> dict[str, float]:
        """Total score per endpoint of the primary profile (what ``--emit-endpoint-scores`` sends)."""
        for p in self.profiles:
            if p.name == self.primary_profile:
                return dict(zip(p.scored, p.totals, strict=True))
        return {}


class DecisionLog:
    """A bounded ring of recent records, looked up by request id, with live subscribers."""

    def __init__(self, capacity: int = 2048) -> None:
        self._capacity = capacity
        self._records: OrderedDict[str, DecisionRecord] = OrderedDict()
        self._subscribers: set[asyncio.Queue[DecisionRecord]] = set()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: DecisionRecord) -> None:
        records = self._records
        records.pop(record.request_id, None)
        records[record.request_id] = record
        if len(records) > self._capacity:
            records.popitem(last=False)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # a slow subscriber loses its oldest records, never blocks routing
            queue.put_nowait(record)

    def get(self, request_id: str) -> DecisionRecord | None:
        return self._records.get(request_id)

    def recent(self, limit: int | None = None) -> list[DecisionRecord]:
        records = list(self._records.values())
        return records[-limit:] if limit else records

    def subscribe(self, maxsize: int = 1024) -> asyncio.Queue[DecisionRecord]:
        queue: asyncio.Queue[DecisionRecord] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[DecisionRecord]) -> None:
        self._subscribers.discard(queue)
