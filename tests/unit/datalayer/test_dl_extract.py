"""Page -> EndpointMetrics with each engine's built-in mapping, on the simulator's real pages (vLLM with
LoRA, SGLang, trtllm-serve) and a Triton TensorRT-LLM page; what a missing, garbled or non-finite series
does; staleness; and the scrape counters' Prometheus names."""

from __future__ import annotations

import pytest
from dl_pages import build, reference
from prometheus_client import CollectorRegistry, generate_latest

from endpoint_picker.datalayer import (
    BUILTIN_ENGINE_MAPPINGS,
    EndpointMetrics,
    MetricsExtractor,
    NoMetricsError,
    PromParseError,
    ScrapeStats,
    ScrapeStatsCollector,
    is_stale,
)
from endpoint_picker.datalayer.promtext import ScanHints


def extractor(engine: str) -> MetricsExtractor:
    return MetricsExtractor(BUILTIN_ENGINE_MAPPINGS[engine])


def test_vllm_page() -> None:
    engine, metrics = build("vllm", lora=True)
    page = metrics.render()
    ref = reference(page)
    got = extractor("vllm").extract(page, 12.5)
    assert got.missing == ()
    m = got.metrics
    assert m.scraped_at == 12.5
    assert m.running_requests == engine.num_running == 2
    assert m.waiting_queue_size == engine.num_waiting + 1 == 4  # + 1 waiting for remote KV (deferred)
    assert m.kv_cache_usage == pytest.approx(engine.kv.usage) and m.kv_cache_usage > 0
    assert (m.block_size, m.num_gpu_blocks) == (16, 500)
    newest = max(ref["vllm:lora_requests_info"], key=lambda s: s[1])[0]
    assert m.active_models == frozenset(filter(None, newest["running_lora_adapters"].split(",")))
    assert m.waiting_models == frozenset(filter(None, newest["waiting_lora_adapters"].split(",")))
    assert m.max_active_models == 2
    assert m.prefix_cache_queries == ref["vllm:prefix_cache_queries_total"][0][1] > 0
    assert m.prefix_cache_hits == ref["vllm:prefix_cache_hits_total"][0][1]


def test_vllm_page_without_lora_reports_it_missing_and_keeps_the_rest() -> None:
    _engine, metrics = build("vllm")
    got = extractor("vllm").extract(metrics.render(), 1.0)
    assert got.missing == ("lora",)
    assert got.metrics.running_requests == 2 and got.metrics.active_models == frozenset()


def test_sglang_page() -> None:
    engine, metrics = build("sglang")
    page = metrics.render()
    ref = reference(page)
    got = extractor("sglang").extract(page, 1.0)
    assert got.missing == ()
    m = got.metrics
    assert (m.running_requests, m.waiting_queue_size) == (2, 4)
    assert m.kv_cache_usage == pytest.approx(engine.kv.usage) and m.kv_cache_usage > 0
    assert (m.block_size, m.num_gpu_blocks) == (16, 500)
    assert m.prefix_cache_queries == ref["sglang:prompt_tokens_total"][0][1]
    assert m.prefix_cache_hits == ref["sglang:cached_tokens_total"][0][1]


def test_sglang_geometry_from_the_newer_gauges_when_the_info_series_is_gone() -> None:
    _engine, metrics = build("sglang")
    page = b"\n".join(line for line in metrics.render().split(b"\n") if b"cache_config_info" not in line)
    got = extractor("sglang").extract(page, 1.0)
    assert (got.metrics.block_size, got.metrics.num_gpu_blocks) == (16, 500)
    assert got.missing == ()


def test_trtllm_serve_page() -> None:
    engine, metrics = build("trtllm-serve")
    got = extractor("trtllm-serve").extract(metrics.render(), 1.0)
    assert got.missing == ()
    m = got.metrics
    assert (m.running_requests, m.waiting_queue_size) == (2, 4)
    assert m.kv_cache_usage == pytest.approx(engine.kv.usage) and m.kv_cache_usage > 0
    assert (m.block_size, m.num_gpu_blocks) == (16, 500)


TRITON_PAGE = b"""\
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="context",version="1"} 1
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="scheduled",version="1"} 6
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 64
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 6
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 3
# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="tensorrt_llm",version="1"} 64
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="tensorrt_llm",version="1"} 120
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="free",model="tensorrt_llm",version="1"} 280
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 400
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",version="1"} 0.3
"""


def test_triton_tensorrt_llm_page_selects_series_by_label() -> None:
    got = extractor("triton-tensorrt-llm").extract(TRITON_PAGE, 1.0)
    assert got.missing == ()
    m = got.metrics
    assert (m.waiting_queue_size, m.running_requests, m.kv_cache_usage) == (3, 6, 0.3)
    assert (m.block_size, m.num_gpu_blocks) == (64, 400)


