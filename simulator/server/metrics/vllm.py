"""``/metrics`` exactly as vLLM 0.33 names and labels it (model-servers.md section 2).

Why it exists: the picker's scrapers (ours, upstream GIE's, llm-d's) and benchmark clients read these
series by name, so a simulated vLLM must expose the same families, types, labels and semantics:

- gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` (capacity + deferred: requests
  waiting for a remote prefiller's KV), ``vllm:num_requests_waiting_by_reason{reason}``,
  ``vllm:kv_cache_usage_perc`` (0-1, idle cached blocks count as free), ``vllm:engine_sleep_state``;
- ``vllm:cache_config_info`` = 1 with every CacheConfig field as a string label plus ``engine`` (no
  ``model_name``) -- ``block_size`` and ``num_gpu_blocks`` among them;
- ``vllm:lora_requests_info`` (only with ``--enable-lora``): labels only ``max_lora``,
  ``running_lora_adapters``, ``waiting_lora_adapters`` (comma-joined, no spaces), value = the Unix time the
  combination was last seen; every combination persists (consumers take the largest value). Updated every
  engine step and at scrape time; the 64 most recent combinations are kept;
- counters (``_total`` on the wire): ``prefix_cache_queries`` / ``_hits``, ``external_prefix_cache_*``,
  ``prompt_tokens``, ``generation_tokens``, ``prompt_tokens_cached``, ``request_success{finished_reason}``,
  ``num_preemptions``;
- histograms: TTFT, inter-token latency, per-request TPOT, e2e / queue / inference / prefill / decode
  times, prompt / generation / max-tokens / prefill-KV-computed token counts, ``iteration_tokens_total``,
  ``request_params_n``.

Labels ``model_name`` (served name) and ``engine`` ("0") on everything else.
"""

from __future__ import annotations

import collections
import time

from simulator.server.driver import StepDelivery
from simulator.server.metrics.common import (
    E2E_BUCKETS,
    ITERATION_TOKEN_BUCKETS,
    ITL_BUCKETS,
    TTFT_BUCKETS,
    MetricsSource,
    ServerMetrics,
    buckets_1_2_5,
    observe_all,
)
from simulator.server.metrics.exposition import TextWriter, label_string

__all__ = ["VllmMetrics", "cache_config_labels"]

_FINISH_REASONS = ("stop", "length", "abort", "error")
_MAX_LORA_COMBINATIONS = 64


def cache_config_labels(source: MetricsSource) -> dict[str, str]:
    """``vllm:cache_config_info``'s labels: vLLM 0.33's CacheConfig fields, stringified, plus ``engine``."""
    cfg = source.engine.config
    capacity_tokens = cfg.usable_blocks * cfg.block_size
    return {
        "block_size": str(cfg.block_size),
        "cache_dtype": "auto",
        "calculate_kv_scales": "False",
        "cpu_offload_gb": "0",
        "enable_prefix_caching": str(cfg.enable_prefix_caching),
        "engine": "0",
        "gpu_memory_utilization": "0.92",
        "hash_block_size": str(cfg.block_size),
        "is_attention_free": "False",
        "kv_cache_layout": "None",
        "kv_cache_max_concurrency": f"{capacity_tokens / cfg.model_len:.2f}",
        "kv_cache_memory_bytes": "None",
        "kv_cache_size_tokens": str(capacity_tokens),
        "kv_offloading_size": "None",
        "kv_sharing_fast_prefill": "False",
        "mamba_cache_dtype": "auto",
        "num_cpu_blocks": "None",
        "num_gpu_blocks": str(cfg.gpu_blocks),
        "num_gpu_blocks_override": "None" if cfg.num_gpu_blocks is None else str(cfg.num_gpu_blocks),
        "prefix_caching_hash_algo": cfg.prefix_caching_hash_algo,
        "prefix_match_unit": "None",
        "sliding_window": "None",
        "swap_space": "4",
        "user_specified_block_size": "False",
    }


