"""Calibrated step-time model of a model server (``reference/latency-model.md`` section 3).

Why it exists: what makes routing matter is how long an engine step takes as a function of what is in
it -- prefill tokens cost compute, attention over cached context costs memory bandwidth, and a long
prefill chunk stalls every decode batched with it. One engine step lasts::

    t_step = [max(step_floor, a*N_pf + b*P_pf) + step_base + c*B_dec + d*SUM_L_dec] * efficiency + step_cpu

- ``N_pf``: prefill tokens in the step; ``P_pf = sum n_i * (computed_i + n_i / 2)`` causal attention
  pairs of each chunk (``computed_i`` = tokens of that request already in KV: cache hits + earlier chunks);
- ``B_dec``: decodes in the step; ``SUM_L_dec``: their total context length;
- ``step_floor`` is the weight read every forward pays; ``step_base`` is an always-added constant (0 in
  the physics profile, BLIS's beta0 in the linear one).

A request also pays a frontend delay (HTTP, tokenization) before the engine sees it:
``frontend_base + frontend_per_token * prompt_tokens``; and a LoRA adapter costs ``lora_load`` to bring
from storage to host memory and ``lora_activate`` to copy into a GPU slot.

The default profile is Llama-3.1-8B BF16 on one H100 80 GB (measured fits, section 2). Other profiles
load from a YAML mapping whose keys are the field names below (unknown keys are an error).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml

__all__ = [
    "BLIS_LLAMA_3_1_8B_H100",
    "BUILTIN_PROFILES",
    "LLAMA_3_1_8B_H100",
    "LatencyProfile",
    "get_profile",
    "load_profile",
    "profile_from_mapping",
]


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """Coefficients of the step-time model, in seconds (and KV capacity in tokens)."""

    name: str = "llama-3.1-8b-h100"
    # GPU time of one forward.
    step_floor_s: float = 5.8e-3
    step_base_s: float = 0.0
    prefill_per_token_s: float = 21.9e-6
    prefill_per_attn_pair_s: float = 0.77e-9
    decode_per_seq_s: float = 8.3e-6
    decode_per_context_token_s: float = 41.9e-9
    # Multiplier on the GPU part (vLLM adds 5-20 % over the bare kernels: norms, RoPE, sampling).
    efficiency: float = 1.0
    # Per-step CPU time (scheduling, sampling bookkeeping), added after the efficiency factor.
    step_cpu_s: float = 0.5e-3
    # Relative standard deviation of a Gaussian multiplier on each step (0 = deterministic durations).
    jitter: float = 0.0
    # API server: HTTP + tokenization before the request reaches the engine.
    frontend_base_s: float = 1.0e-3
    frontend_per_token_s: float = 2.0e-6
    # KV-cache capacity of the GPU in tokens (29,000 blocks of 16 for 8B on an H100 at 0.92 utilisation).
    kv_cache_tokens: int = 464_000
    # LoRA adapters: storage -> host memory, and host -> GPU slot.
    lora_load_s: float = 0.1
    lora_activate_s: float = 2.0e-3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and value < 0:
                raise ValueError(f"latency profile field {f.name} must be >= 0, got {value}")
        if self.efficiency <= 0:
            raise ValueError("latency profile efficiency must be > 0")
        if self.kv_cache_tokens <= 0:
            raise ValueError("latency profile kv_cache_tokens must be > 0")

    def step_time(
        self,
        prefill_tokens: int,
        prefill_attn_pairs: float,
        decode_seqs: int,
        decode_context_tokens: int,
    ) -> float:
        """Duration of one engine step (without jitter or LoRA loading), in seconds."""
        prefill = self.prefill_per_token_s * prefill_tokens + self.prefill_per_attn_pair_s * prefill_attn_pairs
        gpu = (
            max(self.step_floor_s, prefill)
            + self.step_base_s
            + self.decode_per_seq_s * decode_seqs
            + self.decode_per_context_token_s * decode_context_tokens
        )
        return gpu * self.efficiency + self.step_cpu_s

    def frontend_delay(self, prompt_tokens: int) -> float:
        """Time from a request's arrival until the engine can schedule it."""
        return self.frontend_base_s + self.frontend_per_token_s * prompt_tokens


LLAMA_3_1_8B_H100 = LatencyProfile()

# The linear "quick approximation" of the same model and GPU (BLIS defaults.yaml, vLLM 0.8.4):
# 5.75 ms + 17.3 us per uncached prefill token + 6.0 us per decode token, no context term.
BLIS_LLAMA_3_1_8B_H100 = LatencyProfile(
    name="blis-llama-3.1-8b-h100",
    step_floor_s=0.0,
    step_base_s=5752.7e-6,
    prefill_per_token_s=17.25e-6,
    prefill_per_attn_pair_s=0.0,
    decode_per_seq_s=6.0e-6,
    decode_per_context_token_s=0.0,
    step_cpu_s=0.0,
    kv_cache_tokens=29205 * 16,
)

BUILTIN_PROFILES: dict[str, LatencyProfile] = {
    p.name: p for p in (LLAMA_3_1_8B_H100, BLIS_LLAMA_3_1_8B_H100)
}

_FIELD_TYPES: dict[str, type] = {f.name: type(f.default) for f in fields(LatencyProfile)}


def profile_from_mapping(data: Mapping[str, object], base: LatencyProfile = LLAMA_3_1_8B_H100) -> LatencyProfile:
    """A profile from a mapping of field overrides on top of ``base``."""
    unknown = sorted(set(data) - set(_FIELD_TYPES))
    if unknown:
        raise ValueError(f"unknown latency profile keys: {', '.join(unknown)}")
    values: dict[str, object] = {}
    for key, raw in data.items():
        kind = _FIELD_TYPES[key]
        if kind is str:
            values[key] = str(raw)
        elif kind is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ValueError(f"latency profile key {key} must be an integer, got {raw!r}")
            values[key] = raw
        else:
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                raise ValueError(f"latency profile key {key} must be a number, got {raw!r}")
            values[key] = float(raw)
    return replace(base, **values)  # type: ignore[arg-type]


def load_profile(path: str | Path) -> LatencyProfile:
    """A profile from a YAML file: a mapping of field overrides on the default profile."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"latency profile {path} must be a YAML mapping")
    return profile_from_mapping(data)


def get_profile(name_or_path: str) -> LatencyProfile:
    """A built-in profile by name, else a YAML file by path."""
    builtin = BUILTIN_PROFILES.get(name_or_path)
    if builtin is not None:
        return builtin
    return load_profile(name_or_path)
