"""The picker's own Prometheus metrics, with the upstream EPP's names and labels.

Each :class:`PickerMetrics` owns its registry, so several pickers (tests) can live in one process. Per-endpoint
in-flight counts are read from the tracker at scrape time, costing nothing on the request path.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from endpoint_picker import __version__
from endpoint_picker.datalayer import MetricsStore
from endpoint_picker.datastore import Datastore, Endpoint
from endpoint_picker.inflight import InFlightTracker

_M = ("model_name", "target_model_name")
_DURATION_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30,
                     45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600)
_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536, 131072, 262144)
_SIZE_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288,
                 1048576, 2097152, 4194304, 8388608, 16777216)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 30, 60)
_TPOT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1)
_MAX_MODEL_BUNDLES = 1024
_SCHED_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


class _StateCollector(Collector):
    """Reads live state at scrape time: pool readiness and averages, and the in-flight accounting."""

    def __init__(self, inflight: InFlightTracker, datastore: Datastore, store: MetricsStore | None,
                 staleness: float) -> None:
        self._inflight = inflight
        self._datastore = datastore
        self._store = store
        self._staleness = staleness

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self._datastore.pool.name
        endpoints = self._datastore.endpoints()
        ready = GaugeMetricFamily("inference_pool_ready_pods", "Endpoints ready to serve in the pool.",
                                  labels=["name"])
        ready.add_metric([pool], len(endpoints))
        yield ready
        if self._store is not None:
            yield from self._pool_averages(pool, endpoints)
        requests = GaugeMetricFamily(
            "endpoint_picker_endpoint_inflight_requests",
            "Requests this picker routed to the endpoint and has not yet seen finish.",
            labels=["endpoint"],
        )
        tokens = GaugeMetricFamily(
            "endpoint_picker_endpoint_inflight_tokens",
            "Estimated input tokens of the requests in flight to the endpoint.",
            labels=["endpoint"],
        )
        for key, (n, t) in sorted(self._inflight.snapshot().items()):
            requests.add_metric([key], n)
            tokens.add_metric([key], t)
        yield requests
        yield tokens

    def _pool_averages(self, pool: str, endpoints: tuple[Endpoint, ...]) -> Iterator[GaugeMetricFamily]:
        """Upstream's pool gauges, over endpoints whose scraped metrics are fresh."""
        assert self._store is not None
        oldest = self._store.clock() - self._staleness
        fresh = [(ep, m) for ep in endpoints if (m := self._store.get(ep.key)) is not None and m.scraped_at >= oldest]
        kv = GaugeMetricFamily("inference_pool_average_kv_cache_utilization",
                               "Mean KV-cache utilisation of the pool's endpoints with fresh metrics.", labels=["name"])
        queue = GaugeMetricFamily("inference_pool_average_queue_size",
                                  "Mean number of requests waiting in the pool's model-server queues.", labels=["name"])
        running = GaugeMetricFamily("inference_pool_average_running_requests",
                                    "Mean number of requests running on the pool's model servers.", labels=["name"])
        per_pod = GaugeMetricFamily("inference_pool_per_pod_queue_size", "Requests waiting per model server.",
                                    labels=["name", "model_server_pod"])
        if fresh:
            n = len(fresh)
            kv.add_metric([pool], sum(m.kv_cache_usage for _, m in fresh) / n)
            queue.add_metric([pool], sum(m.waiting_queue_size for _, m in fresh) / n)
            running.add_metric([pool], sum(m.running_requests for _, m in fresh) / n)
            for ep, m in fresh:
                per_pod.add_metric([pool, ep.name], m.waiting_queue_size)
        yield kv
        yield queue
        yield running
        yield per_pod


class ModelMetrics:
    """The label children of one (model, target model) pair, resolved once: ``labels()`` is costly per call."""

    __slots__ = (
        "_errors",
        "_parent",
        "cached_tokens",
        "duration",
        "input_tokens",
        "model",
        "ntpot",
        "output_tokens",
        "request_sizes",
        "requests",
        "response_sizes",
        "running",
        "target",
        "tpot",
        "ttft",
    )

    def __init__(self, parent: PickerMetrics, model: str, target: str) -> None:
        m = (model, target)
        self.model = model
        self.target = target
        self._parent = parent
        self.requests = parent.requests.labels(*m, "0")
        self.duration = parent.duration.labels(*m)
        self.request_sizes = parent.request_sizes.labels(*m)
        self.response_sizes = parent.response_sizes.labels(*m)
        self.input_tokens = parent.input_tokens.labels(*m)
        self.output_tokens = parent.output_tokens.labels(*m)
        self.cached_tokens = parent.cached_tokens.labels(*m)
        self.ttft = parent.ttft.labels(*m)
        self.tpot = parent.tpot.labels(*m)
        self.ntpot = parent.ntpot.labels(*m)
        self.running = parent.running.labels(model)
        self._errors: dict[str, Counter] = {}

    def error(self, code: str) -> None:
        child = self._errors.get(code)
        if child is None:
            child = self._errors[code] = self._parent.errors.labels(self.model, self.target, code)
        child.inc()


class PickerMetrics:
    """All metrics of one picker instance."""

    def __init__(self, inflight: InFlightTracker, datastore: Datastore, store: MetricsStore | None = None,
                 *, staleness_threshold: float = 2.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("inference_objective_request", "Requests received, by model.",
                                [*_M, "priority"], registry=r)
        self.errors = Counter("inference_objective_request_error", "Requests that ended in an error, by code.",
                              [*_M, "error_code"], registry=r)
        self.duration = Histogram("inference_objective_request_duration_seconds",
                                  "End-to-end request latency as seen by the picker.", _M,
                                  buckets=_DURATION_BUCKETS, registry=r)
        self.request_sizes = Histogram("inference_objective_request_sizes", "Request body sizes in bytes.", _M,
                                       buckets=_SIZE_BUCKETS, registry=r)
        self.response_sizes = Histogram("inference_objective_response_sizes", "Response body sizes in bytes.", _M,
                                        buckets=_SIZE_BUCKETS, registry=r)
        self.input_tokens = Histogram("inference_objective_input_tokens", "Prompt tokens reported in usage.", _M,
                                      buckets=_TOKEN_BUCKETS, registry=r)
        self.output_tokens = Histogram("inference_objective_output_tokens", "Completion tokens reported in usage.",
                                       _M, buckets=_TOKEN_BUCKETS, registry=r)
        self.cached_tokens = Histogram("inference_objective_prompt_cached_tokens",
                                       "Prompt tokens served from the prefix cache, as reported in usage.", _M,
                                       buckets=_TOKEN_BUCKETS, registry=r)
        self.ttft = Histogram("inference_objective_request_ttft_seconds",
                              "Time to first token as seen by the picker.", _M, buckets=_TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("inference_objective_request_tpot_seconds",
                              "Time per output token after the first, as seen by the picker.", _M,
                              buckets=_TPOT_BUCKETS, registry=r)
        self.ntpot = Histogram("inference_objective_normalized_time_per_output_token_seconds",
                               "Request latency divided by output tokens.", _M, buckets=_TPOT_BUCKETS, registry=r)
        self.running = Gauge("inference_objective_running_requests", "Requests in flight, by model.",
                             ["model_name"], registry=r)
        self.plugin_duration = Histogram("inference_extension_plugin_duration_seconds",
                                         "Time spent in each scheduling plugin.",
                                         ["extension_point", "plugin_type", "plugin_name"],
                                         buckets=_SCHED_BUCKETS, registry=r)
        self._plugin_children: dict[tuple[str, str], Histogram] = {}
        self.model_rewrite_decisions = Counter(
            "inference_extension_model_rewrite_decisions", "Model rewrites applied, by rewrite and target.",
            ["model_rewrite_name", "model_name", "target_model"], registry=r)
        self.scheduler_e2e = Histogram("inference_extension_scheduler_e2e_duration_seconds",
                                       "Time spent choosing an endpoint.", buckets=_SCHED_BUCKETS, registry=r)
        info = Gauge("inference_extension_info", "Build information.", ["commit", "build_ref"], registry=r)
        info.labels(commit="unknown", build_ref=__version__).set(1)
        r.register(_StateCollector(inflight, datastore, store, staleness_threshold))
        self._by_model: dict[tuple[str, str], ModelMetrics] = {}

    def for_model(self, model: str, target: str | None = None) -> ModelMetrics:
        key = (model, target or model)
        bundle = self._by_model.get(key)
        if bundle is None:
            if len(self._by_model) >= _MAX_MODEL_BUNDLES:
                self._by_model.clear()  # clients choose model names: keep the cache bounded
            bundle = self._by_model[key] = ModelMetrics(self, *key)
        return bundle

    def time_plugin(self, extension_point: str, plugin: object, seconds: float) -> None:
        """Observe one plugin call (the scheduler's plugin timer); label children are resolved once."""
        name = getattr(plugin, "name", "")
        child = self._plugin_children.get((extension_point, name))
        if child is None:
            child = self.plugin_duration.labels(extension_point, getattr(plugin, "type_name", ""), name)
            self._plugin_children[(extension_point, name)] = child
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
