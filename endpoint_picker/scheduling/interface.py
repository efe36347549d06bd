"""The contract between the director and any scheduler (the simple policy now, the plugin framework later)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from endpoint_picker.datastore import Endpoint
from endpoint_picker.decisions import DecisionRecord
from endpoint_picker.request import InferenceRequest


@dataclass(frozen=True, slots=True)
class SchedulingResult:
    """The pick: the primary endpoint first, then fallbacks in the order the proxy should retry them."""

    primary: Endpoint
    fallbacks: tuple[Endpoint, ...] = ()
    profile: str = "default"
    decision: DecisionRecord | None = None  # why: candidates, filters, scores (None for header-only picks)

    @property
    def targets(self) -> tuple[Endpoint, ...]:
        return (self.primary, *self.fallbacks)


class Scheduler(Protocol):
    """Chooses among ``candidates`` (never empty: the director answers 503 before calling)."""

    async def schedule(self, request: InferenceRequest, candidates: Sequence[Endpoint]) -> SchedulingResult: ...
