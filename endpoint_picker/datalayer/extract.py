"""Turn one ``/metrics`` page into an :class:`EndpointMetrics` snapshot with an engine's metric mapping.

Why it exists: it is the ``core-metrics-extractor`` step between the scraper (bytes off the wire) and the
store (normalised snapshots), kept apart from both so it can be tested on real pages without sockets.
One :class:`MetricsExtractor` is compiled per mapping (a :class:`promtext.Scanner` over exactly the
families the mapping names, counters with and without ``_total``) and shared by every endpoint using it.

Like upstream, a signal whose series is missing from a page keeps its previous value (and is reported in
``missing``, so the scraper can log it once); a page where none of the mapped series is found is an error
(:class:`NoMetricsError`) and produces no snapshot, so the previous one ages into staleness. Non-finite
counts and utilisations (NaN, Inf) count as missing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from endpoint_picker.datalayer.mapping import MetricMapping, MetricSpec
from endpoint_picker.datalayer.model import EndpointMetrics
from endpoint_picker.datalayer.promtext import PromParseError, Sample, ScanHints, Scanner, counter_alias

__all__ = ["Extraction", "MetricsExtractor", "NoMetricsError"]


class NoMetricsError(PromParseError):
    """None of the mapping's series is on the page (not a metrics page, or the wrong engine type)."""


@dataclass(frozen=True, slots=True)
class Extraction:
    metrics: EndpointMetrics
    # Signals (MetricMapping attribute names) whose series was absent or unusable on this page.
    missing: tuple[str, ...] = ()


_EMPTY: frozenset[str] = frozenset()


def _select(samples: list[Sample], spec: MetricSpec) -> Sample | None:
    """The newest matching sample (first on ties / without timestamps), as upstream's getLatestMetric."""
    wanted = spec.labels
    best: Sample | None = None
    best_ts = -math.inf
    for s in samples:
        if wanted:
            labels = s.labels
            if any(labels.get(k) != v for k, v in wanted):
                continue
        ts = s.timestamp if s.timestamp is not None else 0.0
        if best is None or ts > best_ts:
            best, best_ts = s, ts
    return best


def _select_max_value(samples: list[Sample], spec: MetricSpec) -> Sample | None:
    wanted = spec.labels
    best: Sample | None = None
    for s in samples:
        if wanted and any(s.labels.get(k) != v for k, v in wanted):
            continue
        if best is None or s.value > best.value:
            best = s
    return best


@functools.lru_cache(maxsize=1024)
def _adapters(text: str | None) -> frozenset[str]:
    if not text:
        return _EMPTY
    return frozenset(name for part in text.split(",") if (name := part.strip()))


def _int_label(labels: Mapping[str, str], name: str) -> int | None:
    raw = labels.get(name)
    if raw is None or raw in ("", "None"):
        return None
    try:
        return int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            return None
        return int(value) if math.isfinite(value) else None


def _finite_int(value: float) -> int | None:
    return int(value) if math.isfinite(value) else None


