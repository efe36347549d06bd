"""Which series of a model server's ``/metrics`` mean what: the per-engine metric mappings.

Why it exists: pools mix engines (vLLM, SGLang, trtllm-serve, Triton with TensorRT-LLM) that publish the
same signals -- queue length, running requests, KV-cache utilisation, LoRA adapters, cache geometry --
under different names. Like the upstream ``core-metrics-extractor`` (GIE, llm-d-router), each endpoint's
engine is read from its label ``inference.networking.k8s.io/engine-type`` (``engineLabelKey``); a missing,
empty or unknown value means ``defaultEngine`` (``vllm``). The built-in entries carry the exact names from
the reference (model-servers.md section 4); a user's ``engineConfigs[]`` entry **replaces** the built-in
entry of the same name (an omitted or empty spec disables that signal), and new names add engines.

A spec is a PromQL instant selector, ``family`` or ``family{label="value",...}`` (quotes optional, only
``=`` matchers). Counter specs match the family with or without ``_total``.

Dict keys follow the upstream ``engineConfigs[]`` entries: ``name``, ``queuedRequestsSpec``,
``runningRequestsSpec``, ``kvUsageSpec``, ``loraSpec``, ``cacheInfoSpec``, ``cacheBlockSizeLabelName``
(default ``block_size``), ``cacheNumBlocksLabelName`` (default ``num_gpu_blocks``), ``cacheBlockSizeSpec``,
``cacheNumBlocksSpec``; ours in addition: ``prefixCacheQueriesSpec`` and ``prefixCacheHitsSpec`` (prefix
cache counters, for hit rates). Where several samples match a spec, the one with the newest timestamp
wins (the first one when none has a timestamp), except for the LoRA spec, where the largest value wins
(``vllm:lora_requests_info`` keeps one series per adapter combination, valued with the time it was seen).

Built-in entries beyond upstream's: ``sglang`` also reads the gauges ``sglang:page_size`` and
``sglang:num_pages`` (what SGLang >= 0.5.12 emits instead of ``sglang:cache_config_info``; llm-d-router
#2294) when the info series is absent, and the prefix-cache counters (vLLM's ``prefix_cache_*``, SGLang's
``prompt_tokens`` / ``cached_tokens``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from endpoint_picker.datastore.model import Endpoint

__all__ = [
    "BUILTIN_ENGINE_MAPPINGS",
    "DEFAULT_ENGINE",
    "ENGINE_TYPE_LABEL",
    "DataLayerConfigError",
    "EngineMappings",
    "MetricMapping",
    "MetricSpec",
    "engine_config_from_dict",
]

ENGINE_TYPE_LABEL = "inference.networking.k8s.io/engine-type"
DEFAULT_ENGINE = "vllm"
# Upstream reserves this name for the fallback entry of its mapping registry.
_RESERVED_ENGINE = "default"

class DataLayerConfigError(ValueError):
    """Invalid data-layer parameters; ``field`` is the dotted path of the offending key (e.g.
    ``engineConfigs[1].kvUsageSpec``, prefixed with the caller's ``where``), ``message`` what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


def _at(where: str, key: str) -> str:
    """``where.key`` (``key`` alone when ``where`` is empty; ``where[i]`` when key is an index)."""
    if not where:
        return key
    return f"{where}{key}" if key.startswith("[") else f"{where}.{key}"


_NAME_RE = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*")
_MATCHER_RE = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^"',}\s]+)\s*(,?)"""
)
_UNQUOTE_RE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One series selector: a metric family and label values every matching sample must carry."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> MetricSpec | None:
        """Parse ``family{label="value",...}``; the empty string means "disabled" (None). Raises ValueError."""
        if not isinstance(text, str):
            raise ValueError(f"must be a string, got {type(text).__name__}")
        if not text.strip():
            return None
        m = _NAME_RE.match(text)
        if m is None:
            raise ValueError(f"{text!r}: expected a metric name, optionally followed by {{label=\"value\",...}}")
        name = m.group(1)
        pos = m.end()
        labels: dict[str, str] = {}
        if pos < len(text):
            if text[pos] != "{" or not text.rstrip().endswith("}"):
                raise ValueError(f"{text!r}: expected {{label=\"value\",...}} after the metric name")
            body = text[pos + 1 : text.rstrip().rfind("}")]
            i = 0
            separated = True
            while body[i:].strip():
                mm = _MATCHER_RE.match(body, i)
                if mm is None or not separated:
                    raise ValueError(f"{text!r}: cannot parse the label matchers")
                label, op, raw, comma = mm.groups()
                if op != "=":
                    raise ValueError(f"{text!r}: only equality matchers (label=\"value\") are supported, not {op}")
                if raw[0] in "\"'":
                    raw = _UNQUOTE_RE.sub(lambda c: "\n" if c.group(1) == "n" else c.group(1), raw[1:-1])
                if label in labels:
                    raise ValueError(f"{text!r}: label {label!r} given twice")
                if not label.startswith("__"):  # pseudo labels (__name__ ...) are not sample labels
                    labels[label] = raw
                separated = bool(comma)
                i = mm.end()
        return cls(name, tuple(sorted(labels.items())))

    def __str__(self) -> str:
        if not self.labels:
            return self.name
        return self.name + "{" + ",".join(f'{k}="{v}"' for k, v in self.labels) + "}"


