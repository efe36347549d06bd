"""The engine's counters and a point-in-time snapshot of them with its gauges.

Why it exists: the simulated server's ``/metrics`` (vLLM series names) and the fleet simulator read the
same numbers. Counters only grow, and follow vLLM's counting rules: prefix-cache queries/hits are counted
once per request when it is first scheduled, in tokens, and not for requests resumed after preemption;
prompt tokens (and their cached part) are counted when the first token is produced; generation tokens per
token. Histograms are left to the consumer, which has every ``RequestResult`` and ``StepResult``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EngineCounters", "EngineMetrics"]


@dataclass(slots=True)
class EngineCounters:
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    # The same lookups for requests resumed after preemption (vLLM keeps them apart).
    preempted_prefix_cache_queries: int = 0
    preempted_prefix_cache_hits: int = 0
    # Lookups through a KV connector (vllm:external_prefix_cache_queries / _hits).
    external_prefix_cache_queries: int = 0
    external_prefix_cache_hits: int = 0
    prompt_tokens: int = 0
    prompt_tokens_cached: int = 0
    generation_tokens: int = 0
    num_preemptions: int = 0
    num_steps: int = 0
    request_success: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """Gauges and counters at ``time`` (engine clock)."""

    time: float
    num_requests_running: int
    num_requests_waiting: int
    # Requests still in the frontend (arrived, not yet visible to the scheduler).
    num_requests_pending: int
    kv_cache_usage_perc: float
    num_gpu_blocks: int
    block_size: int
    num_free_blocks: int
    num_cached_blocks: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    preempted_prefix_cache_queries: int
    preempted_prefix_cache_hits: int
    prompt_tokens: int
    prompt_tokens_cached: int
    generation_tokens: int
    num_preemptions: int
    num_steps: int
    request_success: dict[str, int]
    max_loras: int
    # Adapters of running / waiting requests, sorted (labels of vllm:lora_requests_info).
    running_lora_adapters: tuple[str, ...]
    waiting_lora_adapters: tuple[str, ...]
    # Adapters currently in GPU slots, least recently used first.
    loaded_lora_adapters: tuple[str, ...]
    external_prefix_cache_queries: int = 0
    external_prefix_cache_hits: int = 0
