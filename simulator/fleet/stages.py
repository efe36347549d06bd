"""Staged arrivals: rising-rate stages back to back, as inference-perf's ``load.stages[{rate, duration}]``.

Why it exists: router comparisons sweep the offered load up to and past saturation (GIE's 10 -> 60 QPS
ladder, llm-d's staged rates) and report per stage. A single :class:`~simulator.fleet.arrivals.Arrivals`
rate cannot express that, and a request must carry the stage it was sent in so results can be split.

Semantics (virtual time, open loop):

- stage ``k`` covers ``[start_k, start_k + duration_k)`` where ``start_0 = start`` and every stage begins
  where the previous one ends -- requests still in flight at a stage's end do not delay the next stage;
- a stage sends exactly ``round(rate x duration)`` requests (half up), so the request count of a run is
  known before it starts (``num_requests``), as inference-perf sizes a stage;
- ``constant``: evenly spaced, ``start_k + j / rate``;
- ``poisson``: the stage's arrivals are those of a Poisson process *conditioned on* that count, i.e. that
  many uniform times over the stage's window, sorted -- so every arrival lies inside its stage and the
  count is exact, and the gaps are (approximately) exponential with mean ``1 / rate``.

Everything is drawn from the ``random.Random`` the caller passes, so a seeded workload replays exactly.
``Stages.parse`` reads the CLI form ``[poisson:|constant:]RATExDURATION[,RATExDURATION...]``, e.g.
``"poisson:5x30,10x30,15x30"`` (5 req/s for 30 s, then 10 req/s for 30 s, then 15 req/s for 30 s).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import get_args

from simulator.fleet.arrivals import ArrivalKind

__all__ = ["Stage", "Stages"]

_KINDS: tuple[str, ...] = get_args(ArrivalKind)


@dataclass(frozen=True, slots=True)
class Stage:
    """``rate`` requests per virtual second for ``duration`` virtual seconds."""

    rate: float
    duration: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"stage rate must be a finite number > 0, got {self.rate!r}")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError(f"stage duration must be a finite number of seconds > 0, got {self.duration!r}")
        if self.count < 1:
            raise ValueError(f"stage {self.rate:g} req/s x {self.duration:g} s sends no request "
                             f"(rate x duration = {self.rate * self.duration:g} < 0.5)")

    @property
    def count(self) -> int:
        """Requests the stage sends: rate x duration rounded half up."""
        return math.floor(self.rate * self.duration + 0.5)

    def __str__(self) -> str:
        return f"{self.rate:g}x{self.duration:g}s"


@dataclass(frozen=True, slots=True)
class Stages:
    """Stages back to back from ``start``; see the module docstring."""

    stages: tuple[Stage, ...]
    kind: ArrivalKind = "poisson"
    start: float = 0.0

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("staged arrivals need at least one stage")
        if self.kind not in _KINDS:
            raise ValueError(f"unknown arrival kind {self.kind!r}; one of {', '.join(_KINDS)}")
        # Accept any sequence of Stage (or (rate, duration) pairs) but store a tuple of Stage.
        object.__setattr__(self, "stages", tuple(s if isinstance(s, Stage) else Stage(*s) for s in self.stages))

    @classmethod
    def of(cls, pairs: Sequence[tuple[float, float]], kind: ArrivalKind = "poisson", start: float = 0.0) -> Stages:
        """Stages from ``(rate, duration)`` pairs."""
        return cls(tuple(Stage(rate, duration) for rate, duration in pairs), kind, start)

    @classmethod
    def parse(cls, text: str, default_kind: ArrivalKind = "poisson") -> Stages:
        """``[poisson:|constant:]RATExDURATION[,RATExDURATION...]``; durations may end in ``s``.

        ``ValueError`` with a message that names the offending part.
        """
        spec = text.strip()
        kind: str = default_kind
        if ":" in spec:
            kind, _, spec = (p.strip() for p in spec.partition(":"))
            if kind not in _KINDS:
                raise ValueError(f"bad stages {text!r}: unknown arrival kind {kind!r} before ':' "
                                 f"(one of {', '.join(_KINDS)})")
        if not spec:
            raise ValueError(f"bad stages {text!r}: no stage given; expected RATExDURATION[,RATExDURATION...], "
                             "e.g. poisson:5x30,10x30")
        stages: list[Stage] = []
        for k, part in enumerate(spec.split(","), start=1):
            item = part.strip().lower()
            rate_text, sep, duration_text = item.partition("x")
            duration_text = duration_text.removesuffix("s")
            if not sep or not rate_text or not duration_text:
                raise ValueError(f"bad stages {text!r}: stage {k} is {part.strip()!r}, expected RATExDURATION "
                                 "(requests per second x seconds), e.g. 10x30")
            try:
                rate, duration = float(rate_text), float(duration_text)
            except ValueError:
                raise ValueError(f"bad stages {text!r}: stage {k} ({part.strip()!r}) needs numbers for rate and "
                                 "duration") from None
            try:
                stages.append(Stage(rate, duration))
            except ValueError as exc:
                raise ValueError(f"bad stages {text!r}: stage {k}: {exc}") from None
        return cls(tuple(stages), kind, 0.0)  # type: ignore[arg-type]

    # -- derived ------------------------------------------------------------------------------------

    @property
    def counts(self) -> tuple[int, ...]:
        """Requests per stage."""
        return tuple(s.count for s in self.stages)

    @property
    def num_requests(self) -> int:
        """Requests of all stages together."""
        return sum(self.counts)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.stages)

    @property
    def boundaries(self) -> tuple[tuple[float, float], ...]:
        """``(start, end)`` of every stage in virtual seconds."""
        out: list[tuple[float, float]] = []
        t = self.start
        for s in self.stages:
            out.append((t, t + s.duration))
            t += s.duration
        return tuple(out)

    def times(self, rng: random.Random) -> Iterator[tuple[float, int]]:
        """``(arrival time, stage index)`` for every request of every stage, non-decreasing in time."""
        poisson = self.kind == "poisson"
        for k, (stage, (lo, _)) in enumerate(zip(self.stages, self.boundaries, strict=True)):
            n = stage.count
            if poisson:
                offsets = sorted(rng.random() * stage.duration for _ in range(n))
            else:
                gap = 1.0 / stage.rate
                offsets = [j * gap for j in range(n)]
            for offset in offsets:
                yield lo + offset, k

    def __str__(self) -> str:
        return f"{self.kind} stages {', '.join(str(s) for s in self.stages)} (req/s x s)"

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "stages": [{"rate": s.rate, "duration": s.duration} for s in self.stages]}