def _spec(text: str) -> MetricSpec | None:
    return MetricSpec.parse(text)


@dataclass(frozen=True, slots=True)
class MetricMapping:
    """Where one engine type publishes each signal; ``None`` = not scraped.

    The KV-cache geometry comes from the labels of an info series (``cache_info`` with
    ``cache_block_size_label`` / ``cache_num_blocks_label``), or from gauges (``cache_block_size``,
    ``cache_num_blocks``) -- labels first, gauges for what the labels did not give.
    """

    queued_requests: MetricSpec | None = None
    running_requests: MetricSpec | None = None
    kv_usage: MetricSpec | None = None
    lora: MetricSpec | None = None
    cache_info: MetricSpec | None = None
    cache_block_size_label: str = "block_size"
    cache_num_blocks_label: str = "num_gpu_blocks"
    cache_block_size: MetricSpec | None = None
    cache_num_blocks: MetricSpec | None = None
    prefix_cache_queries: MetricSpec | None = None
    prefix_cache_hits: MetricSpec | None = None

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], where: str = "engineConfig") -> MetricMapping:
        """Build from an upstream-style ``engineConfigs[]`` entry (its ``name`` key is ignored here).

        Raises :class:`DataLayerConfigError` naming the offending key as ``<where>.<key>``.
        """
        if not isinstance(entry, Mapping):
            raise DataLayerConfigError(where, "must be a mapping")
        kwargs: dict[str, Any] = {}
        for key, value in entry.items():
            if key == "name":
                continue
            attr = _KEYS.get(key)
            if attr is None:
                raise DataLayerConfigError(_at(where, key), f"unknown key (expected one of {sorted([*_KEYS, 'name'])})")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise DataLayerConfigError(_at(where, key), "must be a string")
            if attr in _LABEL_ATTRS:
                if value and re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", value) is None:
                    raise DataLayerConfigError(_at(where, key), f"{value!r} is not a valid label name")
                if value:
                    kwargs[attr] = value
                continue
            try:
                kwargs[attr] = MetricSpec.parse(value)
            except ValueError as exc:
                raise DataLayerConfigError(_at(where, key), str(exc)) from None
        return cls(**kwargs)

    def to_dict(self) -> dict[str, str]:
        """The upstream-style keys (without ``name``); disabled specs as ``""``."""
        out: dict[str, str] = {}
        for key, attr in _KEYS.items():
            value = getattr(self, attr)
            out[key] = "" if value is None else str(value)
        return out

    def specs(self) -> dict[str, MetricSpec]:
        """The enabled specs by attribute name."""
        out: dict[str, MetricSpec] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, MetricSpec):
                out[f.name] = value
        return out


_KEYS: dict[str, str] = {
    "queuedRequestsSpec": "queued_requests",
    "runningRequestsSpec": "running_requests",
    "kvUsageSpec": "kv_usage",
    "loraSpec": "lora",
    "cacheInfoSpec": "cache_info",
    "cacheBlockSizeLabelName": "cache_block_size_label",
    "cacheNumBlocksLabelName": "cache_num_blocks_label",
    "cacheBlockSizeSpec": "cache_block_size",
    "cacheNumBlocksSpec": "cache_num_blocks",
    "prefixCacheQueriesSpec": "prefix_cache_queries",
    "prefixCacheHitsSpec": "prefix_cache_hits",
}
_LABEL_ATTRS = frozenset({"cache_block_size_label", "cache_num_blocks_label"})


def engine_config_from_dict(entry: Mapping[str, Any], where: str = "engineConfigs[0]") -> tuple[str, MetricMapping]:
    """An upstream ``engineConfigs[]`` entry -> (engine name, mapping). Raises :class:`DataLayerConfigError`."""
    if not isinstance(entry, Mapping):
        raise DataLayerConfigError(where, "must be a mapping with a 'name'")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise DataLayerConfigError(_at(where, "name"), "required, a non-empty string")
    if name == _RESERVED_ENGINE:
        raise DataLayerConfigError(_at(where, "name"), f"{_RESERVED_ENGINE!r} is reserved")
    return name, MetricMapping.from_dict(entry, where)


