"""Reading InferenceObjective, InferenceModelRewrite and legacy InferenceModel objects for one pool.

Why this module exists: these custom resources are translated into the picker's plain models
(:mod:`endpoint_picker.objectives`, :mod:`endpoint_picker.model_rewrite`) here and only here. Each names its
pool with ``spec.poolRef`` (same namespace; ``kind`` defaults to InferencePool); objects for other pools are
skipped, and a malformed object is logged and skipped rather than emptying the table.

- InferenceObjective: ``spec.priority`` (unset = 0).
- InferenceModelRewrite: ``spec.rules[].matches[].model{type: Exact, value}`` and
  ``spec.rules[].targets[]{modelRewrite, weight}``.
- InferenceModel (legacy): ``spec.modelName``, ``spec.criticality`` (-> priority), ``spec.targetModels[]{name,
  weight}`` (-> an exact rewrite rule). Two InferenceModels claiming one model name: the oldest wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from endpoint_picker.datastore.kubernetes.api import Resource
from endpoint_picker.model_rewrite import ModelRewrite, RewriteRule, RewriteTarget
from endpoint_picker.objectives import CRITICALITY_PRIORITY, DEFAULT_PRIORITY, Objective

log = logging.getLogger(__name__)

OBJECTIVE_GROUP = "inference.networking.x-k8s.io"
OBJECTIVE_GROUPS = (OBJECTIVE_GROUP, "llm-d.ai")
LEGACY_GROUP = "inference.networking.x-k8s.io"


def objective_resource(group: str) -> Resource:
    return Resource(group, "v1alpha2", "inferenceobjectives", "InferenceObjective")


def model_rewrite_resource(group: str) -> Resource:
    return Resource(group, "v1alpha2", "inferencemodelrewrites", "InferenceModelRewrite")


INFERENCE_MODEL = Resource(LEGACY_GROUP, "v1alpha2", "inferencemodels", "InferenceModel")


class ResourceError(ValueError):
    pass


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("name", "")), str(meta.get("creationTimestamp", ""))


def refers_to_pool(obj: Mapping[str, Any], pool_name: str) -> bool:
    ref = (obj.get("spec") or {}).get("poolRef") or {}
    if not isinstance(ref, Mapping):
        return False
    return ref.get("name") == pool_name and ref.get("kind", "InferencePool") in ("", "InferencePool")


def parse_objective(obj: Mapping[str, Any]) -> Objective:
    name, _ = _meta(obj)
    priority = (obj.get("spec") or {}).get("priority")
    if priority is None:
        return Objective(name, DEFAULT_PRIORITY)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ResourceError(f"spec.priority must be an integer, got {priority!r}")
    return Objective(name, priority)


def _weight(raw: Any, where: str) -> int:
    if raw is None:
        return 1
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= 1_000_000:
        raise ResourceError(f"{where} must be an integer in 1..1000000, got {raw!r}")
    return raw


def parse_model_rewrite(obj: Mapping[str, Any]) -> ModelRewrite:
    name, created = _meta(obj)
    rules: list[RewriteRule] = []
    for i, rule in enumerate((obj.get("spec") or {}).get("rules") or ()):
        models: list[str] = []
        for j, match in enumerate(rule.get("matches") or ()):
            model = (match or {}).get("model") or {}
            kind = model.get("type", "Exact")
            if kind != "Exact":
                raise ResourceError(f"spec.rules[{i}].matches[{j}].model.type {kind!r} is not supported (Exact)")
            value = model.get("value")
            if not isinstance(value, str) or not value:
                raise ResourceError(f"spec.rules[{i}].matches[{j}].model.value must be a model name")
            models.append(value)
        targets: list[RewriteTarget] = []
        for j, target in enumerate(rule.get("targets") or ()):
            rewrite = (target or {}).get("modelRewrite")
            if not isinstance(rewrite, str) or not rewrite:
                raise ResourceError(f"spec.rules[{i}].targets[{j}].modelRewrite must be a model name")
            targets.append(RewriteTarget(rewrite, _weight(target.get("weight"), f"spec.rules[{i}].targets[{j}]"
                                                          ".weight")))
        rules.append(RewriteRule(tuple(models), tuple(targets)))
    return ModelRewrite(name, created, tuple(rules))


def parse_inference_model(obj: Mapping[str, Any]) -> tuple[str, int, ModelRewrite | None]:
    """``(model name, priority, rewrite or None)`` of a legacy InferenceModel."""
    name, created = _meta(obj)
    spec = obj.get("spec") or {}
    model = spec.get("modelName")
    if not isinstance(model, str) or not model:
        raise ResourceError("spec.modelName must be a model name")
    criticality = spec.get("criticality") or "Standard"
    if criticality not in CRITICALITY_PRIORITY:
        raise ResourceError(f"spec.criticality {criticality!r} is not one of {sorted(CRITICALITY_PRIORITY)}")
    targets = []
    for j, target in enumerate(spec.get("targetModels") or ()):
        target_name = (target or {}).get("name")
        if not isinstance(target_name, str) or not target_name:
            raise ResourceError(f"spec.targetModels[{j}].name must be a model name")
        targets.append(RewriteTarget(target_name, _weight(target.get("weight"), f"spec.targetModels[{j}].weight")))
    rewrite = ModelRewrite(name, created, (RewriteRule((model,), tuple(targets)),)) if targets else None
    return model, CRITICALITY_PRIORITY[criticality], rewrite


def _for_pool(objects: Iterable[Mapping[str, Any]], pool_name: str) -> list[Mapping[str, Any]]:
    return sorted((o for o in objects if refers_to_pool(o, pool_name)), key=lambda o: (_meta(o)[1], _meta(o)[0]))


def objectives_for_pool(objects: Iterable[Mapping[str, Any]], pool_name: str) -> list[Objective]:
    out = []
    for obj in _for_pool(objects, pool_name):
        try:
            out.append(parse_objective(obj))
        except ResourceError as exc:
            log.warning("skipping InferenceObjective %s: %s", _meta(obj)[0], exc)
    return out


def rewrites_for_pool(objects: Iterable[Mapping[str, Any]], pool_name: str) -> list[ModelRewrite]:
    out = []
    for obj in _for_pool(objects, pool_name):
        try:
            out.append(parse_model_rewrite(obj))
        except ResourceError as exc:
            log.warning("skipping InferenceModelRewrite %s: %s", _meta(obj)[0], exc)
    return out


def legacy_models_for_pool(objects: Iterable[Mapping[str, Any]],
                           pool_name: str) -> tuple[dict[str, int], list[ModelRewrite]]:
    """Priorities by model name and rewrites from legacy InferenceModels; the oldest claim on a name wins."""
    priorities: dict[str, int] = {}
    rewrites: list[ModelRewrite] = []
    for obj in _for_pool(objects, pool_name):
        try:
            model, priority, rewrite = parse_inference_model(obj)
        except ResourceError as exc:
            log.warning("skipping InferenceModel %s: %s", _meta(obj)[0], exc)
            continue
        if model in priorities:
            log.warning("InferenceModel %s: model name %r is already claimed by an older InferenceModel",
                        _meta(obj)[0], model)
            continue
        priorities[model] = priority
        if rewrite is not None:
            rewrites.append(rewrite)
    return priorities, rewrites
