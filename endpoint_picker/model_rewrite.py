"""Model rewrites: which model a request is really sent to, chosen by weight (canaries, LoRA rollouts).

Why this module exists: an ``InferenceModelRewrite`` maps the model a client asked for to one of several
target models with weights, and the legacy ``InferenceModel`` did the same with ``targetModels``. The rules
are resolved once per change into a lookup table, so a request costs one dict lookup and one weighted draw.

Precedence follows the reference EPP: a rule that names the model exactly beats a generic rule (one with no
``matches``, which matches every model); among equals the oldest resource wins (creation time, then name),
then the first rule in it. Legacy InferenceModel entries are exact rules ranked after every exact
InferenceModelRewrite rule and before the generic ones.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RewriteTarget:
    model: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class RewriteRule:
    """``models`` empty = matches every model (a generic rule)."""

    models: tuple[str, ...]
    targets: tuple[RewriteTarget, ...]


@dataclass(frozen=True, slots=True)
class ModelRewrite:
    """One InferenceModelRewrite (or one legacy InferenceModel) of the pool."""

    name: str
    created: str  # RFC 3339 creationTimestamp: sorts chronologically as text
    rules: tuple[RewriteRule, ...]


@dataclass(frozen=True, slots=True)
class RewriteDecision:
    rewrite_name: str
    target: str


@dataclass(frozen=True, slots=True)
class _Choice:
    rewrite_name: str
    models: tuple[str, ...]
    cumulative: tuple[int, ...] = field(default=())

    @classmethod
    def of(cls, name: str, targets: tuple[RewriteTarget, ...]) -> _Choice:
        weights = [max(1, t.weight) for t in targets]
        return cls(name, tuple(t.model for t in targets), tuple(itertools.accumulate(weights)))

    def draw(self, rng: random.Random) -> str:
        if len(self.models) == 1:
            return self.models[0]
        point = rng.random() * self.cumulative[-1]
        return self.models[bisect.bisect_right(self.cumulative, point)]


def _ordered(rewrites: Iterable[ModelRewrite]) -> list[ModelRewrite]:
    return sorted(rewrites, key=lambda r: (r.created, r.name))


class ModelRewrites:
    """The pool's rewrite table; :meth:`choose` is the request-path call."""

    def __init__(self) -> None:
        self._exact: dict[str, _Choice] = {}
        self._generic: _Choice | None = None

    def replace(self, rewrites: Iterable[ModelRewrite], legacy: Iterable[ModelRewrite] = ()) -> None:
        exact: dict[str, _Choice] = {}
        generic: _Choice | None = None
        ordered = _ordered(rewrites)
        for rewrite in [*ordered, *_ordered(legacy)]:
            for rule in rewrite.rules:
                if not rule.targets:
                    continue
                for model in rule.models:
                    exact.setdefault(model, _Choice.of(rewrite.name, rule.targets))
        for rewrite in ordered:
            for rule in rewrite.rules:
                if rule.targets and not rule.models and generic is None:
                    generic = _Choice.of(rewrite.name, rule.targets)
        self._exact, self._generic = exact, generic

    def __bool__(self) -> bool:
        return bool(self._exact) or self._generic is not None

    def choose(self, model: str, rng: random.Random) -> RewriteDecision | None:
        """The target for a request for ``model``, or None when no rule applies."""
        choice = self._exact.get(model) or self._generic
        if choice is None:
            return None
        return RewriteDecision(choice.rewrite_name, choice.draw(rng))
