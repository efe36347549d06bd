"""``/metrics`` of the simulated server, parsed with prometheus_client's parser: exact series names, types
and labels per engine flavour (vLLM, SGLang, trtllm-serve), values that follow the engine, and the fast
exposition writer's output format."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from simulator.engine import Engine, EngineConfig, EngineRequest
from simulator.server.driver import RequestStream, StepDelivery
from simulator.server.metrics import MetricsSource, ServerMetrics, make_metrics
from simulator.server.metrics.common import buckets_1_2_5
from simulator.server.metrics.exposition import Histogram, TextWriter

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def build(kind: str, **engine_overrides: object) -> tuple[Engine, ServerMetrics]:
    engine = Engine(EngineConfig(num_gpu_blocks=500, **engine_overrides))  # type: ignore[arg-type]
    return engine, make_metrics(kind, MetricsSource(engine, MODEL, lambda: 2, "both"))


def run(engine: Engine, metrics: ServerMetrics, requests: list[EngineRequest]) -> None:
    """Step the engine to completion, feeding deliveries to the metrics as the driver would."""
    streams = {r.request_id: RequestStream(r.request_id, len(r.prompt_token_ids), r.max_tokens, 0.0)
               for r in requests}
    for r in requests:
        engine.add_request(r)
    for _ in range(10_000):
        if not engine.has_unfinished_requests():
            break
        step = engine.step()
        ttfts, itls = [], []
        for rid, _token in step.tokens:
            s = streams[rid]
            if s.last_token_time is None:
                ttfts.append(step.end_time - s.arrival_time)
            else:
                itls.append(step.end_time - s.last_token_time)
            s.last_token_time = step.end_time
        finished = [(res, streams[res.request_id]) for res in step.finished]
        metrics.observe(StepDelivery(step, ttfts, itls, finished))


def samples(metrics: ServerMetrics) -> dict[str, list[Sample]]:
    text = metrics.render().decode()
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def families(metrics: ServerMetrics) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(metrics.render().decode())}


def value(series: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matches = [s.value for s in series[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, series.get(name))
    return matches[0]


def test_vllm_series_names_types_and_labels() -> None:
    engine, metrics = build("vllm")
    fams = families(metrics)
    expected = {
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:num_requests_waiting_by_reason": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:cache_config_info": "gauge",
        "vllm:engine_sleep_state": "gauge",
        "vllm:prefix_cache_queries": "counter",
        "vllm:prefix_cache_hits": "counter",
        "vllm:external_prefix_cache_queries": "counter",
        "vllm:external_prefix_cache_hits": "counter",
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:prompt_tokens_cached": "counter",
        "vllm:request_success": "counter",
        "vllm:num_preemptions": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:request_time_per_output_token_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:request_queue_time_seconds": "histogram",
        "vllm:request_inference_time_seconds": "histogram",
        "vllm:request_prefill_time_seconds": "histogram",
        "vllm:request_decode_time_seconds": "histogram",
        "vllm:request_prompt_tokens": "histogram",
        "vllm:request_generation_tokens": "histogram",
        "vllm:request_max_num_generation_tokens": "histogram",
        "vllm:request_params_max_tokens": "histogram",
        "vllm:request_prefill_kv_computed_tokens": "histogram",
        "vllm:request_params_n": "histogram",
        "vllm:iteration_tokens_total": "histogram",
    }
    for name, kind in expected.items():
        assert fams.get(name) == kind, name
    assert "vllm:lora_requests_info" not in fams  # only with --enable-lora
    series = samples(metrics)
    # Counters are scraped as <name>_total; everything but cache_config_info carries model_name + engine.
    assert "vllm:prefix_cache_hits_total" in series and "vllm:prefix_cache_hits" not in series
    base = {"model_name": MODEL, "engine": "0"}
    for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total"):
        (s,) = series[name]
        assert s.labels == base
    assert value(series, "vllm:num_requests_waiting") == 2  # the deferred (remote-KV) requests
    assert value(series, "vllm:num_requests_waiting_by_reason", reason="deferred") == 2
    assert value(series, "vllm:num_requests_waiting_by_reason", reason="capacity") == 0
    (info,) = series["vllm:cache_config_info"]
    assert info.value == 1
    assert info.labels["block_size"] == "16" and info.labels["num_gpu_blocks"] == "500"
    assert info.labels["engine"] == "0" and "model_name" not in info.labels
    assert info.labels["enable_prefix_caching"] == "True" and info.labels["prefix_caching_hash_algo"] == "sha256"
    reasons = {s.labels["finished_reason"] for s in series["vllm:request_success_total"]}
    assert reasons >= {"stop", "length", "abort"}
    les = [s.labels["le"] for s in series["vllm:time_to_first_token_seconds_bucket"]]
    assert les[0] == "0.001" and les[-2] == "2560.0" and les[-1] == "+Inf"
    assert engine.now == 0.0


def test_vllm_values_follow_the_engine() -> None:
    engine, metrics = build("vllm")
    prompt = list(range(1000, 1040))  # 2 full blocks + 8
    run(engine, metrics, [EngineRequest("a", prompt, max_tokens=4, output_len=None)])
    run(engine, metrics, [EngineRequest("b", prompt, max_tokens=4)])
    series = samples(metrics)
    assert value(series, "vllm:prefix_cache_queries_total") == 80
    assert value(series, "vllm:prefix_cache_hits_total") == 32
    assert value(series, "vllm:prompt_tokens_total") == 80
    assert value(series, "vllm:generation_tokens_total") == 8
    assert value(series, "vllm:request_success_total", finished_reason="length") == 2
    assert value(series, "vllm:time_to_first_token_seconds_count") == 2
    assert value(series, "vllm:inter_token_latency_seconds_count") == 6
    assert value(series, "vllm:e2e_request_latency_seconds_count") == 2
    assert value(series, "vllm:request_prompt_tokens_sum") == 80
    assert value(series, "vllm:request_prefill_kv_computed_tokens_sum") == 80 - 32
    assert value(series, "vllm:num_requests_running") == 0
    buckets = series["vllm:inter_token_latency_seconds_bucket"]
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative
    assert buckets[-1].value == 6


def test_vllm_lora_requests_info() -> None:
    engine, metrics = build("vllm", enable_lora=True, max_loras=2)
    engine.add_request(EngineRequest("a", list(range(20)), max_tokens=50, lora_name="sql"))
    engine.add_request(EngineRequest("b", list(range(20)), max_tokens=50, lora_name="chat"))
    engine.step()
    before = time.time()
    series = samples(metrics)
    lora = series["vllm:lora_requests_info"]
    assert all(set(s.labels) == {"max_lora", "running_lora_adapters", "waiting_lora_adapters"} for s in lora)
    newest = max(lora, key=lambda s: s.value)
    assert newest.labels == {"max_lora": "2", "running_lora_adapters": "chat,sql", "waiting_lora_adapters": ""}
    assert newest.value >= before - 1  # a Unix timestamp


def test_sglang_series() -> None:
    engine, metrics = build("sglang")
    run(engine, metrics, [EngineRequest("a", list(range(40)), max_tokens=3)])
    fams = families(metrics)
    for name in ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage", "sglang:page_size",
                 "sglang:num_pages", "sglang:cache_config_info", "sglang:cache_hit_rate",
                 "sglang:num_used_tokens", "sglang:max_total_num_tokens", "sglang:gen_throughput"):
        assert fams.get(name) == "gauge", name
    for name in ("sglang:prompt_tokens", "sglang:generation_tokens", "sglang:cached_tokens", "sglang:num_requests"):
        assert fams.get(name) == "counter", name
    for name in ("sglang:time_to_first_token_seconds", "sglang:inter_token_latency_seconds",
                 "sglang:e2e_request_latency_seconds", "sglang:queue_time_seconds",
                 "sglang:request_time_per_output_token_seconds"):
        assert fams.get(name) == "histogram", name
    series = samples(metrics)
    labels = series["sglang:num_queue_reqs"][0].labels
    assert labels == {"model_name": MODEL, "engine_type": "unified", "tp_rank": "0", "pp_rank": "0",
                      "moe_ep_rank": "0"}
    assert value(series, "sglang:num_queue_reqs") == 2
    assert value(series, "sglang:page_size") == 16 and value(series, "sglang:num_pages") == 500
    (info,) = series["sglang:cache_config_info"]
    assert info.labels["page_size"] == "16" and info.labels["num_pages"] == "500"
    assert value(series, "sglang:generation_tokens_total") == 3
    assert value(series, "sglang:num_requests_total") == 1


def test_trtllm_series() -> None:
    engine, metrics = build("trtllm-serve")
    run(engine, metrics, [EngineRequest("a", list(range(40)), max_tokens=3)])
    series = samples(metrics)
    base = {"model_name": MODEL, "engine_type": "trtllm"}
    for name in ("trtllm_num_requests_waiting", "trtllm_num_requests_running", "trtllm_kv_cache_utilization",
                 "trtllm_kv_cache_tokens_per_block", "trtllm_kv_cache_max_blocks"):
        (s,) = series[name]
        assert s.labels == base, name
    assert value(series, "trtllm_kv_cache_tokens_per_block") == 16
    assert value(series, "trtllm_kv_cache_max_blocks") == 500
    assert value(series, "trtllm_num_requests_waiting") == 2
    assert value(series, "trtllm_request_success_total", finished_reason="length") == 1
    assert value(series, "trtllm_time_to_first_token_seconds_count") == 1
    assert not any(name.startswith("vllm:") for name in series)


def test_kv_usage_counts_only_referenced_blocks() -> None:
    engine, metrics = build("vllm")
    engine.add_request(EngineRequest("a", list(range(64)), max_tokens=100))
    engine.step()
    running = value(samples(metrics), "vllm:kv_cache_usage_perc")
    assert running == engine.kv.usage > 0
    engine.abort("a")
    assert value(samples(metrics), "vllm:kv_cache_usage_perc") == 0.0  # cached but unreferenced = free


def test_buckets_1_2_5() -> None:
    assert buckets_1_2_5(100) == (1, 2, 5, 10, 20, 50, 100)
    assert buckets_1_2_5(131072)[-1] == 100000


def test_exposition_writer_format() -> None:
    w = TextWriter()
    w.gauge("g", "a gauge", (('{a="x\\"y"}', 1.5),))
    w.counter("c", "a counter", (("", 3),), created=12.0)
    h = Histogram("h_seconds", "a histogram", {"z": "1", "a": "2"}, (0.1, 1.0), created=12.0)
    for v in (0.05, 0.1, 0.5, 7.0):
        h.observe(v)
    h.write(w)
    text = w.getvalue().decode()
    assert 'h_seconds_bucket{a="2",le="0.1",z="1"} 2.0\n' in text  # le is inclusive; labels sorted
    assert 'h_seconds_bucket{a="2",le="+Inf",z="1"} 4.0\n' in text
    assert "c_total 3.0\n" in text and "c_created 12.0\n" in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["g"].samples[0].labels == {"a": 'x"y'}
    assert fams["h_seconds"].type == "histogram"
    assert h.bucket_counts() == [2, 3, 4]
