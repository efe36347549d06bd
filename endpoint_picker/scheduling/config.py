"""Loading an ``EndpointPickerConfig`` (upstream's YAML format) into a ready-to-run scheduler configuration.

Follows upstream's loader: plugin ``name`` defaults to its ``type``; scorer ``weight`` defaults to 1; a profile
without a picker gets ``max-score-picker``; no profile handler means ``single-profile-handler``; no
``schedulingProfiles`` means one ``default`` profile with every configured filter, scorer and picker; a scorer
that consumes prefix-match data gets ``approx-prefix-cache-producer`` when none is configured; the saturation
detector defaults to ``utilization-detector``. Any error names the field (``plugins[2].type``) and stops the
picker at start.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import yaml

from endpoint_picker.config_error import ConfigError
from endpoint_picker.scheduling.framework import (
    Admitter,
    DataProducer,
    Filter,
    Picker,
    Plugin,
    PreRequest,
    ProfileHandler,
    ResponseComplete,
    SaturationDetector,
    SchedulingProfile,
    Scorer,
    WeightedScorer,
)
from endpoint_picker.scheduling.registry import PluginContext, create

log = logging.getLogger(__name__)

API_VERSIONS = ("inference.networking.x-k8s.io/v1alpha1", "llm-d.ai/v1alpha1")
KIND = "EndpointPickerConfig"
_TOP_LEVEL = {"apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles", "saturationDetector",
              "dataLayer", "data", "flowControl", "parser"}
_FEATURE_GATES = {"flowControl", "enableLegacyMetrics", "dataLayer", "prepareDataPlugins"}

# Upstream's built-in default is queue 2 / kv-cache 2 / prefix 3. Ours adds the picker's own in-flight count
# and lowers the lagging engine gauges: in the fleet simulator (docs/benchmarks.md, "Routing quality in the
# fleet simulator") upstream's weights pile shared-prefix groups onto hot endpoints, because the engine queue
# stays empty until KV is full and gauges only move once a step ends (TTFT p99 5-10x round-robin). With
# active-request-scorer the same cache hit rate comes with TTFT p90 at 0.21x round-robin's.
UPSTREAM_DEFAULT_CONFIG = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: metrics-data-source
- type: core-metrics-extractor
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors:
    - pluginRef: core-metrics-extractor
"""

DEFAULT_CONFIG = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: active-request-scorer
- type: metrics-data-source
- type: core-metrics-extractor
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 1
  - pluginRef: kv-cache-utilization-scorer
    weight: 1
  - pluginRef: prefix-cache-scorer
    weight: 3
  - pluginRef: active-request-scorer
    weight: 1
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors:
    - pluginRef: core-metrics-extractor
"""


@dataclass
class SchedulerConfig:
    """Everything a scheduler instance runs, built once at start."""

    plugins: dict[str, Plugin]
    profiles: dict[str, SchedulingProfile]
    profile_handler: ProfileHandler
    producers: list[DataProducer]
    admitters: list[Admitter]
    pre_request: list[PreRequest]
    response_complete: list[ResponseComplete]
    saturation_detector: SaturationDetector
    feature_gates: frozenset[str] = frozenset()
    data_layer: dict[str, Any] = field(default_factory=dict)

    @property
    def max_endpoints(self) -> int:
        """How many endpoints the primary profile's picker returns (1 = no fallbacks)."""
        return max((getattr(p.picker, "max_endpoints", 1) for p in self.profiles.values()), default=1)


def load_config_text(text: str, *, source: str = "config", rng: random.Random | None = None) -> SchedulerConfig:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("(document)", f"not valid YAML: {exc}", source) from None
    if doc is None:
        doc = {}
    try:
        return build_config(doc, PluginContext(rng=rng or random.Random()))
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.message, source) from None


def default_config(rng: random.Random | None = None) -> SchedulerConfig:
    return load_config_text(DEFAULT_CONFIG, source="built-in default config", rng=rng)


