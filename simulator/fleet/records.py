"""What the fleet simulator keeps of each finished request, and of each endpoint at the end of a run.

Why it exists: an engine's ``RequestResult`` carries every token's time and id -- far too much to hold
for a hundred thousand requests -- while a report needs a handful of numbers per request. Records are
those numbers, taken the moment a request finishes; the raw result is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.engine.request import RequestResult
from simulator.fleet.workload import FleetRequest

__all__ = ["EndpointSummary", "RequestRecord"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished request. Times in virtual seconds; latencies from arrival."""

    request_id: str
    endpoint: int
    label: str
    arrival_time: float
    finish_time: float
    ttft: float
    # (last token - first token) / (output tokens - 1); None for a single output token.
    tpot: float | None
    # From ready (arrival + frontend) until first scheduled.
    queue_time: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    preemptions: int

    @property
    def e2e(self) -> float:
        return self.finish_time - self.arrival_time

    @classmethod
    def of(cls, request: FleetRequest, endpoint: int, result: RequestResult) -> RequestRecord:
        first = result.first_token_time
        times = result.token_times
        scheduled = result.first_scheduled_time
        return cls(
            request_id=request.request_id,
            endpoint=endpoint,
            label=request.label,
            arrival_time=result.arrival_time,
            finish_time=result.finish_time,
            ttft=(result.finish_time if first is None else first) - result.arrival_time,
            tpot=None if first is None or len(times) < 2 else (times[-1] - first) / (len(times) - 1),
            queue_time=0.0 if scheduled is None else scheduled - result.ready_time,
            prompt_tokens=result.prompt_tokens,
            cached_tokens=result.cached_tokens,
            output_tokens=result.output_tokens,
            preemptions=result.num_preemptions,
        )


@dataclass(frozen=True, slots=True)
class EndpointSummary:
    """One endpoint after a run: what was routed to it and what its engine counted."""

    index: int
    name: str
    routed: int
    finished: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    preemptions: int
    steps: int
    busy_time: float
