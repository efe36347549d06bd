"""The data layer: what the picker knows about each endpoint beyond its address.

Background work (the metrics scraper, KV-cache event subscribers) publishes immutable snapshots here; the
request path only reads them. Pieces: :mod:`model` (snapshots, the store, staleness), :mod:`promtext` (a
targeted Prometheus text parser), :mod:`mapping` (which series mean what per engine type), :mod:`extract`
(page -> snapshot), :mod:`scraper` (the 50 ms poll of every endpoint) and :mod:`stats` (its counters).
"""

from endpoint_picker.datalayer.extract import Extraction, MetricsExtractor, NoMetricsError
from endpoint_picker.datalayer.mapping import (
    BUILTIN_ENGINE_MAPPINGS,
    DEFAULT_ENGINE,
    ENGINE_TYPE_LABEL,
    DataLayerConfigError,
    EngineMappings,
    MetricMapping,
    MetricSpec,
    engine_config_from_dict,
)
from endpoint_picker.datalayer.model import EndpointMetrics, MetricsStore, is_stale
from endpoint_picker.datalayer.promtext import PromParseError
from endpoint_picker.datalayer.scraper import MetricsScraper, ScrapeListener, ScrapeSource
from endpoint_picker.datalayer.stats import ScrapeStats, ScrapeStatsCollector

__all__ = [
    "BUILTIN_ENGINE_MAPPINGS",
    "DEFAULT_ENGINE",
    "ENGINE_TYPE_LABEL",
    "DataLayerConfigError",
    "EndpointMetrics",
    "EngineMappings",
    "Extraction",
    "MetricMapping",
    "MetricSpec",
    "MetricsExtractor",
    "MetricsScraper",
    "MetricsStore",
    "NoMetricsError",
    "PromParseError",
    "ScrapeListener",
    "ScrapeSource",
    "ScrapeStats",
    "ScrapeStatsCollector",
    "engine_config_from_dict",
    "is_stale",
]