class MetricsExtractor:
    """Compiled form of one :class:`MetricMapping`."""

    __slots__ = ("_families", "_mapping", "_scanner")

    def __init__(self, mapping: MetricMapping) -> None:
        self._mapping = mapping
        specs = mapping.specs()
        # Per signal: the sample names to look under (the spec's, then its counter alias).
        self._families: dict[str, tuple[MetricSpec, tuple[str, ...]]] = {
            attr: (spec, (spec.name, counter_alias(spec.name))) for attr, spec in specs.items()
        }
        names = [n for _spec, pair in self._families.values() for n in pair]
        labelled = [n for attr, (spec, pair) in self._families.items()
                    if spec.labels or attr in ("lora", "cache_info") for n in pair]
        self._scanner = Scanner(names, labelled) if names else None

    @property
    def mapping(self) -> MetricMapping:
        return self._mapping

    def extract(self, page: bytes, scraped_at: float, previous: EndpointMetrics | None = None,
                hints: ScanHints | None = None) -> Extraction:
        """Raises :class:`PromParseError` for a malformed line of a mapped family, :class:`NoMetricsError`
        when no mapped series is on the page. ``hints`` (one per endpoint) lets the scanner skip most of
        the page; see :class:`promtext.Scanner`."""
        prev = previous if previous is not None else EndpointMetrics(scraped_at=scraped_at)
        if self._scanner is None:
            return Extraction(EndpointMetrics(scraped_at=scraped_at))
        found = self._scanner.scan(page, hints)
        if not found:
            raise NoMetricsError(f"none of {list(self._scanner.names)} on the page")
        m = self._mapping
        missing: list[str] = []
        picked: list[str] = []
        families = self._families

        def pick(attr: str, *, max_value: bool = False) -> Sample | None:
            entry = families.get(attr)
            if entry is None:
                return None
            spec, (name, alias) = entry
            samples = found.get(name) or found.get(alias)
            chosen = None
            if samples:
                if len(samples) == 1 and not spec.labels:
                    chosen = samples[0]
                else:
                    chosen = _select_max_value(samples, spec) if max_value else _select(samples, spec)
            if chosen is None:
                missing.append(attr)
            else:
                picked.append(attr)
            return chosen

        waiting = prev.waiting_queue_size
        s = pick("queued_requests")
        if s is not None:
            value = _finite_int(s.value)
            if value is None:
                missing.append("queued_requests")
            else:
                waiting = value
        running = prev.running_requests
        s = pick("running_requests")
        if s is not None:
            value = _finite_int(s.value)
            if value is None:
                missing.append("running_requests")
            else:
                running = value
        kv = prev.kv_cache_usage
        s = pick("kv_usage")
        if s is not None:
            if math.isfinite(s.value):
                kv = s.value
            else:
                missing.append("kv_usage")

        active, waiting_models, max_active = prev.active_models, prev.waiting_models, prev.max_active_models
        s = pick("lora", max_value=True)
        if s is not None:
            active = _adapters(s.labels.get("running_lora_adapters"))
            waiting_models = _adapters(s.labels.get("waiting_lora_adapters"))
            max_active = _int_label(s.labels, "max_lora") or 0

        block_size: int | None = None
        num_blocks: int | None = None
        s = pick("cache_info")
        if s is not None:
            block_size = _int_label(s.labels, m.cache_block_size_label)
            num_blocks = _int_label(s.labels, m.cache_num_blocks_label)
        if block_size is None and "cache_block_size" in families:
            s = pick("cache_block_size")
            if s is not None:
                block_size = _finite_int(s.value)
        if num_blocks is None and "cache_num_blocks" in families:
            s = pick("cache_num_blocks")
            if s is not None:
                num_blocks = _finite_int(s.value)
        if m.cache_block_size is not None and m.cache_info is not None and "cache_info" in missing \
                and "cache_block_size" not in missing:
            missing.remove("cache_info")  # the gauges stood in for the info series
        if block_size is None:
            block_size = prev.block_size
        if num_blocks is None:
            num_blocks = prev.num_gpu_blocks

        queries = prev.prefix_cache_queries
        s = pick("prefix_cache_queries")
        if s is not None:
            queries = s.value
        hits = prev.prefix_cache_hits
        s = pick("prefix_cache_hits")
        if s is not None:
            hits = s.value

        if not picked:
            raise NoMetricsError(f"no sample on the page matches {[str(spec) for spec, _ in families.values()]}")
        metrics = EndpointMetrics(
            scraped_at=scraped_at,
            waiting_queue_size=waiting,
            running_requests=running,
            kv_cache_usage=kv,
            block_size=block_size,
            num_gpu_blocks=num_blocks,
            active_models=active,
            waiting_models=waiting_models,
            max_active_models=max_active,
            prefix_cache_queries=queries,
            prefix_cache_hits=hits,
        )
        return Extraction(metrics, tuple(missing))
