"""``/metrics`` under trtllm-serve's names (``--engine trtllm-serve``; model-servers.md section 4).

Why it exists: GIE's default ``engineConfigs`` has a ``trtllm-serve`` entry; a simulated trtllm-serve lets
the picker's per-engine scraping be tested. Series (labels ``model_name``, ``engine_type="trtllm"``):

- what the EPP reads: gauges ``trtllm_num_requests_waiting``, ``trtllm_num_requests_running``,
  ``trtllm_kv_cache_utilization`` (0-1), ``trtllm_kv_cache_tokens_per_block``, ``trtllm_kv_cache_max_blocks``;
- also (names from TensorRT-LLM's metrics collector as seen in public consumers, not from the reference):
  ``trtllm_kv_cache_hit_rate`` (cumulative), counter ``trtllm_request_success{finished_reason}``,
  histograms ``trtllm_time_to_first_token_seconds``, ``trtllm_time_per_output_token_seconds``,
  ``trtllm_e2e_request_latency_seconds``, ``trtllm_request_queue_time_seconds`` (vLLM's buckets).
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

__all__ = ["TrtllmMetrics"]


class TrtllmMetrics(ServerMetrics):
    def __init__(self, source: MetricsSource) -> None:
        super().__init__(source)
        labels = {"model_name": source.model_name, "engine_type": "trtllm"}
        self._labels = labels
        self._base = label_string(labels)
        h = self.histogram
        self.ttft = h("trtllm_time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                      labels, TTFT_BUCKETS)
        self.tpot = h("trtllm_time_per_output_token_seconds", "Histogram of time per output token in seconds.",
                      labels, ITL_BUCKETS)
        self.e2e = h("trtllm_e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.",
                     labels, E2E_BUCKETS)
        self.queue = h("trtllm_request_queue_time_seconds",
                       "Histogram of time spent in WAITING phase for request.", labels, E2E_BUCKETS)

    def observe(self, delivery: StepDelivery) -> None:
        observe_all(self.ttft, delivery.ttfts)
        for result, _stream in delivery.finished:
            self.e2e.observe(result.e2e_latency)
            if result.queue_time is not None:
                self.queue.observe(result.queue_time)
            if result.tpot is not None:
                self.tpot.observe(result.tpot)

    def write_series(self, w: TextWriter) -> None:
        engine = self.source.engine
        base = self._base
        c = engine.counters
        hit_rate = c.prefix_cache_hits / c.prefix_cache_queries if c.prefix_cache_queries else 0.0
        for name, doc, value in (
            ("trtllm_num_requests_waiting", "Number of requests waiting.",
             engine.num_waiting + self.source.deferred()),
            ("trtllm_num_requests_running", "Number of requests running.", engine.num_running),
            ("trtllm_kv_cache_utilization", "KV cache utilization (0-1).", engine.kv.usage),
            ("trtllm_kv_cache_tokens_per_block", "Tokens per KV cache block.", engine.block_size),
            ("trtllm_kv_cache_max_blocks", "Maximum number of KV cache blocks.", engine.config.gpu_blocks),
            ("trtllm_kv_cache_hit_rate", "KV cache block reuse hit rate.", hit_rate),
        ):
            w.gauge(name, doc, ((base, value),))
        w.counter("trtllm_request_success", "Count of successfully processed requests.",
                  [(label_string({**self._labels, "finished_reason": reason}), count)
                   for reason, count in sorted(c.request_success.items())], self.started)
