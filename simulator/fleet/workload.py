"""What a fleet simulation is fed: requests with arrival times, and the rules that generate them.

Why it exists: comparing routers is only meaningful when every router sees the very same requests at the
very same times. A ``Workload`` is therefore a *recipe*, not a stream: ``requests()`` returns a fresh
iterator that yields the identical sequence on every call (everything is drawn from ``random.Random``
seeded with strings derived from the workload's seed), in non-decreasing arrival order.

Prompts are made of the built-in tokenizer's output words (one word = one token id, see
``simulator.engine.tokenizer``), so ``FleetRequest.text`` decodes back to text that re-tokenizes to the
same ids -- what a text-based router (the picker's prefix index) needs to see the same prefixes the
simulated engines cache.

A request also carries what an HTTP client needs to replay it against real servers (``benchmarks``):
multi-turn requests (``chat`` set) go to ``/v1/chat/completions`` with ``messages()``, all others to
``/v1/completions`` with ``text``; a request naming ``lora_name`` sends the adapter's name as ``model``
(vLLM's convention: ``--lora-modules NAME=PATH`` makes NAME a model); ``max_tokens`` with ``ignore_eos``.
For chat requests ``prompt_token_ids`` are exactly what the simulator's chat template
(``simulator.engine.chat_template``) renders from ``messages()`` and the tokenizer encodes, so the virtual-time
fleet and an HTTP run see the same tokens.
"""

from __future__ import annotations

import array
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from simulator.engine.chat_template import render_chat
from simulator.engine.request import EngineRequest
from simulator.engine.tokenizer import OUTPUT_TOKEN_IDS, decode

__all__ = ["ChatMessage", "FleetRequest", "Length", "Workload", "random_tokens"]

# One chat message: (role, content token ids); the content decodes to text with ``decode``.
ChatMessage = tuple[str, Sequence[int]]


@dataclass(slots=True)
class FleetRequest:
    """One request of a workload: what a router sees and what an engine runs."""

    request_id: str
    arrival_time: float
    prompt_token_ids: Sequence[int]
    # Tokens to generate; requests run to this length (inference-perf's ``ignore_eos`` practice).
    max_tokens: int
    # A class label for reports and routers ("heavy", "light", "prefill-heavy", ...).
    label: str = ""
    # Shared-prefix group (the system prompt it starts with), or None.
    group: int | None = None
    # The adapter to run (sent as the request's ``model``), or None for the base model.
    lora_name: str | None = None
    # Index of the arrival stage the request was sent in (0 with a single rate).
    stage: int = 0
    # Conversation id for session affinity (multi-turn chat), or None.
    session: str | None = None
    # Chat structure of a multi-turn request (system, user, assistant, ..., user), or None for a plain prompt.
    chat: tuple[ChatMessage, ...] | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def text(self) -> str:
        """The prompt as text that re-tokenizes to ``prompt_token_ids``: the words of the built-in tokenizer, or
        for a chat request the chat template's rendering of ``messages()``."""
        messages = self.messages()
        if messages is not None:
            return render_chat(messages)
        return decode(self.prompt_token_ids)

    def messages(self) -> list[dict[str, str]] | None:
        """OpenAI chat ``messages`` for ``/v1/chat/completions``, or None: send ``text`` to ``/v1/completions``."""
        if self.chat is None:
            return None
        return [{"role": role, "content": decode(ids)} for role, ids in self.chat]

    @property
    def api_path(self) -> str:
        """The OpenAI endpoint an HTTP client sends this request to."""
        return "/v1/chat/completions" if self.chat is not None else "/v1/completions"

    def engine_request(self) -> EngineRequest:
        return EngineRequest(
            request_id=self.request_id,
            prompt_token_ids=self.prompt_token_ids,
            max_tokens=self.max_tokens,
            arrival_time=self.arrival_time,
            lora_name=self.lora_name,
        )


class Workload(Protocol):
    """A reproducible request source."""

    @property
    def name(self) -> str: ...

    @property
    def request_count(self) -> int:
        """How many requests ``requests()`` yields (given, or following from staged arrivals)."""
        ...

    def requests(self) -> Iterator[FleetRequest]:
        """A fresh iterator over the same requests every time, arrival times non-decreasing."""
        ...

    def describe(self) -> Mapping[str, object]:
        """The parameters that define the workload (for JSON reports)."""
        ...

    def summary(self) -> str:
        """The same in one line (for table captions)."""
        ...


@dataclass(frozen=True, slots=True)
class Length:
    """A token count: fixed (``std_dev`` 0) or Gaussian around ``mean`` clipped to ``[min, max]``.

    The shape of inference-perf's ``question_distribution`` / ``output_distribution``
    (``{min, max, mean, std_dev}``).
    """

    mean: int
    std_dev: float = 0.0
    min: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        if self.mean < 1 or self.min < 1:
            raise ValueError("lengths must be >= 1")
        if self.std_dev < 0:
            raise ValueError("std_dev must be >= 0")
        if self.max is not None and self.max < self.min:
            raise ValueError("max must be >= min")

    @classmethod
    def parse(cls, text: str) -> Length:
        """``"128"`` (fixed) or ``"mean,std_dev[,min[,max]]"``."""
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) == 1:
                return cls(int(parts[0]))
            if 2 <= len(parts) <= 4:
                mean, sd = int(parts[0]), float(parts[1])
                lo = int(parts[2]) if len(parts) > 2 else 1
                hi = int(parts[3]) if len(parts) > 3 else None
                return cls(mean, sd, lo, hi)
        except ValueError as exc:
            raise ValueError(f"bad length {text!r}: {exc}") from None
        raise ValueError(f"bad length {text!r}: expected N or mean,std_dev[,min[,max]]")

    @property
    def upper(self) -> int:
        """The largest value ``sample`` can return (mean + 4 sd when unbounded)."""
        if self.std_dev == 0:
            return max(self.mean, self.min)
        if self.max is not None:
            return self.max
        return max(self.min, int(self.mean + 4 * self.std_dev + 0.5))

    def sample(self, rng: random.Random) -> int:
        if self.std_dev == 0:
            value = self.mean
        else:
            value = round(rng.gauss(self.mean, self.std_dev))
        value = max(self.min, value)
        return min(value, self.upper)

    def __str__(self) -> str:
        if self.std_dev == 0:
            return str(self.mean)
        return f"{self.mean}\u00b1{self.std_dev:g} [{self.min}..{self.upper}]"

    def describe(self) -> object:
        if self.std_dev == 0:
            return self.mean
        return {"mean": self.mean, "std_dev": self.std_dev, "min": self.min, "max": self.upper}


# 16-bit random value -> output word id (bias from 65536 % len(OUTPUT_TOKEN_IDS) is irrelevant here).
_WORD_OF_U16: tuple[int, ...] = tuple(OUTPUT_TOKEN_IDS[i % len(OUTPUT_TOKEN_IDS)] for i in range(65536))


def random_tokens(rng: random.Random, count: int) -> list[int]:
    """``count`` token ids drawn (near-)uniformly from the tokenizer's output words."""
    values = array.array("H")
    values.frombytes(rng.randbytes(2 * count))
    if sys.byteorder == "big":
        values.byteswap()  # the same ids on every host
    return list(map(_WORD_OF_U16.__getitem__, values))