def test_the_newest_sample_wins_and_lora_takes_the_largest_value() -> None:
    page = b"""\
vllm:num_requests_waiting{engine="0"} 5 1000
vllm:num_requests_waiting{engine="1"} 7 3000
vllm:num_requests_waiting{engine="2"} 9 2000
vllm:num_requests_running{engine="0"} 1
vllm:num_requests_running{engine="1"} 2
vllm:lora_requests_info{max_lora="4",running_lora_adapters="a, b",waiting_lora_adapters="c"} 200.0
vllm:lora_requests_info{max_lora="4",running_lora_adapters="old",waiting_lora_adapters=""} 100.0
"""
    m = extractor("vllm").extract(page, 1.0).metrics
    assert m.waiting_queue_size == 7  # newest timestamp
    assert m.running_requests == 1  # no timestamps: the first
    assert (m.active_models, m.waiting_models, m.max_active_models) == (frozenset({"a", "b"}), frozenset({"c"}), 4)


def test_missing_or_non_finite_series_keep_the_previous_values() -> None:
    previous = EndpointMetrics(scraped_at=1.0, waiting_queue_size=3, running_requests=4, kv_cache_usage=0.5,
                               block_size=32, num_gpu_blocks=99)
    page = b'vllm:num_requests_running 7\nvllm:num_requests_waiting NaN\nvllm:kv_cache_usage_perc +Inf\n' \
           b'vllm:cache_config_info{block_size="None",num_gpu_blocks="1000"} 1\n'
    got = extractor("vllm").extract(page, 2.0, previous)
    m = got.metrics
    assert (m.scraped_at, m.running_requests, m.waiting_queue_size, m.kv_cache_usage) == (2.0, 7, 3, 0.5)
    assert (m.block_size, m.num_gpu_blocks) == (32, 1000)
    assert set(got.missing) == {"queued_requests", "kv_usage", "lora", "prefix_cache_queries", "prefix_cache_hits"}


@pytest.mark.parametrize("page", [
    b"<html><body>Not Found</body></html>",
    b"",
    b"\x00\xff\xfe garbage",
    b"other_metric 1\n",
    b'nv_trt_llm_request_metrics{request_type="context"} 1\n',  # right family, no matching series
])
def test_pages_without_any_mapped_series_are_errors(page: bytes) -> None:
    engine = "triton-tensorrt-llm" if page.startswith(b"nv_") else "vllm"
    with pytest.raises(NoMetricsError):
        extractor(engine).extract(page, 1.0)


def test_a_malformed_mapped_line_is_an_error() -> None:
    with pytest.raises(PromParseError):
        extractor("vllm").extract(b"vllm:num_requests_running{engine=\"0\"} twelve\n", 1.0)


def test_hints_give_the_same_snapshots() -> None:
    ex = extractor("vllm")
    hints = ScanHints()
    _engine, metrics = build("vllm", lora=True)
    for i in range(30):
        page = metrics.render()
        assert ex.extract(page, float(i), None, hints) == ex.extract(page, float(i))


def test_is_stale() -> None:
    m = EndpointMetrics(scraped_at=10.0)
    assert is_stale(None, 10.0, 0.2)
    assert not is_stale(m, 10.2, 0.2)
    assert is_stale(m, 10.21, 0.2)
    assert not is_stale(m, 1e9, 0)  # threshold 0: the age check is off


def test_scrape_stats_and_their_prometheus_names() -> None:
    stats = ScrapeStats()
    stats.success("10.0.0.1:8000")
    stats.error("10.0.0.2:8000", "timeout", "no answer")
    stats.error("10.0.0.2:8000", "timeout")
    stats.error("10.0.0.2:8000", "connect", "refused")
    assert stats.errors_of("10.0.0.2:8000") == 3 and stats.errors_of("10.0.0.2:8000", "timeout") == 2
    assert stats.last_error["10.0.0.2:8000"] == "connect: refused"
    registry = CollectorRegistry()
    registry.register(ScrapeStatsCollector(stats))
    text = generate_latest(registry).decode()
    assert 'endpoint_picker_metrics_scrapes_total{endpoint="10.0.0.1:8000"} 1.0' in text
    assert 'endpoint_picker_metrics_scrape_errors_total{endpoint="10.0.0.2:8000",reason="timeout"} 2.0' in text
    stats.forget(["10.0.0.2:8000"])
    assert stats.errors == {} and "10.0.0.2:8000" not in stats.last_error