def build_config(doc: Any, context: PluginContext) -> SchedulerConfig:
    if not isinstance(doc, dict):
        raise ConfigError("(document)", "must be a mapping (an EndpointPickerConfig)")
    for key in doc:
        if key not in _TOP_LEVEL:
            raise ConfigError(str(key), f"unknown key (expected one of {', '.join(sorted(_TOP_LEVEL))})")
    api_version = doc.get("apiVersion")
    if api_version is not None and api_version not in API_VERSIONS:
        raise ConfigError("apiVersion", f"must be one of {', '.join(API_VERSIONS)}")
    kind = doc.get("kind")
    if kind is not None and kind != KIND:
        raise ConfigError("kind", f"must be {KIND}")
    gates = _feature_gates(doc.get("featureGates"))

    plugins = _plugins(doc.get("plugins"), context)
    profiles = _profiles(doc.get("schedulingProfiles"), plugins, context)
    handlers = [p for p in plugins.values() if isinstance(p, ProfileHandler)]
    if len(handlers) > 1:
        raise ConfigError("plugins", f"more than one profile handler: {', '.join(h.name for h in handlers)}")
    handler = handlers[0] if handlers else _auto(plugins, "single-profile-handler", context)
    assert isinstance(handler, ProfileHandler)
    max_profiles = getattr(handler, "max_profiles", None)
    if max_profiles is not None and len(profiles) > max_profiles:
        raise ConfigError("schedulingProfiles", f"{handler.type_name} runs exactly {max_profiles} profile(s), "
                          f"{len(profiles)} are configured")

    # Data producers: configured ones, plus the default producer of any data a scorer consumes.
    used = [ws.scorer for p in profiles.values() for ws in p.scorers]
    if any(getattr(s, "consumes", None) for s in used) and not any(
            isinstance(p, DataProducer) for p in plugins.values()):
        _auto(plugins, "approx-prefix-cache-producer", context)

    detector_ref = _ref(doc.get("saturationDetector"), "saturationDetector")
    if detector_ref is not None:
        detector = plugins.get(detector_ref)
        if detector is None:
            raise ConfigError("saturationDetector.pluginRef", f"no plugin named {detector_ref!r}")
        if not isinstance(detector, SaturationDetector):
            raise ConfigError("saturationDetector.pluginRef", f"{detector_ref!r} is not a saturation detector")
    else:
        found = [p for p in plugins.values() if isinstance(p, SaturationDetector)]
        detector = found[0] if found else _auto(plugins, "utilization-detector", context)
    assert isinstance(detector, SaturationDetector)

    parser_ref = _ref(doc.get("parser"), "parser")
    if parser_ref is not None:
        parser = plugins.get(parser_ref)
        if parser is None or parser.type_name != "openai-parser":
            raise ConfigError("parser.pluginRef", "only an openai-parser plugin is supported")

    data_layer = _data_layer(doc.get("dataLayer", doc.get("data")), plugins)
    if "flowControl" in gates or doc.get("flowControl") is not None:
        log.warning("flowControl is configured but not implemented yet: legacy admission is used "
                    "(sheddable requests get 429 while the pool is saturated)")

    instances = list(plugins.values())
    return SchedulerConfig(
        plugins=plugins,
        profiles=profiles,
        profile_handler=handler,
        producers=[p for p in instances if isinstance(p, DataProducer)],
        admitters=[p for p in instances if isinstance(p, Admitter)],
        pre_request=[p for p in instances if isinstance(p, PreRequest)],
        response_complete=[p for p in instances if isinstance(p, ResponseComplete)],
        saturation_detector=detector,
        feature_gates=gates,
        data_layer=data_layer,
    )


def _feature_gates(raw: Any) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(g, str) for g in raw):
        raise ConfigError("featureGates", "must be a list of strings")
    for i, gate in enumerate(raw):
        if gate not in _FEATURE_GATES:
            raise ConfigError(f"featureGates[{i}]", f"unknown feature gate {gate!r}")
    return frozenset(raw)


def _plugins(raw: Any, context: PluginContext) -> dict[str, Plugin]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError("plugins", "must be a list")
    plugins: dict[str, Plugin] = {}
    for i, entry in enumerate(raw):
        where = f"plugins[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a mapping with a 'type'")
        for key in entry:
            if key not in ("name", "type", "parameters"):
                raise ConfigError(f"{where}.{key}", "unknown key (expected name, type, parameters)")
        type_name = entry.get("type")
        if not isinstance(type_name, str) or not type_name:
            raise ConfigError(f"{where}.type", "required")
        name = entry.get("name") or type_name
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name", "must be a string")
        if name in plugins:
            raise ConfigError(f"{where}.name", f"duplicate plugin name {name!r}")
        plugins[name] = create(type_name, name, entry.get("parameters"), where, context)
    return plugins


