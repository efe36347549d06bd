"""Objectives (priority), model-rewrite precedence and weights, and reading the three CRDs."""

from __future__ import annotations

import collections
import random

import pytest

from endpoint_picker.datastore.kubernetes.objective_resources import (
    ResourceError,
    legacy_models_for_pool,
    objectives_for_pool,
    parse_model_rewrite,
    rewrites_for_pool,
)
from endpoint_picker.model_rewrite import ModelRewrite, ModelRewrites, RewriteRule, RewriteTarget
from endpoint_picker.objectives import Objective, Objectives


def _rw(name: str, created: str, *rules: tuple[tuple[str, ...], tuple[tuple[str, int], ...]]) -> ModelRewrite:
    return ModelRewrite(name, created, tuple(
        RewriteRule(models, tuple(RewriteTarget(m, w) for m, w in targets)) for models, targets in rules))


def test_priority_resolution() -> None:
    o = Objectives()
    o.replace([Objective("premium", 5), Objective("batch", -2)])
    o.replace_model_priorities({"legacy-critical": 1})
    assert o.priority("premium", "legacy-critical") == 5  # a named objective wins
    assert o.priority("unknown", "legacy-critical") == 1
    assert o.priority(None, "m") == 0
    assert o.priority("batch", "m") == -2


def test_exact_beats_generic_oldest_wins_then_first_rule() -> None:
    rng = random.Random(0)
    table = ModelRewrites()
    table.replace([
        _rw("generic", "2026-01-01T00:00:00Z", ((), (("catch-all", 1),))),
        _rw("newer", "2026-03-01T00:00:00Z", (("llama",), (("from-newer", 1),))),
        _rw("older", "2026-02-01T00:00:00Z", (("llama",), (("from-older", 1),)), (("llama",), (("second", 1),))),
    ])
    assert table.choose("llama", rng).target == "from-older"
    assert table.choose("llama", rng).rewrite_name == "older"
    assert table.choose("anything", rng).target == "catch-all"
    empty = ModelRewrites()
    assert not empty and empty.choose("llama", rng) is None


def test_legacy_rules_rank_after_exact_rewrites_and_before_generic() -> None:
    rng = random.Random(0)
    table = ModelRewrites()
    table.replace([_rw("generic", "2026-01-01T00:00:00Z", ((), (("catch-all", 1),))),
                   _rw("exact", "2026-01-02T00:00:00Z", (("a",), (("a-new", 1),)))],
                  legacy=[_rw("legacy", "2025-01-01T00:00:00Z", (("a",), (("a-old", 1),)), (("b",), (("b-old", 1),)))])
    assert table.choose("a", rng).target == "a-new"
    assert table.choose("b", rng).target == "b-old"
    assert table.choose("c", rng).target == "catch-all"


def test_weighted_split() -> None:
    table = ModelRewrites()
    table.replace([_rw("canary", "t", (("m",), (("stable", 90), ("canary", 10))))])
    rng = random.Random(42)
    counts = collections.Counter(table.choose("m", rng).target for _ in range(5000))
    assert 0.07 < counts["canary"] / 5000 < 0.13


def test_parse_rewrite_and_reject_bad_ones() -> None:
    obj = {"metadata": {"name": "r", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {
        "poolRef": {"name": "p"},
        "rules": [{"matches": [{"model": {"value": "m"}}], "targets": [{"modelRewrite": "t", "weight": 3}]},
                  {"targets": [{"modelRewrite": "u"}]}]}}
    rewrite = parse_model_rewrite(obj)
    assert rewrite.rules[0] == RewriteRule(("m",), (RewriteTarget("t", 3),))
    assert rewrite.rules[1] == RewriteRule((), (RewriteTarget("u", 1),))
    bad = {"metadata": {"name": "bad"}, "spec": {"poolRef": {"name": "p"}, "rules": [
        {"matches": [{"model": {"type": "RegularExpression", "value": ".*"}}], "targets": [{"modelRewrite": "t"}]}]}}
    with pytest.raises(ResourceError, match="RegularExpression"):
        parse_model_rewrite(bad)
    # A bad object is skipped, the good ones stay.
    assert [r.name for r in rewrites_for_pool([obj, bad], "p")] == ["r"]
    assert rewrites_for_pool([obj], "other") == []


def test_objectives_for_pool_skips_bad_and_foreign() -> None:
    objs = [{"metadata": {"name": "a"}, "spec": {"priority": 2, "poolRef": {"name": "p"}}},
            {"metadata": {"name": "b"}, "spec": {"poolRef": {"name": "p", "kind": "InferencePool"}}},
            {"metadata": {"name": "c"}, "spec": {"priority": "high", "poolRef": {"name": "p"}}},
            {"metadata": {"name": "d"}, "spec": {"priority": 1, "poolRef": {"name": "q"}}}]
    assert objectives_for_pool(objs, "p") == [Objective("a", 2), Objective("b", 0)]


def test_legacy_inference_models_oldest_claim_wins() -> None:
    objs = [{"metadata": {"name": "new", "creationTimestamp": "2026-02-01T00:00:00Z"},
             "spec": {"modelName": "m", "criticality": "Critical", "poolRef": {"name": "p"}}},
            {"metadata": {"name": "old", "creationTimestamp": "2026-01-01T00:00:00Z"},
             "spec": {"modelName": "m", "criticality": "Sheddable", "poolRef": {"name": "p"},
                      "targetModels": [{"name": "m-a", "weight": 50}, {"name": "m-b", "weight": 50}]}},
            {"metadata": {"name": "std"}, "spec": {"modelName": "s", "poolRef": {"name": "p"}}}]
    priorities, rewrites = legacy_models_for_pool(objs, "p")
    assert priorities == {"m": -1, "s": 0}
    assert [r.name for r in rewrites] == ["old"]
