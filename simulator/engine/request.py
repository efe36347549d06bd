"""What goes into the engine (``EngineRequest``) and what comes out per request (``RequestResult``).

Why it exists: the HTTP server, the fleet simulator and the tests all describe work to the engine and
read its per-request timings the same way, without touching scheduler internals. Times are seconds on
the engine's virtual clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["EngineRequest", "FinishReason", "RequestResult"]

FinishReason = Literal["stop", "length", "abort"]


@dataclass(slots=True)
class EngineRequest:
    """A generation request as the engine core sees it (already tokenized)."""

    request_id: str
    prompt_token_ids: Sequence[int]
    # Upper bound on generated tokens (finish reason "length").
    max_tokens: int
    # None = the engine's clock when added.
    arrival_time: float | None = None
    # Generate this many tokens then stop as if EOS was sampled (finish reason "stop"); None = run to
    # max_tokens (``ignore_eos``).
    output_len: int | None = None
    # Scripted output tokens (echo mode); when shorter than the output, the rest are drawn at random.
    output_token_ids: Sequence[int] | None = None
    lora_name: str | None = None
    lora_path: str | None = None
    # vLLM's lora_int_id; None = assigned by the engine on first sight of the adapter name.
    lora_id: int | None = None
    cache_salt: str | None = None
    # Leading prompt tokens whose KV arrives from elsewhere (a remote prefiller through a KV connector,
    # vLLM's num_external_computed_tokens): admitted as computed, at most prompt_len - 1 of them.
    num_external_computed_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.prompt_token_ids:
            raise ValueError(f"request {self.request_id}: empty prompt")
        if self.num_external_computed_tokens < 0:
            raise ValueError(f"request {self.request_id}: num_external_computed_tokens must be >= 0")
        if self.max_tokens < 1:
            raise ValueError(f"request {self.request_id}: max_tokens must be >= 1")
        if self.output_len is not None and self.output_len < 1:
            raise ValueError(f"request {self.request_id}: output_len must be >= 1")


@dataclass(slots=True)
class RequestResult:
    """The life of one finished (or aborted) request."""

    request_id: str
    arrival_time: float
    # When the engine could first schedule it (arrival + frontend delay).
    ready_time: float
    first_scheduled_time: float | None
    first_token_time: float | None
    # Time of every generated token, first included.
    token_times: list[float]
    finish_time: float
    prompt_tokens: int
    # Prompt tokens served from the prefix cache at first scheduling (usage.prompt_tokens_details).
    cached_tokens: int
    output_token_ids: list[int]
    finish_reason: FinishReason
    num_preemptions: int = 0
    lora_name: str | None = None

    @property
    def output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def ttft(self) -> float | None:
        """Time to first token from arrival."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def e2e_latency(self) -> float:
        return self.finish_time - self.arrival_time

    @property
    def queue_time(self) -> float | None:
        """From ready to first scheduled (vLLM's request_queue_time)."""
        return None if self.first_scheduled_time is None else self.first_scheduled_time - self.ready_time

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first: (last - first) / (n - 1)."""
        if self.first_token_time is None or len(self.token_times) < 2:
            return None
        return (self.token_times[-1] - self.first_token_time) / (len(self.token_times) - 1)

    @property
    def inter_token_latencies(self) -> list[float]:
        times = self.token_times
        return [b - a for a, b in itertools.pairwise(times)]