BUILTIN_ENGINE_MAPPINGS: Mapping[str, MetricMapping] = MappingProxyType({
    "vllm": MetricMapping(
        queued_requests=_spec("vllm:num_requests_waiting"),
        running_requests=_spec("vllm:num_requests_running"),
        kv_usage=_spec("vllm:kv_cache_usage_perc"),
        lora=_spec("vllm:lora_requests_info"),
        cache_info=_spec("vllm:cache_config_info"),
        prefix_cache_queries=_spec("vllm:prefix_cache_queries"),
        prefix_cache_hits=_spec("vllm:prefix_cache_hits"),
    ),
    "sglang": MetricMapping(
        queued_requests=_spec("sglang:num_queue_reqs"),
        running_requests=_spec("sglang:num_running_reqs"),
        kv_usage=_spec("sglang:token_usage"),
        cache_info=_spec("sglang:cache_config_info"),
        cache_block_size_label="page_size",
        cache_num_blocks_label="num_pages",
        cache_block_size=_spec("sglang:page_size"),
        cache_num_blocks=_spec("sglang:num_pages"),
        prefix_cache_queries=_spec("sglang:prompt_tokens"),
        prefix_cache_hits=_spec("sglang:cached_tokens"),
    ),
    "trtllm-serve": MetricMapping(
        queued_requests=_spec("trtllm_num_requests_waiting"),
        running_requests=_spec("trtllm_num_requests_running"),
        kv_usage=_spec("trtllm_kv_cache_utilization"),
        cache_block_size=_spec("trtllm_kv_cache_tokens_per_block"),
        cache_num_blocks=_spec("trtllm_kv_cache_max_blocks"),
    ),
    "triton-tensorrt-llm": MetricMapping(
        queued_requests=_spec('nv_trt_llm_request_metrics{request_type="waiting"}'),
        running_requests=_spec('nv_trt_llm_request_metrics{request_type="scheduled"}'),
        kv_usage=_spec('nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}'),
        cache_block_size=_spec('nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per"}'),
        cache_num_blocks=_spec('nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"}'),
    ),
    # llm-d-router's entry for Triton serving non-LLM models.
    "triton": MetricMapping(
        queued_requests=_spec("nv_inference_pending_request_count"),
        running_requests=_spec("nv_inference_exec_count"),
    ),
})


@dataclass(frozen=True, slots=True)
class EngineMappings:
    """The mapping per engine name, the default engine, and the endpoint label that names an endpoint's engine."""

    engines: Mapping[str, MetricMapping] = field(default_factory=lambda: BUILTIN_ENGINE_MAPPINGS)
    default_engine: str = DEFAULT_ENGINE
    engine_label_key: str = ENGINE_TYPE_LABEL

    def __post_init__(self) -> None:
        if self.default_engine not in self.engines:
            raise DataLayerConfigError("defaultEngine", f"{self.default_engine!r} not found in engineConfigs "
                                       f"(known: {sorted(self.engines)})")
        object.__setattr__(self, "engines", MappingProxyType(dict(self.engines)))

    def engine_of(self, endpoint: Endpoint) -> str:
        """The endpoint's engine name: its label's value if that names a known engine, else the default."""
        engine = endpoint.labels.get(self.engine_label_key)
        return engine if engine and engine in self.engines else self.default_engine

    def for_endpoint(self, endpoint: Endpoint) -> MetricMapping:
        return self.engines[self.engine_of(endpoint)]

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "parameters") -> EngineMappings:
        """From ``core-metrics-extractor`` parameters: ``engineLabelKey``, ``defaultEngine``, ``engineConfigs``.

        User entries replace built-in entries of the same name; the other built-ins stay. Raises
        :class:`DataLayerConfigError` naming the offending key (``where=""`` gives e.g.
        ``engineConfigs[1].kvUsageSpec``, relative to the plugin's parameters).
        """
        params = params or {}
        if not isinstance(params, Mapping):
            raise DataLayerConfigError(where, "must be a mapping")
        unknown = set(params) - {"engineLabelKey", "defaultEngine", "engineConfigs"}
        if unknown:
            raise DataLayerConfigError(_at(where, sorted(unknown)[0]),
                                       "unknown key (expected engineLabelKey, defaultEngine, engineConfigs)")
        label_key = params.get("engineLabelKey") or ENGINE_TYPE_LABEL
        if not isinstance(label_key, str):
            raise DataLayerConfigError(_at(where, "engineLabelKey"), "must be a string")
        default = params.get("defaultEngine") or DEFAULT_ENGINE
        if not isinstance(default, str):
            raise DataLayerConfigError(_at(where, "defaultEngine"), "must be a string")
        entries = params.get("engineConfigs") or []
        if not isinstance(entries, list):
            raise DataLayerConfigError(_at(where, "engineConfigs"), "must be a list")
        engines = dict(BUILTIN_ENGINE_MAPPINGS)
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            name, mapping = engine_config_from_dict(entry, _at(where, f"engineConfigs[{i}]"))
            if name in seen:
                raise DataLayerConfigError(_at(where, f"engineConfigs[{i}].name"), f"engine {name!r} defined twice")
            seen.add(name)
            engines[name] = mapping
        if default not in engines:
            raise DataLayerConfigError(_at(where, "defaultEngine"),
                                       f"{default!r} not found in engineConfigs (known: {sorted(engines)})")
        return cls(engines, default, label_key)