def _auto(plugins: dict[str, Plugin], type_name: str, context: PluginContext) -> Plugin:
    existing = plugins.get(type_name)
    if existing is not None:
        return existing
    plugin = create(type_name, type_name, None, f"(default {type_name})", context)
    plugins[type_name] = plugin
    return plugin


def _profiles(raw: Any, plugins: dict[str, Plugin], context: PluginContext) -> dict[str, SchedulingProfile]:
    if raw is None or raw == []:
        # Upstream: one 'default' profile with every configured filter, scorer and picker.
        entries = [{"pluginRef": name} for name, p in plugins.items()
                   if isinstance(p, Filter | Scorer | Picker) and not isinstance(p, SaturationDetector)]
        raw = [{"name": "default", "plugins": entries}]
    if not isinstance(raw, list):
        raise ConfigError("schedulingProfiles", "must be a list")
    profiles: dict[str, SchedulingProfile] = {}
    for i, entry in enumerate(raw):
        where = f"schedulingProfiles[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a mapping with 'name' and 'plugins'")
        for key in entry:
            if key not in ("name", "plugins"):
                raise ConfigError(f"{where}.{key}", "unknown key (expected name, plugins)")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name", "required")
        if name in profiles:
            raise ConfigError(f"{where}.name", f"duplicate profile name {name!r}")
        profile = SchedulingProfile(name=name)
        refs = entry.get("plugins") or []
        if not isinstance(refs, list):
            raise ConfigError(f"{where}.plugins", "must be a list")
        for j, ref in enumerate(refs):
            rwhere = f"{where}.plugins[{j}]"
            if not isinstance(ref, dict) or not isinstance(ref.get("pluginRef"), str):
                raise ConfigError(f"{rwhere}.pluginRef", "required")
            for key in ref:
                if key not in ("pluginRef", "weight"):
                    raise ConfigError(f"{rwhere}.{key}", "unknown key (expected pluginRef, weight)")
            plugin = plugins.get(ref["pluginRef"])
            if plugin is None:
                raise ConfigError(f"{rwhere}.pluginRef", f"no plugin named {ref['pluginRef']!r} in 'plugins'")
            weight = ref.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise ConfigError(f"{rwhere}.weight", "must be a non-negative number")
            placed = False
            if isinstance(plugin, Filter):
                profile.filters.append(plugin)
                placed = True
            if isinstance(plugin, Scorer):
                profile.scorers.append(WeightedScorer(plugin, float(weight)))
                placed = True
            if isinstance(plugin, Picker):
                if profile.picker is not None:
                    raise ConfigError(f"{rwhere}.pluginRef", f"profile {name!r} already has picker "
                                      f"{profile.picker.name!r}")
                profile.picker = plugin
                placed = True
            if not placed and not isinstance(plugin, DataProducer | PreRequest | ProfileHandler):
                raise ConfigError(f"{rwhere}.pluginRef", f"{plugin.type_name} cannot be used in a profile")
        if profile.picker is None:
            picker = _auto(plugins, "max-score-picker", context)
            assert isinstance(picker, Picker)
            profile.picker = picker
        profiles[name] = profile
    return profiles


def _ref(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("pluginRef"), str):
        raise ConfigError(f"{where}.pluginRef", "required")
    return raw["pluginRef"]


def _data_layer(raw: Any, plugins: dict[str, Plugin]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("dataLayer", "must be a mapping with 'sources'")
    sources = raw.get("sources") or []
    if not isinstance(sources, list):
        raise ConfigError("dataLayer.sources", "must be a list")
    for i, source in enumerate(sources):
        where = f"dataLayer.sources[{i}]"
        ref = _ref(source, where)
        if ref not in plugins:
            raise ConfigError(f"{where}.pluginRef", f"no plugin named {ref!r} in 'plugins'")
        for j, extractor in enumerate(source.get("extractors") or []):
            eref = _ref(extractor, f"{where}.extractors[{j}]")
            if eref not in plugins:
                raise ConfigError(f"{where}.extractors[{j}].pluginRef", f"no plugin named {eref!r} in 'plugins'")
    return dict(raw)