class VllmMetrics(ServerMetrics):
    def __init__(self, source: MetricsSource) -> None:
        super().__init__(source)
        labels = {"model_name": source.model_name, "engine": "0"}
        self._labels = labels
        self._base = label_string(labels)
        self._reason_capacity = label_string({**labels, "reason": "capacity"})
        self._reason_deferred = label_string({**labels, "reason": "deferred"})
        self._sleep_labels = [label_string({**labels, "sleep_state": state})
                              for state in ("awake", "weights_offloaded", "discard_all")]
        self._cache_info = label_string(cache_config_labels(source))
        self._finish_labels: dict[str, str] = {}
        self._lora = source.engine.config.enable_lora
        self._lora_seen: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        max_len = source.engine.max_model_len
        tokens = buckets_1_2_5(max_len)
        h = self.histogram
        self.ttft = h("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                      labels, TTFT_BUCKETS)
        self.itl = h("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                     labels, ITL_BUCKETS)
        self.tpot = h("vllm:request_time_per_output_token_seconds",
                      "Histogram of time_per_output_token_seconds per request.", labels, ITL_BUCKETS)
        self.e2e = h("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                     labels, E2E_BUCKETS)
        self.queue = h("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                       labels, E2E_BUCKETS)
        self.inference = h("vllm:request_inference_time_seconds",
                           "Histogram of time spent in RUNNING phase for request.", labels, E2E_BUCKETS)
        self.prefill = h("vllm:request_prefill_time_seconds",
                         "Histogram of time spent in PREFILL phase for request.", labels, E2E_BUCKETS)
        self.decode = h("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
                        labels, E2E_BUCKETS)
        self.prompt_len = h("vllm:request_prompt_tokens", "Number of prefill tokens processed.", labels, tokens)
        self.gen_len = h("vllm:request_generation_tokens", "Number of generation tokens processed.", labels, tokens)
        self.max_gen = h("vllm:request_max_num_generation_tokens",
                         "Histogram of maximum number of requested generation tokens.", labels, tokens)
        self.max_tokens = h("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.",
                            labels, tokens)
        self.kv_computed = h("vllm:request_prefill_kv_computed_tokens",
                             "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
                             labels, tokens)
        self.n_param = h("vllm:request_params_n", "Histogram of the n request parameter.", labels, (1, 2, 5, 10, 20))
        self.iteration = h("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
                           labels, ITERATION_TOKEN_BUCKETS)

    # -- histograms, per step -------------------------------------------------------------------------

    def observe(self, delivery: StepDelivery) -> None:
        step = delivery.step
        if step.num_scheduled_tokens:
            self.iteration.observe(step.num_scheduled_tokens)
        observe_all(self.ttft, delivery.ttfts)
        observe_all(self.itl, delivery.itls)
        for result, stream in delivery.finished:
            self.e2e.observe(result.e2e_latency)
            queue = result.queue_time
            if queue is not None:
                self.queue.observe(queue)
            first_scheduled = result.first_scheduled_time
            first_token = result.first_token_time
            if first_scheduled is not None:
                self.inference.observe(result.finish_time - first_scheduled)
                if first_token is not None:
                    self.prefill.observe(first_token - first_scheduled)
            if first_token is not None:
                self.decode.observe(result.finish_time - first_token)
            tpot = result.tpot
            if tpot is not None:
                self.tpot.observe(tpot)
            self.prompt_len.observe(result.prompt_tokens)
            self.gen_len.observe(result.output_tokens)
            self.max_gen.observe(result.output_tokens)
            self.max_tokens.observe(stream.max_tokens)
            self.kv_computed.observe(result.prompt_tokens - result.cached_tokens)
            self.n_param.observe(1)
        if self._lora:
            self.note_lora_combination()

    def note_lora_combination(self) -> None:
        running, waiting = self.source.engine.lora_adapters()
        key = (",".join(running), ",".join(waiting))
        seen = self._lora_seen
        seen[key] = time.time()
        seen.move_to_end(key)
        while len(seen) > _MAX_LORA_COMBINATIONS:
            seen.popitem(last=False)

    # -- gauges and counters, at scrape time ----------------------------------------------------------

    def write_series(self, w: TextWriter) -> None:
        src = self.source
        engine = src.engine
        base = self._base
        deferred = src.deferred()
        capacity = engine.num_waiting
        w.gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                ((base, engine.num_running),))
        w.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                ((base, capacity + deferred),))
        w.gauge("vllm:num_requests_waiting_by_reason", "Number of requests waiting to be processed, by reason.",
                ((self._reason_capacity, capacity), (self._reason_deferred, deferred)))
        w.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", ((base, engine.kv.usage),))
        w.gauge("vllm:engine_sleep_state", "Engine sleep state; awake = 0 means engine is sleeping.",
                tuple(zip(self._sleep_labels, (1, 0, 0), strict=True)))
        w.gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", ((self._cache_info, 1),))
        if self._lora:
            self.note_lora_combination()
            max_lora = str(engine.config.max_loras)
            w.gauge("vllm:lora_requests_info", "Running stats on lora requests.",
                    [(label_string({"max_lora": max_lora, "running_lora_adapters": running,
                                    "waiting_lora_adapters": waiting}), seen_at)
                     for (running, waiting), seen_at in self._lora_seen.items()])
        c = engine.counters
        created = self.started
        for name, doc, value in (
            ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
             c.prefix_cache_queries),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", c.prefix_cache_hits),
            ("vllm:external_prefix_cache_queries",
             "External prefix cache queries from KV connector cross-instance cache sharing.",
             c.external_prefix_cache_queries),
            ("vllm:external_prefix_cache_hits",
             "External prefix cache hits from KV connector cross-instance cache sharing.",
             c.external_prefix_cache_hits),
            ("vllm:num_preemptions", "Cumulative number of preemption from the engine.", c.num_preemptions),
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", c.prompt_tokens),
            ("vllm:generation_tokens", "Number of generation tokens processed.", c.generation_tokens),
            ("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).",
             c.prompt_tokens_cached),
        ):
            w.counter(name, doc, ((base, value),), created)
        reasons = dict.fromkeys(_FINISH_REASONS, 0)
        reasons.update(c.request_success)
        w.counter("vllm:request_success", "Count of successfully processed requests.",
                  [(self._reason_label(reason), count) for reason, count in reasons.items()], created)

    def _reason_label(self, reason: str) -> str:
        label = self._finish_labels.get(reason)
        if label is None:
            label = self._finish_labels[reason] = label_string({**self._labels, "finished_reason": reason})
        return label
