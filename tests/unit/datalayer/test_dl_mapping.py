"""Engine metric mappings: the built-in entries' exact names (model-servers.md section 4), spec parsing,
upstream-style ``engineConfigs[]`` entries and ``core-metrics-extractor`` parameters, and which mapping an
endpoint gets from its engine-type label."""

from __future__ import annotations

import re

import pytest

from endpoint_picker.datalayer import (
    BUILTIN_ENGINE_MAPPINGS,
    ENGINE_TYPE_LABEL,
    DataLayerConfigError,
    EngineMappings,
    MetricMapping,
    MetricSpec,
    engine_config_from_dict,
)
from endpoint_picker.datastore import Endpoint


def test_builtin_entries_use_the_reference_names() -> None:
    vllm = BUILTIN_ENGINE_MAPPINGS["vllm"].to_dict()
    assert vllm["queuedRequestsSpec"] == "vllm:num_requests_waiting"
    assert vllm["runningRequestsSpec"] == "vllm:num_requests_running"
    assert vllm["kvUsageSpec"] == "vllm:kv_cache_usage_perc"
    assert vllm["loraSpec"] == "vllm:lora_requests_info"
    assert vllm["cacheInfoSpec"] == "vllm:cache_config_info"
    assert vllm["cacheBlockSizeLabelName"] == "block_size" and vllm["cacheNumBlocksLabelName"] == "num_gpu_blocks"
    sglang = BUILTIN_ENGINE_MAPPINGS["sglang"].to_dict()
    assert (sglang["queuedRequestsSpec"], sglang["runningRequestsSpec"], sglang["kvUsageSpec"]) == (
        "sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage")
    assert sglang["loraSpec"] == ""
    assert (sglang["cacheInfoSpec"], sglang["cacheBlockSizeLabelName"], sglang["cacheNumBlocksLabelName"]) == (
        "sglang:cache_config_info", "page_size", "num_pages")
    trt = BUILTIN_ENGINE_MAPPINGS["trtllm-serve"].to_dict()
    assert (trt["queuedRequestsSpec"], trt["runningRequestsSpec"], trt["kvUsageSpec"]) == (
        "trtllm_num_requests_waiting", "trtllm_num_requests_running", "trtllm_kv_cache_utilization")
    assert (trt["cacheBlockSizeSpec"], trt["cacheNumBlocksSpec"]) == (
        "trtllm_kv_cache_tokens_per_block", "trtllm_kv_cache_max_blocks")
    triton = BUILTIN_ENGINE_MAPPINGS["triton-tensorrt-llm"].to_dict()
    assert triton["queuedRequestsSpec"] == 'nv_trt_llm_request_metrics{request_type="waiting"}'
    assert triton["runningRequestsSpec"] == 'nv_trt_llm_request_metrics{request_type="scheduled"}'
    assert triton["kvUsageSpec"] == 'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}'
    assert triton["cacheBlockSizeSpec"] == 'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per"}'
    assert triton["cacheNumBlocksSpec"] == 'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"}'


@pytest.mark.parametrize(("text", "expected"), [
    ("vllm:num_requests_waiting", MetricSpec("vllm:num_requests_waiting")),
    (" m ", MetricSpec("m")),
    ("m{}", MetricSpec("m")),
    ("m{a=b}", MetricSpec("m", (("a", "b"),))),
    ('m{b="2", a="1"}', MetricSpec("m", (("a", "1"), ("b", "2")))),
    ("m{a='x,y'}", MetricSpec("m", (("a", "x,y"),))),
    ('m{a="q\\"uote"}', MetricSpec("m", (("a", 'q"uote'),))),
    ('m{__name__="m",a="1"}', MetricSpec("m", (("a", "1"),))),
    ("", None),
])
def test_spec_parsing(text: str, expected: MetricSpec | None) -> None:
    assert MetricSpec.parse(text) == expected


@pytest.mark.parametrize("text", ["{a=b}", "m{a!=b}", "m{a=~b}", "m{a=b", "m x", "m{a=b c=d}", "m{a=1,a=2}", "1m"])
def test_bad_specs_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        MetricSpec.parse(text)


def test_engine_config_entry_from_a_dict() -> None:
    name, mapping = engine_config_from_dict({
        "name": "my-engine",
        "queuedRequestsSpec": "my_queue{pool=a}",
        "runningRequestsSpec": "my_running",
        "kvUsageSpec": "",
        "cacheInfoSpec": "my_cache_info",
        "cacheBlockSizeLabelName": "page",
        "prefixCacheHitsSpec": "my_hits",
    })
    assert name == "my-engine"
    assert mapping.queued_requests == MetricSpec("my_queue", (("pool", "a"),))
    assert mapping.kv_usage is None and mapping.lora is None
    assert mapping.cache_block_size_label == "page" and mapping.cache_num_blocks_label == "num_gpu_blocks"
    assert mapping.prefix_cache_hits == MetricSpec("my_hits")
    assert MetricMapping.from_dict(mapping.to_dict()) == mapping


@pytest.mark.parametrize(("entry", "field"), [
    ({"queuedRequestsSpec": "q"}, "engineConfigs[3].name"),
    ({"name": "default"}, "engineConfigs[3].name"),
    ({"name": "x", "kvUsage": "k"}, "engineConfigs[3].kvUsage"),
    ({"name": "x", "kvUsageSpec": "k{a!=b}"}, "engineConfigs[3].kvUsageSpec"),
    ({"name": "x", "loraSpec": 5}, "engineConfigs[3].loraSpec"),
    ({"name": "x", "cacheBlockSizeLabelName": "not a label"}, "engineConfigs[3].cacheBlockSizeLabelName"),
])
def test_bad_entries_name_the_field(entry: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(field)}:"):
        engine_config_from_dict(entry, "engineConfigs[3]")


def ep(labels: dict[str, str] | None = None) -> Endpoint:
    return Endpoint("pod", "10.0.0.1", 8000, labels or {})


def test_endpoints_get_the_mapping_named_by_their_engine_label() -> None:
    mappings = EngineMappings()
    assert mappings.engine_label_key == ENGINE_TYPE_LABEL == "inference.networking.k8s.io/engine-type"
    assert mappings.engine_of(ep()) == "vllm"
    assert mappings.engine_of(ep({ENGINE_TYPE_LABEL: ""})) == "vllm"
    assert mappings.engine_of(ep({ENGINE_TYPE_LABEL: "unknown-engine"})) == "vllm"
    for engine in ("sglang", "trtllm-serve", "triton-tensorrt-llm", "triton"):
        assert mappings.engine_of(ep({ENGINE_TYPE_LABEL: engine})) == engine
        assert mappings.for_endpoint(ep({ENGINE_TYPE_LABEL: engine})) is BUILTIN_ENGINE_MAPPINGS[engine]


def test_core_metrics_extractor_parameters() -> None:
    mappings = EngineMappings.from_params({
        "engineLabelKey": "llm-d.ai/engine-type",
        "defaultEngine": "sglang",
        "engineConfigs": [
            {"name": "vllm", "queuedRequestsSpec": "vllm:num_requests_waiting",
             "kvUsageSpec": "vllm:gpu_cache_usage_perc"},
            {"name": "custom", "runningRequestsSpec": "custom_running"},
        ],
    })
    assert mappings.engine_label_key == "llm-d.ai/engine-type"
    # A user entry replaces the built-in one entirely: what it leaves out is disabled.
    assert mappings.engines["vllm"].kv_usage == MetricSpec("vllm:gpu_cache_usage_perc")
    assert mappings.engines["vllm"].running_requests is None
    assert mappings.engines["sglang"] is BUILTIN_ENGINE_MAPPINGS["sglang"]
    assert mappings.engine_of(ep()) == "sglang"
    assert mappings.engine_of(ep({"llm-d.ai/engine-type": "custom"})) == "custom"
    assert mappings.engine_of(ep({ENGINE_TYPE_LABEL: "custom"})) == "sglang"  # not the configured key
    assert EngineMappings.from_params(None) == EngineMappings()


@pytest.mark.parametrize(("params", "message"), [
    ({"defaultEngine": "nope"}, "parameters.defaultEngine"),
    ({"engineConfigs": {"name": "x"}}, "parameters.engineConfigs"),
    ({"engineConfigs": [{"name": "x"}, {"name": "x"}]}, r"parameters.engineConfigs\[1\].name"),
    ({"engineConfigs": [{"name": "x", "kvUsageSpec": "k{"}]}, r"parameters.engineConfigs\[0\].kvUsageSpec"),
    ({"engineLabel": "x"}, "parameters.engineLabel"),
])
def test_bad_parameters_name_the_field(params: dict, message: str) -> None:
    with pytest.raises(DataLayerConfigError, match=f"^{message}"):
        EngineMappings.from_params(params)
    # Relative to the plugin's parameters, for the config loader's own error type.
    with pytest.raises(DataLayerConfigError) as info:
        EngineMappings.from_params(params, where="")
    assert info.value.field == message.replace("\\", "").removeprefix("parameters.")


def test_metrics_data_source_parameters() -> None:
    from endpoint_picker.datalayer import ScrapeSource

    assert ScrapeSource.from_params(None) == ScrapeSource("http", "/metrics", True)
    source = ScrapeSource.from_params({"scheme": "https", "path": "/stats/prometheus", "insecureSkipVerify": False})
    assert (source.scheme, source.path, source.insecure_skip_verify) == ("https", "/stats/prometheus", False)
    context = source.ssl_context()
    assert context is not None and context.check_hostname
    assert ScrapeSource().ssl_context() is None
    for params, field in (({"scheme": "ftp"}, "parameters.scheme"), ({"path": "metrics"}, "parameters.path"),
                          ({"insecureSkipVerify": "yes"}, "parameters.insecureSkipVerify"),
                          ({"port": 1}, "parameters.port")):
        with pytest.raises(DataLayerConfigError, match=f"^{re.escape(field)}:") as info:
            ScrapeSource.from_params(params)
        assert info.value.field == field
