"""EndpointPickerConfig loading: upstream configs load unchanged, defaults are injected, errors name the field."""

from __future__ import annotations

import pytest

from endpoint_picker.config_error import ConfigError
from endpoint_picker.scheduling import default_config, load_config_text
from endpoint_picker.scheduling.config import UPSTREAM_DEFAULT_CONFIG
from endpoint_picker.scheduling.registry import known_types

UPSTREAM_DEFAULT = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- {type: queue-scorer}
- {type: kv-cache-utilization-scorer}
- {type: prefix-cache-scorer}
- {type: metrics-data-source}
- {type: core-metrics-extractor}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: queue-scorer, weight: 2}, {pluginRef: kv-cache-utilization-scorer, weight: 2},
            {pluginRef: prefix-cache-scorer, weight: 3}]
dataLayer:
  sources: [{pluginRef: metrics-data-source, extractors: [{pluginRef: core-metrics-extractor}]}]
"""

LLM_D_PRECISE_STYLE = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: approx-prefix-cache-producer
  parameters: {blockSizeTokens: 64, maxPrefixBlocksToMatch: 128, lruCapacityPerServer: 10000, autoTune: false}
- type: prefix-cache-scorer
  parameters: {matchLengthWeight: 0.3}
- type: load-aware-scorer
  parameters: {threshold: 64}
- type: active-request-scorer
- type: no-hit-lru-scorer
- type: session-affinity-scorer
- type: lora-affinity-scorer
- type: running-requests-size-scorer
- type: token-load-scorer
- type: decode-filter
- name: only-gpu-a
  type: by-label
  parameters: {label: gpu, validValues: [a100, h100], allowsNoLabel: true}
- type: label-selector-filter
  parameters:
    matchLabels: {app: vllm}
    matchExpressions: [{key: zone, operator: NotIn, values: [z9]}]
- type: concurrency-detector
  parameters: {concurrencyMode: tokens, maxTokenConcurrency: 200000, headroom: 0.1}
- type: weighted-random-picker
  parameters: {maxNumOfEndpoints: 2}
- type: single-profile-handler
saturationDetector: {pluginRef: concurrency-detector}
schedulingProfiles:
- name: decode
  plugins:
  - pluginRef: decode-filter
  - pluginRef: only-gpu-a
  - pluginRef: label-selector-filter
  - {pluginRef: prefix-cache-scorer, weight: 2.0}
  - {pluginRef: load-aware-scorer, weight: 1.0}
  - {pluginRef: active-request-scorer, weight: 1}
  - {pluginRef: no-hit-lru-scorer, weight: 1}
  - {pluginRef: session-affinity-scorer, weight: 5}
  - {pluginRef: lora-affinity-scorer, weight: 1}
  - {pluginRef: running-requests-size-scorer, weight: 1}
  - {pluginRef: token-load-scorer, weight: 1}
  - pluginRef: weighted-random-picker
"""


def test_the_upstream_default_loads_unchanged() -> None:
    for text in (UPSTREAM_DEFAULT, UPSTREAM_DEFAULT_CONFIG):
        cfg = load_config_text(text)
        (profile,) = cfg.profiles.values()
        assert [(ws.scorer.type_name, ws.weight) for ws in profile.scorers] == [
            ("queue-scorer", 2.0), ("kv-cache-utilization-scorer", 2.0), ("prefix-cache-scorer", 3.0)]
        assert profile.picker is not None and profile.picker.type_name == "max-score-picker"
        assert cfg.profile_handler.type_name == "single-profile-handler"
        assert [p.type_name for p in cfg.producers] == ["approx-prefix-cache-producer"]
        assert cfg.saturation_detector.type_name == "utilization-detector"
        assert cfg.max_endpoints == 1


def test_our_default_adds_the_pickers_own_in_flight_count() -> None:
    cfg = default_config()
    (profile,) = cfg.profiles.values()
    assert [(ws.scorer.type_name, ws.weight) for ws in profile.scorers] == [
        ("queue-scorer", 1.0), ("kv-cache-utilization-scorer", 1.0), ("prefix-cache-scorer", 3.0),
        ("active-request-scorer", 1.0)]
    assert [p.type_name for p in cfg.producers] == ["approx-prefix-cache-producer"]
    assert cfg.max_endpoints == 1


def test_an_llm_d_style_config_with_every_builtin_loads() -> None:
    cfg = load_config_text(LLM_D_PRECISE_STYLE)
    profile = cfg.profiles["decode"]
    assert [f.name for f in profile.filters] == ["decode-filter", "only-gpu-a", "label-selector-filter"]
    assert len(profile.scorers) == 8
    assert cfg.saturation_detector.type_name == "concurrency-detector"
    assert cfg.max_endpoints == 2
    producer = cfg.producers[0]
    assert producer.type_name == "approx-prefix-cache-producer"
    assert producer in cfg.pre_request  # it records where prefixes went


