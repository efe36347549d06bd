"""Mixed LoRA adapters: chat-sized requests spread over K adapters with skewed or even popularity.

Why it exists: with multi-LoRA serving an engine runs at most ``max_loras`` adapters per batch and pays a
load delay to bring in another, so *which adapters an endpoint already holds* becomes a routing signal
(GIE's ``lora-affinity-scorer``, the ``multilora-workload`` benchmark, inference-perf's
``lora_traffic_split``). Real traffic is skewed -- a few adapters take most requests, a long tail is
rare -- which is what makes affinity pay: the tail must not evict the head everywhere.

Each request draws its adapter (``lora-0`` .. ``lora-{K-1}``, or the base model with ``base_fraction``)
from a seeded RNG: ``zipf`` popularity gives adapter ``k`` weight ``1 / (k + 1) ** zipf_exponent``
(``lora-0`` most popular), ``uniform`` gives all the same weight. Lengths default to a chat-like shape;
with ``adapter_prompt_len > 0`` every adapter (and the base model) has its own random system prompt that its
requests start with -- prefix caching is per adapter (an adapter is part of vLLM's block hash), so such
prefixes are only shared within one adapter.

An HTTP client sends an adapter's request with ``"model": <adapter name>`` (vLLM's convention); the
simulated server must be started with ``--enable-lora --max-loras N --lora-modules lora-0=PATH ...``
listing :attr:`LoraWorkload.adapters` (any PATH; the simulator only names it). In the fleet simulator the
engines need ``EngineConfig(enable_lora=True, max_loras=N)``, e.g. ``uniform_fleet(n, engine_config)``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from simulator.fleet.load import Load, check_load, request_count, schedule
from simulator.fleet.workload import FleetRequest, Length, random_tokens

__all__ = ["LoraWorkload", "Popularity"]

Popularity = Literal["zipf", "uniform"]
_POPULARITIES: tuple[str, ...] = get_args(Popularity)


@dataclass(frozen=True, slots=True)
class LoraWorkload:
    # None with staged arrivals (the stages decide the count).
    num_requests: int | None
    arrivals: Load
    num_adapters: int = 8
    popularity: Popularity = "zipf"
    zipf_exponent: float = 1.0
    # Share of requests for the base model (no adapter).
    base_fraction: float = 0.0
    input_len: Length = field(default_factory=lambda: Length(256, 64, 32, 512))
    output_len: Length = field(default_factory=lambda: Length(128, 32, 16, 256))
    # Tokens of a per-adapter system prompt every request of that adapter starts with (0 = none).
    adapter_prompt_len: int = 0
    adapter_prefix: str = "lora"
    seed: int = 0

    def __post_init__(self) -> None:
        check_load(self.num_requests, self.arrivals)
        if self.num_adapters < 1:
            raise ValueError("num_adapters must be >= 1")
        if self.popularity not in _POPULARITIES:
            raise ValueError(f"unknown adapter popularity {self.popularity!r}; one of {', '.join(_POPULARITIES)}")
        if not self.zipf_exponent >= 0:
            raise ValueError("zipf_exponent must be >= 0")
        if not 0 <= self.base_fraction < 1:
            raise ValueError("base_fraction must be in [0, 1)")
        if self.adapter_prompt_len < 0:
            raise ValueError("adapter_prompt_len must be >= 0")
        if not self.adapter_prefix:
            raise ValueError("adapter_prefix must not be empty")

    @property
    def name(self) -> str:
        return "lora"

    @property
    def request_count(self) -> int:
        return request_count(self.num_requests, self.arrivals)

    @property
    def adapters(self) -> tuple[str, ...]:
        """Adapter names, most popular first (what ``--lora-modules`` must list)."""
        return tuple(f"{self.adapter_prefix}-{k}" for k in range(self.num_adapters))

    @property
    def shares(self) -> dict[str | None, float]:
        """Expected share of requests per adapter (None = the base model); sums to 1."""
        if self.popularity == "zipf":
            raw = [1.0 / (k + 1) ** self.zipf_exponent for k in range(self.num_adapters)]
        else:
            raw = [1.0] * self.num_adapters
        total = sum(raw)
        out: dict[str | None, float] = {}
        if self.base_fraction > 0:
            out[None] = self.base_fraction
        for name, w in zip(self.adapters, raw, strict=True):
            out[name] = (1 - self.base_fraction) * w / total
        return out

    @property
    def max_prompt_tokens(self) -> int:
        return self.adapter_prompt_len + self.input_len.upper

    def requests(self) -> Iterator[FleetRequest]:
        shares = self.shares
        choices = list(shares)
        cum = list(itertools.accumulate(shares.values()))
        content = random.Random(f"{self.seed}:lora:content")
        prompts = {name: random_tokens(content, self.adapter_prompt_len) for name in choices}
        groups = {name: k for k, name in enumerate(choices)}
        rng = random.Random(f"{self.seed}:lora:requests")
        times = schedule(self.num_requests, self.arrivals, random.Random(f"{self.seed}:lora:arrivals"))
        shared = self.adapter_prompt_len > 0
        for i, (t, stage) in enumerate(times):
            adapter = rng.choices(choices, cum_weights=cum)[0]
            prompt = prompts[adapter] + random_tokens(rng, self.input_len.sample(rng))
            yield FleetRequest(f"lr-{i}", t, prompt, self.output_len.sample(rng), label=adapter or "base",
                               group=groups[adapter] if shared else None, lora_name=adapter, stage=stage)

    def summary(self) -> str:
        skew = f"zipf s={self.zipf_exponent:g}" if self.popularity == "zipf" else "uniform"
        shares = self.shares
        adapters = self.adapters
        head = f"{adapters[0]} {shares[adapters[0]]:.0%}"
        if len(adapters) > 1:
            head += f" .. {adapters[-1]} {shares[adapters[-1]]:.0%}"
        base = f", base model {self.base_fraction:.0%}" if self.base_fraction else ""
        prompt = f", adapter prompt {self.adapter_prompt_len}" if self.adapter_prompt_len else ""
        return (f"lora: {self.num_adapters} adapters ({skew}: {head}){base}{prompt}, in {self.input_len}, "
                f"out {self.output_len}; {self.request_count} requests, {self.arrivals}")

    def describe(self) -> dict[str, object]:
        return {
            "type": self.name,
            "num_requests": self.request_count,
            "arrivals": self.arrivals.describe(),
            "num_adapters": self.num_adapters,
            "popularity": self.popularity,
            "zipf_exponent": self.zipf_exponent,
            "base_fraction": self.base_fraction,
            "input_len": self.input_len.describe(),
            "output_len": self.output_len.describe(),
            "adapter_prompt_len": self.adapter_prompt_len,
            "adapters": list(self.adapters),
            "seed": self.seed,
        }
