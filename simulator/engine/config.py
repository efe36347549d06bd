"""Configuration of one simulated engine: the vLLM scheduler and cache settings it mirrors.

Why it exists: the knobs that change routing outcomes (batch limits, KV capacity, block size, hash
algorithm, LoRA slots) live in one validated, immutable place, named as vLLM's CLI names them, with
vLLM 0.33's defaults for an H100 API server. Hardware-dependent numbers (step times, KV capacity in
tokens) come from the ``LatencyProfile`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.engine.hashing import ExtraKeysStyle, HashAlgo
from simulator.engine.profile import LLAMA_3_1_8B_H100, LatencyProfile

__all__ = ["EngineConfig"]

# Llama-3.1-8B's context window.
DEFAULT_MAX_MODEL_LEN = 131072


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """vLLM-named engine settings. ``None`` fields are derived from the latency profile."""

    profile: LatencyProfile = LLAMA_3_1_8B_H100
    block_size: int = 16
    # Total KV blocks including vLLM's reserved null block; None = profile.kv_cache_tokens // block_size.
    num_gpu_blocks: int | None = None
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 8192
    # None = min(131072, KV capacity in tokens).
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    prefix_caching_hash_algo: HashAlgo = "sha256"
    # The NONE_HASH seed: the server passes PYTHONHASHSEED here when it is set; None = "vllm-none-hash".
    hash_seed: str | None = None
    extra_keys_style: ExtraKeysStyle = "tagged"
    enable_kv_cache_events: bool = False
    # Publish 64-bit ints (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1) rather than 32-byte digests.
    kv_events_int_hashes: bool = True
    kv_events_max_queue: int = 100_000
    enable_lora: bool = False
    max_loras: int = 1
    # None = max_loras (vLLM's default).
    max_cpu_loras: int | None = None
    # Seed of the engine's only randomness: generated token ids and step-time jitter.
    seed: int = 0
    # Generated tokens are drawn from these ids; None = the built-in tokenizer's output words.
    output_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")
        if self.gpu_blocks < 2:
            raise ValueError("num_gpu_blocks must be >= 2 (one is vLLM's reserved null block)")
        capacity = self.usable_blocks * self.block_size
        if self.max_model_len is not None:
            if self.max_model_len < 1:
                raise ValueError("max_model_len must be >= 1")
            if self.max_model_len > capacity:
                raise ValueError(
                    f"max_model_len {self.max_model_len} exceeds the KV cache capacity of {capacity} tokens "
                    f"({self.usable_blocks} usable blocks of {self.block_size})"
                )
        if self.max_loras < 1:
            raise ValueError("max_loras must be >= 1")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras must be >= max_loras")
        if self.kv_events_max_queue < 1:
            raise ValueError("kv_events_max_queue must be >= 1")
        if self.output_token_ids is not None and not self.output_token_ids:
            raise ValueError("output_token_ids must not be empty")

    @property
    def gpu_blocks(self) -> int:
        """Total KV blocks (what ``vllm:cache_config_info`` reports as ``num_gpu_blocks``)."""
        if self.num_gpu_blocks is not None:
            return self.num_gpu_blocks
        return self.profile.kv_cache_tokens // self.block_size

    @property
    def usable_blocks(self) -> int:
        """Blocks requests can use: all but the null block."""
        return self.gpu_blocks - 1

    @property
    def model_len(self) -> int:
        """The effective ``max_model_len``."""
        if self.max_model_len is not None:
            return self.max_model_len
        return min(DEFAULT_MAX_MODEL_LEN, self.usable_blocks * self.block_size)

    @property
    def cpu_loras(self) -> int:
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras
