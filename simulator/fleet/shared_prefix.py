"""inference-perf's ``shared_prefix`` workload: groups of prompts that share a system prompt.

Why it exists: it is the workload GIE and llm-d benchmark prefix-aware routing with
(``benchmarking/prefix-cache-aware/*.yaml``: 150 groups x 5 prompts, 6000-token system prompt, 1200-token
question, 1000 output tokens), so the fleet simulator must produce the same shape. Generation follows
inference-perf (``inference_perf/datagen``): one random-token system prompt of exact length per group; per
prompt a random-token question; the prompt list shuffled with a seeded RNG; request ``i`` uses prompt
``i % len(prompts)``; ``max_tokens = output_len`` with ``ignore_eos``. Token ids are drawn from the built-in
tokenizer's words rather than by re-tokenizing text, so lengths are exact by construction. Driven by one
``Arrivals`` rate and ``num_requests``, or by ``Stages`` (see ``simulator.fleet.load``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from simulator.fleet.load import Load, check_load, request_count, schedule
from simulator.fleet.workload import FleetRequest, Length, random_tokens

__all__ = ["SharedPrefixWorkload"]


@dataclass(frozen=True, slots=True)
class SharedPrefixWorkload:
    # None with staged arrivals (the stages decide the count).
    num_requests: int | None
    arrivals: Load
    num_groups: int = 10
    num_prompts_per_group: int = 10
    system_prompt_len: int = 100
    question_len: Length = field(default_factory=lambda: Length(50))
    output_len: Length = field(default_factory=lambda: Length(50))
    seed: int = 0

    def __post_init__(self) -> None:
        check_load(self.num_requests, self.arrivals)
        if self.num_groups < 1 or self.num_prompts_per_group < 1:
            raise ValueError("num_groups and num_prompts_per_group must be >= 1")
        if self.system_prompt_len < 0:
            raise ValueError("system_prompt_len must be >= 0")

    @property
    def name(self) -> str:
        return "shared-prefix"

    @property
    def request_count(self) -> int:
        return request_count(self.num_requests, self.arrivals)

    @property
    def max_prompt_tokens(self) -> int:
        return self.system_prompt_len + self.question_len.upper

    def _prompts(self) -> list[tuple[int, list[int], int]]:
        """(group, prompt token ids, output length) per prompt, in inference-perf's shuffled order."""
        rng = random.Random(f"{self.seed}:shared-prefix:content")
        prompts: list[tuple[int, list[int], int]] = []
        for group in range(self.num_groups):
            system = random_tokens(rng, self.system_prompt_len)
            for _ in range(self.num_prompts_per_group):
                question = random_tokens(rng, self.question_len.sample(rng))
                prompts.append((group, system + question, self.output_len.sample(rng)))
        random.Random(f"{self.seed}:shared-prefix:shuffle").shuffle(prompts)
        return prompts

    def requests(self) -> Iterator[FleetRequest]:
        prompts = self._prompts()
        times = schedule(self.num_requests, self.arrivals, random.Random(f"{self.seed}:shared-prefix:arrivals"))
        for i, (t, stage) in enumerate(times):
            group, tokens, out = prompts[i % len(prompts)]
            yield FleetRequest(f"sp-{i}", t, tokens, out, label=f"group-{group}", group=group, stage=stage)

    def summary(self) -> str:
        return (f"shared-prefix: {self.num_groups} groups x {self.num_prompts_per_group} prompts, system prompt "
                f"{self.system_prompt_len}, question {self.question_len}, output {self.output_len}; "
                f"{self.request_count} requests, {self.arrivals}")

    def describe(self) -> dict[str, object]:
        return {
            "type": self.name,
            "num_requests": self.request_count,
            "arrivals": self.arrivals.describe(),
            "num_groups": self.num_groups,
            "num_prompts_per_group": self.num_prompts_per_group,
            "system_prompt_len": self.system_prompt_len,
            "question_len": self.question_len.describe(),
            "output_len": self.output_len.describe(),
            "seed": self.seed,
        }
