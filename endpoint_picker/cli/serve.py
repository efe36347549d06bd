"""``endpoint-picker serve``: run the Endpoint Picker that Envoy calls over ext_proc.

Flags follow the upstream EPP's names (``--grpc-port``, ``--grpc-health-port``, ``--metrics-port``,
``--secure-serving``, ``--cert-path``, ``--disable-endpoint-subset-filter``); Go-style ``--flag=false`` is
accepted for booleans so upstream command lines work unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from endpoint_picker.cli import discovery
from endpoint_picker.cli.arg_types import positive_int
from endpoint_picker.config_error import ConfigError
from endpoint_picker.datalayer import EngineMappings, MetricsScraper, MetricsStore, ScrapeSource, ScrapeStatsCollector
from endpoint_picker.datastore import Datastore
from endpoint_picker.decisions import DecisionLog
from endpoint_picker.director import Director
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.metrics import PickerMetrics
from endpoint_picker.metrics_server import MetricsServer
from endpoint_picker.scheduling import FrameworkScheduler, SchedulerConfig, default_config, load_config_text
from endpoint_picker.scheduling.plugins._durations import parse_duration
from endpoint_picker.scheduling.plugins.data_layer_plugins import CoreMetricsExtractor, MetricsDataSource

log = logging.getLogger("endpoint_picker.serve")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} out of range 0..65535")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grpc-port", type=_port, default=9002, help="ext_proc gRPC port (default 9002)")
    p.add_argument("--grpc-health-port", type=_port, default=9003, help="gRPC health port (default 9003)")
    p.add_argument("--metrics-port", type=_port, default=9090, help="Prometheus /metrics port (default 9090)")
    p.add_argument("--bind-address", default="[::]",
                   help="address the gRPC servers bind (default all interfaces, [::])")
    p.add_argument("--metrics-bind-address", default="0.0.0.0", help="address the metrics server binds")
    p.add_argument("--secure-serving", type=_bool, nargs="?", const=True, default=True,
                   help="TLS on the ext_proc port (default true; self-signed unless --cert-path)")
    p.add_argument("--no-secure-serving", dest="secure_serving", action="store_false",
                   help="plaintext ext_proc (for local use only)")
    p.add_argument("--cert-path", type=Path, default=None,
                   help="directory holding tls.crt and tls.key for the ext_proc port")
    p.add_argument("--health-checking", type=_bool, nargs="?", const=True, default=False,
                   help="also serve gRPC health on the ext_proc port (for proxy active health checks)")
    p.add_argument("--disable-endpoint-subset-filter", type=_bool, nargs="?", const=True, default=False,
                   help="ignore the proxy's subset hint (envoy.lb.subset_hint)")
    config = p.add_mutually_exclusive_group()
    config.add_argument("--config-file", type=Path, default=None,
                        help="EndpointPickerConfig YAML (upstream format); default: queue 2, kv-cache 2, prefix 3")
    config.add_argument("--config-text", default=None, help="the EndpointPickerConfig YAML itself")
    p.add_argument("--max-num-of-endpoints", type=positive_int, default=None,
                   help="override every picker's maxNumOfEndpoints: the primary, then ordered fallbacks for proxy "
                   "retries (lists need the override_host LB policy; ORIGINAL_DST takes one)")
    p.add_argument("--emit-endpoint-scores", type=_bool, nargs="?", const=True, default=False,
                   help="send each endpoint's total score to the proxy as envoy.lb metadata "
                   "x-gateway-destination-endpoint-scores")
    p.add_argument("--refresh-metrics-interval", type=_duration, default=0.05,
                   help="how often every endpoint's /metrics is scraped (Go duration or seconds; default 50ms)")
    p.add_argument("--metrics-scrape-timeout", type=_duration, default=1.0,
                   help="how long one scrape may take (default 1s)")
    p.add_argument("--metrics-staleness-threshold", type=float, default=2.0,
                   help="seconds after which an endpoint's scraped metrics count as stale, i.e. saturated")
    p.add_argument("--decision-log-size", type=positive_int, default=2048,
                   help="recent decision records kept for /debug/decisions")
    p.add_argument("--max-request-body-bytes", type=positive_int, default=32 * 1024 * 1024,
                   help="larger request bodies are answered with 413 (default 32 MiB)")
    p.add_argument("--grpc-max-recv-msg-size", type=positive_int, default=32 * 1024 * 1024,
                   help="largest gRPC message accepted from the proxy (default 32 MiB)")
    p.add_argument("--grpc-max-send-msg-size", type=positive_int, default=32 * 1024 * 1024,
                   help="largest gRPC message sent to the proxy (default 32 MiB)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds in-flight streams get to finish (default 30)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    discovery.add_arguments(p)


async def run(args: argparse.Namespace) -> int:
    # Imported here: extproc pulls in grpc, which the rest of endpoint_picker never needs.
    from extproc.server import ExtProcServer, ServerOptions
    from picker_api.servicer import PickerApiServicer

    if args.cert_path is not None and not args.secure_serving:
        raise ConfigError("--cert-path", "given together with --secure-serving=false")
    if args.cert_path is not None:
        for name in ("tls.crt", "tls.key"):
            if not (args.cert_path / name).is_file():
                raise ConfigError("--cert-path", f"{args.cert_path / name} does not exist")

    datastore = Datastore()
    source = discovery.Discovery(args, datastore)  # validates the source flags

    inflight = InFlightTracker()
    store = MetricsStore()
    metrics = PickerMetrics(inflight, datastore, store, staleness_threshold=args.metrics_staleness_threshold)
    datastore.on_removed(store.forget)
    decisions = DecisionLog(args.decision_log_size)
    scheduler_config = load_scheduler_config(args)
    scraper = build_scraper(args, scheduler_config, datastore, store)
    metrics.registry.register(ScrapeStatsCollector(scraper.stats))
    scheduler = FrameworkScheduler(scheduler_config, inflight, store, decisions,
                                   staleness_threshold=args.metrics_staleness_threshold,
                                   plugin_timer=metrics.time_plugin)
    director = Director(datastore, scheduler, inflight, metrics,
                        honour_subset_hint=not args.disable_endpoint_subset_filter,
                        emit_endpoint_scores=args.emit_endpoint_scores, objectives=source.objectives,
                        rewrites=source.rewrites)
    server = ExtProcServer(director, ServerOptions(
        grpc_port=args.grpc_port,
        grpc_health_port=args.grpc_health_port,
        bind_address=args.bind_address,
        secure_serving=args.secure_serving,
        cert_path=args.cert_path,
        health_checking=args.health_checking,
        max_request_body_bytes=args.max_request_body_bytes,
        grpc_max_recv_msg_size=args.grpc_max_recv_msg_size,
        grpc_max_send_msg_size=args.grpc_max_send_msg_size,
    ))
    api = PickerApiServicer(datastore, scheduler, inflight, store, staleness_threshold=args.metrics_staleness_threshold)
    server.add_service(api.register, api.SERVICE_NAME, on_drain=api.close)  # explain/state API on the ext_proc port
    metrics_server = MetricsServer(metrics, args.metrics_bind_address, args.metrics_port, decisions)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await source.start()  # loads the endpoints file or connects to the API server
    await metrics_server.start()
    scrape_task = asyncio.create_task(scraper.run(), name="metrics-scraper")
    await server.start()
    source.run_background(server.set_ready)
    log.info("serving %d endpoints of pool %s; metrics on :%d", len(datastore.endpoints()), datastore.pool.name,
             metrics_server.port)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await source.stop_readiness()  # NOT_SERVING stays; with HA the Lease is released for a standby
        await server.drain(args.drain_timeout)
        await source.shutdown()
        scrape_task.cancel()
        await asyncio.gather(scrape_task, return_exceptions=True)
        await metrics_server.stop()
    return 0


def load_scheduler_config(args: argparse.Namespace) -> SchedulerConfig:
    """The EndpointPickerConfig from --config-file / --config-text (or the default), with flag overrides."""
    if args.config_file is not None:
        try:
            text = args.config_file.read_text()
        except OSError as exc:
            raise ConfigError("--config-file", f"cannot read {args.config_file}: {exc.strerror}") from None
        config = load_config_text(text, source=str(args.config_file))
    elif args.config_text is not None:
        config = load_config_text(args.config_text, source="--config-text")
    else:
        config = default_config()
    if args.max_num_of_endpoints is not None:
        for profile in config.profiles.values():
            if profile.picker is not None and hasattr(profile.picker, "max_endpoints"):
                profile.picker.max_endpoints = args.max_num_of_endpoints
    return config


def build_scraper(args: argparse.Namespace, config: SchedulerConfig, datastore: Datastore,
                  store: MetricsStore) -> MetricsScraper:
    """The metrics scraper, shaped by the config's metrics-data-source and core-metrics-extractor plugins."""
    source = next((p.params for p in config.plugins.values() if isinstance(p, MetricsDataSource)), None)
    extractor = next((p.params for p in config.plugins.values() if isinstance(p, CoreMetricsExtractor)), None)
    mappings = None
    if extractor is not None:
        mappings = EngineMappings.from_params({
            "engineLabelKey": extractor.engine_label_key,
            "defaultEngine": extractor.default_engine,
            "engineConfigs": extractor.engine_configs,
        })
    return MetricsScraper(
        datastore, store, interval=args.refresh_metrics_interval, timeout=args.metrics_scrape_timeout,
        source=ScrapeSource(source.scheme, source.path, source.insecure_skip_verify) if source else None,
        mappings=mappings)
