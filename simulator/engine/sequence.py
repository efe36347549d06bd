"""The engine's mutable state for one request while it is queued or running.

Why it exists: the scheduler, the KV-cache manager and the result bookkeeping all need the same
per-request facts (tokens so far, how many have KV computed, which blocks it holds, which of them are in
the prefix cache, its block hashes) -- this is vLLM's ``Request`` object, reduced to what the
simulation needs. Callers never see it; they get a ``RequestResult`` when it finishes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simulator.engine.hashing import RequestKeys
from simulator.engine.request import EngineRequest, FinishReason, RequestResult

if TYPE_CHECKING:
    from simulator.engine.kv_cache import KVBlock

__all__ = ["SeqStatus", "Sequence"]


class SeqStatus(enum.Enum):
    PENDING = "pending"  # in the frontend, not yet visible to the scheduler
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"  # back in the waiting queue, KV freed, to be recomputed
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    request_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    max_tokens: int
    # Finish with "stop" after this many output tokens (None = only max_tokens / max_model_len).
    stop_after: int | None
    scripted_output: Seq[int] | None
    keys: RequestKeys
    lora_name: str | None
    lora_id: int | None
    arrival_time: float
    ready_time: float
    status: SeqStatus = SeqStatus.PENDING
    # Full-block digests of token_ids (prompt and generated), in chain order.
    block_hashes: list[bytes] = field(default_factory=list)
    # KV blocks held, in token order.
    blocks: list[KVBlock] = field(default_factory=list)
    # How many of ``blocks`` are registered in the prefix cache (have a hash).
    num_cached_blocks: int = 0
    # Tokens whose KV is computed (or served from the prefix cache).
    num_computed_tokens: int = 0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    token_times: list[float] = field(default_factory=list)
    # Prefix-cache hit tokens at first scheduling; -1 until then.
    cached_tokens: int = -1
    num_preemptions: int = 0
    # Prompt tokens whose KV a KV connector provides at admission (P/D decode side).
    num_external_tokens: int = 0

    @classmethod
    def from_request(
        cls,
        request: EngineRequest,
        *,
        arrival_time: float,
        ready_time: float,
        keys: RequestKeys,
        lora_id: int | None,
    ) -> Sequence:
        return cls(
            request_id=request.request_id,
            token_ids=list(request.prompt_token_ids),
            num_prompt_tokens=len(request.prompt_token_ids),
            max_tokens=request.max_tokens,
            stop_after=request.output_len,
            scripted_output=request.output_token_ids,
            keys=keys,
            lora_name=request.lora_name,
            lora_id=lora_id,
            arrival_time=arrival_time,
            ready_time=ready_time,
            num_external_tokens=request.num_external_computed_tokens,
        )

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    def result(self, finish_time: float, reason: FinishReason) -> RequestResult:
        return RequestResult(
            request_id=self.request_id,
            arrival_time=self.arrival_time,
            ready_time=self.ready_time,
            first_scheduled_time=self.first_scheduled_time,
            first_token_time=self.first_token_time,
            token_times=self.token_times,
            finish_time=finish_time,
            prompt_tokens=self.num_prompt_tokens,
            cached_tokens=max(self.cached_tokens, 0),
            output_token_ids=self.token_ids[self.num_prompt_tokens :],
            finish_reason=reason,
            num_preemptions=self.num_preemptions,
            lora_name=self.lora_name,
        )