def test_no_profiles_means_one_default_profile_with_everything() -> None:
    cfg = load_config_text("plugins: [{type: queue-scorer}, {type: random-picker}, {type: decode-filter}]")
    (profile,) = cfg.profiles.values()
    assert profile.name == "default"
    assert [f.type_name for f in profile.filters] == ["decode-filter"]
    assert profile.picker is not None and profile.picker.type_name == "random-picker"


def test_empty_config_is_a_valid_config() -> None:
    cfg = load_config_text("")
    (profile,) = cfg.profiles.values()
    assert profile.picker is not None


def test_every_builtin_type_is_known() -> None:
    expected = {
        "queue-scorer", "kv-cache-utilization-scorer", "prefix-cache-scorer", "approx-prefix-cache-producer",
        "lora-affinity-scorer", "running-requests-size-scorer", "token-load-scorer", "max-score-picker",
        "random-picker", "weighted-random-picker", "single-profile-handler", "utilization-detector",
        "concurrency-detector", "load-aware-scorer", "active-request-scorer", "session-affinity-scorer",
        "no-hit-lru-scorer", "by-label", "label-selector-filter", "decode-filter", "prefill-filter",
    }
    assert expected <= set(known_types())
    load_config_text("plugins: [{type: kv-cache-scorer}, {type: by-label-selector}]")  # deprecated aliases


@pytest.mark.parametrize(("text", "field", "fragment"), [
    ("plugins: [{type: nope-scorer}]", "plugins[0].type", "unknown plugin type 'nope-scorer'"),
    ("plugins: [{name: x}]", "plugins[0].type", "required"),
    ("plugins: [{type: queue-scorer}, {type: queue-scorer}]", "plugins[1].name", "duplicate"),
    ("plugins: [{type: token-load-scorer, parameters: {queueThresholdTokens: -1}}]",
     "plugins[0].parameters.queueThresholdTokens", "positive"),
    ("plugins: [{type: max-score-picker, parameters: {maxNumOfEndpoint: 2}}]",
     "plugins[0].parameters.maxNumOfEndpoint", "unknown parameter"),
    ("plugins: [{type: max-score-picker, parameters: {maxNumOfEndpoints: two}}]",
     "plugins[0].parameters.maxNumOfEndpoints", "integer"),
    ("plugins: [{type: utilization-detector, parameters: {metricsStalenessThreshold: soon}}]",
     "plugins[0].parameters.metricsStalenessThreshold", "duration"),
    ("plugins: [{type: label-selector-filter, parameters: {matchExpressions: [{key: a, operator: Maybe}]}}]",
     "plugins[0].parameters.matchExpressions[0].operator", "must be one of"),
    ("plugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: queue}]}]",
     "schedulingProfiles[0].plugins[0].pluginRef", "no plugin named 'queue'"),
    ("plugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: queue-scorer, "
     "weight: -1}]}]", "schedulingProfiles[0].plugins[0].weight", "non-negative"),
    ("plugins: [{type: random-picker}, {type: max-score-picker}]\nschedulingProfiles: [{name: p, plugins: "
     "[{pluginRef: random-picker}, {pluginRef: max-score-picker}]}]",
     "schedulingProfiles[0].plugins[1].pluginRef", "already has picker"),
    ("plugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: a, plugins: []}, {name: b, plugins: []}]",
     "schedulingProfiles", "exactly 1 profile"),
    ("plugins: [{type: queue-scorer}]\nsaturationDetector: {pluginRef: queue-scorer}",
     "saturationDetector.pluginRef", "not a saturation detector"),
    ("apiVersion: v1\n", "apiVersion", "must be one of"),
    ("kind: Pod\n", "kind", "EndpointPickerConfig"),
    ("featureGates: [warpDrive]\n", "featureGates[0]", "unknown feature gate"),
    ("schedulingProfile: []\n", "schedulingProfile", "unknown key"),
    ("dataLayer: {sources: [{pluginRef: metrics-data-source}]}\n", "dataLayer.sources[0].pluginRef", "no plugin"),
    ("plugins: [\n", "(document)", "not valid YAML"),
])
def test_errors_name_the_field(text: str, field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="cfg.yaml")
    assert info.value.field == field, str(info.value)
    assert fragment in info.value.message
    assert str(info.value).startswith(f"cfg.yaml: {field}: ")


def test_a_bad_engine_mapping_stops_the_config_naming_the_field() -> None:
    text = ("plugins: [{type: core-metrics-extractor, parameters: {engineConfigs: "
            "[{name: vllm, kvUsageSpec: 'not a {metric'}]}}]")
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert info.value.field.startswith("plugins[0].parameters.engineConfigs[0]")
