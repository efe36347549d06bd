"""Objectives: the priority a request gets, from the InferenceObjective it names or its model's criticality.

Why this module exists: priority decides who waits and who is shed under load, and it comes from two API
generations. An ``InferenceObjective`` (named by the request header ``x-gateway-inference-objective``) carries
``spec.priority`` (higher is more important, negative is sheddable, unset is 0). The legacy ``InferenceModel``
carried a ``criticality`` per model name instead; it is mapped onto the same scale (Critical 1, Standard 0,
Sheddable -1). A named objective wins; otherwise the model's criticality; otherwise 0. Like the datastore,
the tables are replaced whole by their source and read without locks on the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

DEFAULT_PRIORITY = 0
CRITICALITY_PRIORITY: Mapping[str, int] = MappingProxyType({"Critical": 1, "Standard": 0, "Sheddable": -1})


@dataclass(frozen=True, slots=True)
class Objective:
    """One InferenceObjective of the pool."""

    name: str
    priority: int = DEFAULT_PRIORITY


class Objectives:
    """The pool's objectives by name and the legacy per-model priorities."""

    def __init__(self) -> None:
        self._by_name: Mapping[str, Objective] = MappingProxyType({})
        self._by_model: Mapping[str, int] = MappingProxyType({})

    def replace(self, objectives: Iterable[Objective]) -> None:
        self._by_name = MappingProxyType({o.name: o for o in objectives})

    def replace_model_priorities(self, priorities: Mapping[str, int]) -> None:
        """Priorities by model name, from legacy InferenceModel criticality."""
        self._by_model = MappingProxyType(dict(priorities))

    def get(self, name: str) -> Objective | None:
        return self._by_name.get(name)

    def __len__(self) -> int:
        return len(self._by_name)

    def priority(self, objective: str | None, model: str) -> int:
        if objective:
            found = self._by_name.get(objective)
            if found is not None:
                return found.priority
        return self._by_model.get(model, DEFAULT_PRIORITY)
