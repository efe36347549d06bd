"""``/metrics`` under SGLang's names (``--engine sglang``; SGLang 0.5.23, model-servers.md sections 4 and 2).

Why it exists: pools mix engines, and the picker picks the metric names per endpoint from its engine type;
a simulated SGLang server lets that path be tested. Series:

- gauges ``sglang:num_running_reqs``, ``sglang:num_queue_reqs`` (incl. requests waiting for remote KV),
  ``sglang:token_usage`` (0-1, as vLLM's KV usage), ``sglang:num_used_tokens``,
  ``sglang:max_total_num_tokens``, ``sglang:cache_hit_rate`` (cumulative hits / queries -- a guess at
  SGLang's windowed rate), ``sglang:gen_throughput`` (generated tokens per model second since the
  previous scrape), ``sglang:page_size`` and ``sglang:num_pages`` (0.5.12+), and also
  ``sglang:cache_config_info{page_size, num_pages}`` (the 0.5.8-0.5.11 form that GIE's default
  ``engineConfigs`` reads -- both are emitted so either reader works);
- counters ``sglang:prompt_tokens``, ``sglang:generation_tokens``, ``sglang:cached_tokens``,
  ``sglang:num_requests`` (``_total`` on the wire);
- histograms ``sglang:time_to_first_token_seconds``, ``sglang:inter_token_latency_seconds``,
  ``sglang:request_time_per_output_token_seconds``, ``sglang:e2e_request_latency_seconds``,
  ``sglang:queue_time_seconds`` (vLLM's buckets; SGLang's own bucket choices are not reproduced).

Labels ``model_name``, ``engine_type`` (``unified`` / ``prefill`` / ``decode`` from ``--role``), ``tp_rank``,
``pp_rank``, ``moe_ep_rank`` (all "0").
"""

from __future__ import annotations

from simulator.server.driver import StepDelivery
from simulator.server.metrics.common import (
    E2E_BUCKETS,
    ITL_BUCKETS,
    TTFT_BUCKETS,
    MetricsSource,
    ServerMetrics,
    observe_all,
)
from simulator.server.metrics.exposition import TextWriter, label_string

__all__ = ["SglangMetrics"]

_ENGINE_TYPE = {"both": "unified", "prefill": "prefill", "decode": "decode"}


class SglangMetrics(ServerMetrics):
    def __init__(self, source: MetricsSource) -> None:
        super().__init__(source)
        labels = {
            "model_name": source.model_name,
            "engine_type": _ENGINE_TYPE.get(source.role, "unified"),
            "tp_rank": "0",
            "pp_rank": "0",
            "moe_ep_rank": "0",
        }
        self._base = label_string(labels)
        cfg = source.engine.config
        self._cache_info = label_string({**labels, "page_size": str(cfg.block_size),
                                         "num_pages": str(cfg.gpu_blocks)})
        self._num_requests = 0
        self._last_gen: tuple[float, int] = (0.0, 0)
        self._throughput = 0.0
        h = self.histogram
        self.ttft = h("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                      labels, TTFT_BUCKETS)
        self.itl = h("sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                     labels, ITL_BUCKETS)
        self.tpot = h("sglang:request_time_per_output_token_seconds",
                      "Histogram of time per output token in seconds.", labels, ITL_BUCKETS)
        self.e2e = h("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds",
                     labels, E2E_BUCKETS)
        self.queue = h("sglang:queue_time_seconds", "Histogram of queueing time in seconds.", labels, E2E_BUCKETS)

    def observe(self, delivery: StepDelivery) -> None:
        observe_all(self.ttft, delivery.ttfts)
        observe_all(self.itl, delivery.itls)
        for result, _stream in delivery.finished:
            self._num_requests += 1
            self.e2e.observe(result.e2e_latency)
            if result.queue_time is not None:
                self.queue.observe(result.queue_time)
            if result.tpot is not None:
                self.tpot.observe(result.tpot)

    def write_series(self, w: TextWriter) -> None:
        engine = self.source.engine
        base = self._base
        kv = engine.kv
        bs = engine.block_size
        usable = kv.usable_blocks
        c = engine.counters
        now = engine.now
        last_t, last_gen = self._last_gen
        if now > last_t:
            self._throughput = (c.generation_tokens - last_gen) / (now - last_t)
            self._last_gen = (now, c.generation_tokens)
        hit_rate = c.prefix_cache_hits / c.prefix_cache_queries if c.prefix_cache_queries else 0.0
        for name, doc, value in (
            ("sglang:num_running_reqs", "The number of running requests.", engine.num_running),
            ("sglang:num_queue_reqs", "The number of requests in the waiting queue.",
             engine.num_waiting + self.source.deferred()),
            ("sglang:token_usage", "The token usage.", kv.usage),
            ("sglang:num_used_tokens", "The number of used tokens.", (usable - kv.num_free_blocks) * bs),
            ("sglang:max_total_num_tokens", "Maximum total number of tokens in the KV cache pool.", usable * bs),
            ("sglang:cache_hit_rate", "The prefix cache hit rate.", hit_rate),
            ("sglang:gen_throughput", "The generation throughput (token/s).", self._throughput),
            ("sglang:page_size", "The KV cache page size in tokens.", bs),
            ("sglang:num_pages", "The number of KV cache pages.", engine.config.gpu_blocks),
        ):
            w.gauge(name, doc, ((base, value),))
        w.gauge("sglang:cache_config_info", "Information of the KV cache config.", ((self._cache_info, 1),))
        created = self.started
        for name, doc, value in (
            ("sglang:prompt_tokens", "Number of prefill tokens processed.", c.prompt_tokens),
            ("sglang:generation_tokens", "Number of generation tokens processed.", c.generation_tokens),
            ("sglang:cached_tokens", "Number of cached prompt tokens.", c.prompt_tokens_cached),
            ("sglang:num_requests", "Number of requests processed.", self._num_requests),
        ):
            w.counter(name, doc, ((base, value),), created)
