"""Plugins that configure rather than schedule: the data layer's source and extractor, the request parser, and
flow-control policies.

They are registered so upstream configs that name them load unchanged; their parameters are validated and
handed to the data layer. Flow control is not implemented yet: its policy plugins are accepted and inert, and
the loader says so in the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from endpoint_picker.scheduling.framework import Plugin
from endpoint_picker.scheduling.registry import NoParams, ParamError, PluginContext, register


class ConfigOnlyPlugin(Plugin):
    def __init__(self, name: str, params: Any, context: PluginContext) -> None:
        super().__init__(name)
        self.params = params


@dataclass(frozen=True, slots=True)
class MetricsDataSourceParams:
    scheme: str = "http"
    path: str = "/metrics"
    insecure_skip_verify: bool = True

    def check(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ParamError("scheme", "must be http or https")
        if not self.path.startswith("/"):
            raise ParamError("path", "must start with /")


@register()
class MetricsDataSource(ConfigOnlyPlugin):
    type_name = "metrics-data-source"
    Params = MetricsDataSourceParams


@dataclass(frozen=True, slots=True)
class CoreMetricsExtractorParams:
    engine_label_key: str = "inference.networking.k8s.io/engine-type"
    default_engine: str = "vllm"
    engine_configs: list[dict[str, Any]] = field(default_factory=list)

    def check(self) -> None:
        # Build the mappings once here so a bad engineConfigs entry stops the picker at start, field named.
        from endpoint_picker.datalayer.mapping import DataLayerConfigError, EngineMappings

        try:
            EngineMappings.from_params({"engineLabelKey": self.engine_label_key,
                                        "defaultEngine": self.default_engine,
                                        "engineConfigs": self.engine_configs}, where="")
        except DataLayerConfigError as exc:
            raise ParamError(exc.field or "engineConfigs", exc.message) from None


@register()
class CoreMetricsExtractor(ConfigOnlyPlugin):
    type_name = "core-metrics-extractor"
    Params = CoreMetricsExtractorParams


@register()
class OpenAIParser(ConfigOnlyPlugin):
    type_name = "openai-parser"
    Params = NoParams


for _type in ("fcfs-ordering-policy", "global-strict-fairness-policy", "round-robin-fairness-policy",
              "edf-ordering-policy", "static-usage-limit-policy"):
    register()(type(_type.title().replace("-", ""), (ConfigOnlyPlugin,), {"type_name": _type}))
