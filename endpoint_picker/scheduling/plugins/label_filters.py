"""Filters on endpoint labels: ``label-selector-filter`` (Kubernetes selector semantics) and ``by-label``."""

from __future__ import annotations

from dataclasses import dataclass, field

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, EndpointState, Filter
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str = ""
    operator: str = "In"
    values: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not self.key:
            raise ParamError("key", "required")
        if self.operator not in _OPERATORS:
            raise ParamError("operator", f"must be one of {', '.join(_OPERATORS)}")
        if self.operator in ("In", "NotIn") and not self.values:
            raise ParamError("values", f"required for operator {self.operator}")

    def matches(self, labels: dict[str, str] | object) -> bool:
        present = self.key in labels  # type: ignore[operator]
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        value = labels.get(self.key) if present else None  # type: ignore[attr-defined]
        if self.operator == "In":
            return present and value in self.values
        return not present or value not in self.values


@dataclass(frozen=True, slots=True)
class LabelSelectorParams:
    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: list[Requirement] = field(default_factory=list)


@register("by-label-selector")
class LabelSelectorFilter(Filter):
    type_name = "label-selector-filter"
    Params = LabelSelectorParams

    def __init__(self, name: str, params: LabelSelectorParams, context: PluginContext) -> None:
        super().__init__(name)
        self._labels = {str(k): str(v) for k, v in params.match_labels.items()}
        self._exprs = params.match_expressions

    def filter(self, cycle: CycleState, request: InferenceRequest,
               endpoints: list[EndpointState]) -> list[EndpointState]:
        out = []
        for e in endpoints:
            labels = e.endpoint.labels
            if all(labels.get(k) == v for k, v in self._labels.items()) and all(
                    r.matches(labels) for r in self._exprs):
                out.append(e)
        return out


@dataclass(frozen=True, slots=True)
class ByLabelParams:
    label: str = ""
    valid_values: list[str] = field(default_factory=list)
    allows_no_label: bool = False

    def check(self) -> None:
        if not self.label:
            raise ParamError("label", "required")


@register()
class ByLabelFilter(Filter):
    type_name = "by-label"
    Params = ByLabelParams

    def __init__(self, name: str, params: ByLabelParams, context: PluginContext) -> None:
        super().__init__(name)
        self._p = params

    def filter(self, cycle: CycleState, request: InferenceRequest,
               endpoints: list[EndpointState]) -> list[EndpointState]:
        p = self._p
        out = []
        for e in endpoints:
            value = e.endpoint.labels.get(p.label)
            if (value is None and p.allows_no_label) or (value is not None and value in p.valid_values):
                out.append(e)
        return out
