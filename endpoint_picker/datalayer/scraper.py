"""Scrape every endpoint's ``/metrics`` every 50 ms into the :class:`MetricsStore`, cheaply and safely.

Why it exists: scoring needs each model server's queue, running batch, KV-cache use and LoRA state, and
the upstream convention is a poll every 50 ms per endpoint with a 1 s timeout (model-servers.md section 5)
-- 2,000 scrapes a second for 100 endpoints, on the same event loop that answers Envoy. The budget is a
quarter of one core, so the hot path is built from the cheapest pieces measured (docs/benchmarks.md,
"Metrics scraping"):

- one keep-alive HTTP/1.1 connection per endpoint, driven by an :class:`asyncio.BufferedProtocol` that
  receives straight into a reused buffer (an aiohttp ``ClientSession`` costs ~180 us of CPU per scrape,
  this ~30 us);
- no task and no timer per scrape: the one ``run()`` task wakes every ``slot_period`` (5 ms), ends
  overdue scrapes and sends the requests of one group of endpoints (the endpoints are dealt into
  ``interval / slot_period`` groups); the protocol's callbacks parse the answers as they arrive. Groups
  keep the answers from arriving in one burst that would hold up request handling (10 endpoints' worth,
  well under a millisecond, at 100 endpoints); a longer slot period batches more and costs less CPU;
- the targeted parser (:mod:`promtext`, via :class:`MetricsExtractor`) reads only the mapped families,
  and per endpoint starts where they were on the previous page.

Robustness: at most one scrape per endpoint is outstanding (a turn that finds the previous one still
running is skipped, so nothing piles up); every scrape, connect included, has a deadline (``timeout``,
checked every slot) after which its connection is aborted; connection refused, resets, non-200 answers,
HTTP garbage, answers over ``max_body_bytes`` and unparsable pages are counted in :class:`ScrapeStats` by
reason, logged once per failure streak, and leave the endpoint's previous snapshot in place to age
(readers apply :func:`is_stale`: stale = saturated). After consecutive failures an endpoint is retried
with exponential backoff (interval, 2x, 4x ... up to ``max_backoff``). Responses may use Content-Length,
chunked transfer coding, or end at connection close; ``https`` is supported (``insecureSkipVerify`` as
upstream).

Endpoints come and go with the :class:`Datastore`: every slot the ``run()`` task compares the identity
of ``datastore.endpoints()`` (a snapshot tuple, replaced on every change) and starts, updates (engine
label changes) or stops per-endpoint work, forgetting removed endpoints in the store and the stats.
``sync()`` applies the datastore at once. ``add_listener`` reports every scrape's outcome (tests wait on
it; a debug view could too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from endpoint_picker.datalayer.extract import MetricsExtractor
from endpoint_picker.datalayer.mapping import DataLayerConfigError, EngineMappings, MetricMapping, _at
from endpoint_picker.datalayer.model import EndpointMetrics, MetricsStore
from endpoint_picker.datalayer.promtext import PromParseError, ScanHints
from endpoint_picker.datalayer.stats import ScrapeStats
from endpoint_picker.datastore.model import Endpoint
from endpoint_picker.datastore.store import Datastore

__all__ = ["MetricsScraper", "ScrapeListener", "ScrapeSource"]

log = logging.getLogger(__name__)

# Called after every scrape attempt: (endpoint key, the new snapshot or None, error reason or None).
ScrapeListener = Callable[[str, EndpointMetrics | None, str | None], None]

# Endpoints are started in groups this often: shorter spreads the work (smaller bursts on the event loop),
# longer batches it (fewer wakeups; docs/benchmarks.md, "Metrics scraping", measures both).
DEFAULT_SLOT_PERIOD = 0.005
_INITIAL_BUFFER = 64 * 1024
_MAX_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class ScrapeSource:
    """Where to scrape: the upstream ``metrics-data-source`` parameters."""

    scheme: str = "http"
    path: str = "/metrics"
    insecure_skip_verify: bool = True

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise DataLayerConfigError("scheme", f"must be http or https, not {self.scheme!r}")
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise DataLayerConfigError("path", f"must start with '/' and hold no blanks: {self.path!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "parameters") -> ScrapeSource:
        """From ``metrics-data-source`` parameters (``scheme``, ``path``, ``insecureSkipVerify``); raises
        :class:`DataLayerConfigError` naming the key."""
        params = params or {}
        if not isinstance(params, Mapping):
            raise DataLayerConfigError(where, "must be a mapping")
        keys = {"scheme": "scheme", "path": "path", "insecureSkipVerify": "insecure_skip_verify"}
        kwargs: dict[str, Any] = {}
        for key, value in params.items():
            attr = keys.get(key)
            if attr is None:
                raise DataLayerConfigError(_at(where, key), f"unknown key (expected one of {sorted(keys)})")
            expected = bool if attr == "insecure_skip_verify" else str
            if not isinstance(value, expected):
                raise DataLayerConfigError(_at(where, key), f"must be a {expected.__name__}")
            kwargs[attr] = value
        try:
            return cls(**kwargs)
        except DataLayerConfigError as exc:
            raise DataLayerConfigError(_at(where, exc.field), exc.message) from None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.scheme != "https":
            return None
        ctx = ssl.create_default_context()
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class _ResponseError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive HTTP/1.1 connection that answers one request at a time into a reused buffer."""

    __slots__ = ("_buf", "_chunk_pos", "_chunks", "_close_after", "_filled", "_head", "_head_end", "_limit", "_mode",
                 "_need", "_status", "_target", "closed", "transport")

    def __init__(self, target: _Target, limit: int) -> None:
        self._target = target
        self._limit = limit
        self._buf = bytearray(_INITIAL_BUFFER)
        self._filled = 0
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # The last response head and what it said: servers repeat the same head (Date changes once a second).
        self._head: tuple[bytes, int, bool, str, int] | None = None
        self._reset()

    def _reset(self) -> None:
        self._filled = 0
        self._head_end = -1
        self._status = 0
        self._mode = ""  # "length" | "chunked" | "eof"
        self._need = 0
        self._chunks: list[tuple[int, int]] = []
        self._chunk_pos = 0
        self._close_after = False

    # -- asyncio callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        free = len(self._buf) - self._filled
        if free < 16 * 1024:
            grown = bytearray(max(len(self._buf) * 2, self._filled + 64 * 1024))
            grown[: self._filled] = self._buf[: self._filled]
            self._buf = grown
        return memoryview(self._buf)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        self._filled += nbytes
        try:
            body = self._complete_body(eof=False)
        except _ResponseError as exc:
            self._fail(exc.reason, str(exc))
            return
        if body is not None:
            self._deliver(body)

    def eof_received(self) -> bool | None:
        if self._mode == "eof" and not self.closed:
            with contextlib.suppress(_ResponseError):
                body = self._complete_body(eof=True)
                if body is not None:
                    self._deliver(body)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed, self.closed = self.closed, True
        self.transport = None
        if not was_closed:
            self._target.connection_lost(self, exc)

    # -- requests and responses ----------------------------------------------------------------------

    def send(self, request: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(request)

    def abort(self) -> None:
        self.closed = True
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()

    def _fail(self, reason: str, detail: str) -> None:
        self.abort()
        self._target.failed(reason, detail)

    def _deliver(self, body: bytes) -> None:
        status = self._status
        if self._close_after:
            self.abort()
        self._target.answered(self, status, body)

    def _complete_body(self, *, eof: bool) -> bytes | None:
        """The body once the whole response is in the buffer, else None; raises _ResponseError."""
        buf = self._buf
        filled = self._filled
        if filled > self._limit:
            raise _ResponseError("too_large", f"answer larger than {self._limit} bytes")
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n", 0, filled)
            if end < 0:
                if filled > _MAX_HEAD:
                    raise _ResponseError("protocol", "response head too large")
                return None
            head = bytes(buf[:end])
            cached = self._head
            if cached is not None and cached[0] == head:
                _, self._status, self._close_after, self._mode, self._need = cached
            else:
                self._parse_head(head)
                self._head = (head, self._status, self._close_after, self._mode, self._need)
            self._head_end = end + 4
            self._chunk_pos = self._head_end
        start = self._head_end
        if self._mode == "length":
            if filled < start + self._need:
                return None
            if filled > start + self._need:
                raise _ResponseError("protocol", "more bytes than Content-Length")
            return bytes(memoryview(buf)[start : start + self._need])
        if self._mode == "chunked":
            return self._chunked_body(buf, filled)
        if eof:
            return bytes(memoryview(buf)[start:filled])
        return None

    def _parse_head(self, head: bytes) -> None:
        line_end = head.find(b"\r\n")
        status_line = head if line_end < 0 else head[:line_end]
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _ResponseError("protocol", f"not an HTTP/1.x status line: {status_line[:80]!r}")
        self._status = int(parts[1])
        http10 = parts[0] == b"HTTP/1.0"
        lower = head.lower()
        connection = _header(lower, b"connection")
        self._close_after = b"close" in connection if connection is not None else http10
        encoding = _header(lower, b"transfer-encoding")
        length = _header(lower, b"content-length")
        if encoding is not None and encoding.strip() != b"identity":
            if encoding.split(b",")[-1].strip() != b"chunked":
                raise _ResponseError("protocol", f"unsupported transfer coding {encoding!r}")
            self._mode = "chunked"
        elif length is not None:
            text = length.strip()
            if not text.isdigit():
                raise _ResponseError("protocol", f"bad Content-Length {length!r}")
            self._need = int(text)
            if self._need > self._limit:
                raise _ResponseError("too_large", f"Content-Length {self._need} over {self._limit}")
            self._mode = "length"
        else:
            self._mode = "eof"
            self._close_after = True

    def _chunked_body(self, buf: bytearray, filled: int) -> bytes | None:
        pos = self._chunk_pos
        while True:
            line_end = buf.find(b"\r\n", pos, filled)
            if line_end < 0:
                if filled - pos > 1024:
                    raise _ResponseError("protocol", "chunk size line too long")
                return None
            size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _ResponseError("protocol", f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                # Trailers (usually none) end with an empty line.
                if buf[line_end + 2 : line_end + 4] == b"\r\n":
                    end = line_end + 4
                else:
                    trailer_end = buf.find(b"\r\n\r\n", line_end + 2, filled)
                    if trailer_end < 0:
                        return None
                    end = trailer_end + 4
                if filled > end:
                    raise _ResponseError("protocol", "bytes after the last chunk")
                if filled < end:
                    return None
                view = memoryview(buf)
                return b"".join(view[s:e] for s, e in self._chunks)
            data_start = line_end + 2
            data_end = data_start + size
            if filled < data_end + 2:
                return None
            if buf[data_end : data_end + 2] != b"\r\n":
                raise _ResponseError("protocol", "chunk not followed by CRLF")
            self._chunks.append((data_start, data_end))
            pos = self._chunk_pos = data_end + 2


def _header(lower_head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` in a lower-cased response head (first occurrence)."""
    i = lower_head.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    start = i + len(name) + 3
    end = lower_head.find(b"\r\n", start)
    return lower_head[start : end if end >= 0 else len(lower_head)].strip()


_IDLE, _CONNECTING, _BUSY, _CLOSED = range(4)


class _Target:
    """Scrape state of one endpoint: its connection, deadline, failure streak and what it last logged."""

    __slots__ = ("_connect_task", "_failing", "_fails", "_hints", "_missing", "_next_allowed", "_request",
                 "_scraper", "_state", "conn", "deadline", "endpoint", "extractor")

    def __init__(self, scraper: MetricsScraper, endpoint: Endpoint, extractor: MetricsExtractor) -> None:
        self._scraper = scraper
        self.endpoint = endpoint
        self.extractor = extractor
        self.conn: _Connection | None = None
        self._state = _IDLE
        self.deadline = 0.0
        self._connect_task: asyncio.Task[None] | None = None
        self._next_allowed = 0.0
        self._fails = 0
        self._failing = False
        self._missing: tuple[str, ...] = ()
        self._hints = ScanHints()
        self._request = (f"GET {scraper.source.path} HTTP/1.1\r\nHost: {endpoint.key}\r\n"
                         "User-Agent: endpoint-picker\r\nAccept: text/plain;version=0.0.4\r\n\r\n").encode()

    @property
    def key(self) -> str:
        return self.endpoint.key

    def close(self) -> None:
        self._state = _CLOSED
        self._scraper.busy.discard(self)
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        if self.conn is not None:
            self.conn.abort()
            self.conn = None

    def reset_hints(self) -> None:
        self._hints = ScanHints()

    def begin(self, now: float) -> None:
        """Start a scrape, unless the previous one is still running (no pile-up) or the target backs off."""
        if self._state != _IDLE or now < self._next_allowed:
            return
        scraper = self._scraper
        self.deadline = now + scraper.timeout
        scraper.busy.add(self)
        conn = self.conn
        if conn is not None and not conn.closed:
            self._state = _BUSY
            conn.send(self._request)
        else:
            self._state = _CONNECTING
            self._connect_task = scraper.loop.create_task(self._connect(), name=f"metrics-connect:{self.key}")

    async def _connect(self) -> None:
        scraper = self._scraper
        ep = self.endpoint
        try:
            _transport, conn = await scraper.loop.create_connection(
                lambda: _Connection(self, scraper.max_body_bytes), ep.address, ep.port, ssl=scraper.ssl_context
            )
        except asyncio.CancelledError:
            raise
        except (OSError, ssl.SSLError) as exc:
            self._connect_task = None
            if self._state == _CONNECTING:
                self.failed("connect", f"{type(exc).__name__}: {exc}")
            return
        self._connect_task = None
        if self._state != _CONNECTING:  # closed meanwhile
            conn.abort()
            return
        if conn.closed:  # the server hung up right away
            self.failed("closed", "connection closed right after it was opened")
            return
        self.conn = conn
        self._hints.reset()  # a new connection may be a restarted server with another page layout
        self._state = _BUSY
        conn.send(self._request)

    # -- outcomes ------------------------------------------------------------------------------------

    def _end_attempt(self) -> None:
        self._scraper.busy.discard(self)
        if self._state != _CLOSED:
            self._state = _IDLE

    def timed_out(self) -> None:
        if self._state == _CONNECTING and self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        elif self._state == _BUSY and self.conn is not None:
            self.conn.abort()
        self.conn = None
        self.failed("timeout", f"no complete answer within {self._scraper.timeout:g}s")

    def connection_lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        if self._state == _BUSY:
            self.failed("closed", f"connection closed mid-answer: {exc}" if exc else "connection closed mid-answer")

    def failed(self, reason: str, detail: str) -> None:
        if self._state == _CLOSED:
            return
        self._end_attempt()
        if self.conn is not None and self.conn.closed:
            self.conn = None
        scraper = self._scraper
        self._fails += 1
        backoff = min(scraper.max_backoff, scraper.interval * (1 << min(self._fails - 1, 16)))
        self._next_allowed = scraper.loop.time() + backoff - scraper.interval
        scraper.stats.error(self.key, reason, detail)
        if not self._failing:
            self._failing = True
            log.warning("cannot scrape %s (%s): %s: %s; its metrics will age until a scrape succeeds",
                        self.key, self.endpoint.name, reason, detail)
        scraper.notify(self.key, None, reason)

    def answered(self, conn: _Connection, status: int, body: bytes) -> None:
        if self._state != _BUSY or conn is not self.conn:
            return
        if conn.closed:
            self.conn = None
        if status != 200:
            self.failed("status", f"HTTP {status}")
            return
        scraper = self._scraper
        store = scraper.store
        key = self.key
        try:
            result = self.extractor.extract(body, store.clock(), store.get(key), self._hints)
        except PromParseError as exc:
            self.failed("parse", str(exc)[:300])
            return
        except Exception as exc:  # a bug in a mapping must not take the connection handling down with it
            if not self._failing:
                log.exception("unexpected error reading the metrics of %s", key)
            self.failed("parse", f"{type(exc).__name__}: {exc}"[:300])
            return
        self._end_attempt()
        store.put(key, result.metrics)
        scraper.stats.success(key)
        if self._fails:
            self._fails = 0
            self._next_allowed = 0.0
        if self._failing:
            self._failing = False
            log.info("scraping %s (%s) works again", key, self.endpoint.name)
        if result.missing != self._missing:
            self._log_missing(result.missing)
        if scraper.listeners:
            scraper.notify(key, result.metrics, None)

    def _log_missing(self, missing: tuple[str, ...]) -> None:
        before = set(self._missing)
        now = set(missing)
        self._missing = missing
        gone = now - before
        if gone:
            # Queue, running and KV signals matter to every scorer; LoRA, cache geometry and prefix counters
            # are often simply not enabled on the server (e.g. vLLM without --enable-lora).
            level = logging.WARNING if gone - _OPTIONAL_SIGNALS else logging.DEBUG
            log.log(level, "%s (%s): no usable series for %s on its /metrics (engine mapping %r); keeping the "
                    "last values", self.key, self.endpoint.name, sorted(gone),
                    self._scraper.mappings.engine_of(self.endpoint))
        if before - now:
            log.info("%s (%s): series for %s found again", self.key, self.endpoint.name, sorted(before - now))


_OPTIONAL_SIGNALS = frozenset({"lora", "cache_info", "cache_block_size", "cache_num_blocks", "prefix_cache_queries",
                               "prefix_cache_hits"})


class MetricsScraper:
    """Keeps every endpoint of a :class:`Datastore` scraped into a :class:`MetricsStore`; see the module docs.

    ``run()`` runs until cancelled; on the way out it closes every connection (the store keeps the last
    snapshots, which then age).
    """

    def __init__(
        self,
        datastore: Datastore,
        store: MetricsStore,
        *,
        mappings: EngineMappings | None = None,
        source: ScrapeSource | None = None,
        interval: float = 0.05,
        timeout: float = 1.0,
        stats: ScrapeStats | None = None,
        max_backoff: float = 1.0,
        max_body_bytes: int = 16 * 1024 * 1024,
        slot_period: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.datastore = datastore
        self.store = store
        self.mappings = mappings or EngineMappings()
        self.source = source or ScrapeSource()
        self.ssl_context = self.source.ssl_context()
        self.interval = interval
        self.timeout = timeout
        self.stats = stats or ScrapeStats()
        self.max_backoff = max(max_backoff, interval)
        self.max_body_bytes = max_body_bytes
        # The interval is cut into slots of about ``slot_period``; each endpoint belongs to one slot.
        period = DEFAULT_SLOT_PERIOD if slot_period is None else slot_period
        if period <= 0:
            raise ValueError("slot_period must be > 0")
        self._slot_count = max(1, round(interval / min(period, interval)))
        self._slots: list[list[_Target]] = [[]]
        self.busy: set[_Target] = set()
        self.listeners: list[ScrapeListener] = []
        self._extractors: dict[MetricMapping, MetricsExtractor] = {}
        self._targets: dict[str, _Target] = {}
        self._seen: tuple[Endpoint, ...] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def slot_count(self) -> int:
        """Groups the interval is cut into (at most; fewer when there are fewer endpoints)."""
        return self._slot_count

    @property
    def keys(self) -> frozenset[str]:
        """Endpoints currently being scraped."""
        return frozenset(self._targets)

    def add_listener(self, listener: ScrapeListener) -> Callable[[], None]:
        """Call ``listener(key, metrics | None, error_reason | None)`` after every scrape; returns an unsubscriber."""
        self.listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)

        return unsubscribe

    def notify(self, key: str, metrics: EndpointMetrics | None, reason: str | None) -> None:
        for listener in tuple(self.listeners):
            listener(key, metrics, reason)

    def set_mappings(self, mappings: EngineMappings) -> None:
        """Use new engine mappings from the next scrape on (e.g. after a configuration reload)."""
        self.mappings = mappings
        self._extractors.clear()
        if self._targets:
            self.sync()

    async def run(self) -> None:
        """Scrape until cancelled: each slot period, end overdue scrapes and start the next slot's."""
        loop = self._loop = asyncio.get_running_loop()
        index = 0
        next_at = loop.time()
        try:
            while True:
                if self.datastore.endpoints() is not self._seen:
                    self.sync()
                now = loop.time()
                if self.busy:
                    for target in [t for t in self.busy if t.deadline <= now]:
                        target.timed_out()
                slots = self._slots
                for target in slots[index % len(slots)]:
                    target.begin(now)
                index += 1
                slot_period = self.interval / len(slots)
                next_at += slot_period
                if next_at <= now:  # fell behind (a long pause of the loop): skip the missed slots
                    next_at = now + slot_period
                await asyncio.sleep(next_at - now)
        finally:
            self.close()

    def sync(self) -> None:
        """Start, update and stop per-endpoint scraping to match the datastore's endpoints now."""
        endpoints = self.datastore.endpoints()
        self._seen = endpoints
        current = {ep.key: ep for ep in endpoints}
        removed = [key for key in self._targets if key not in current]
        for key in removed:
            self._targets.pop(key).close()
        if removed:
            self.store.forget(removed)
            self.stats.forget(removed)
        for key, ep in current.items():
            extractor = self._extractor_for(ep)
            target = self._targets.get(key)
            if target is None:
                self._targets[key] = _Target(self, ep, extractor)
            else:
                target.endpoint = ep
                if target.extractor is not extractor:
                    target.extractor = extractor
                    target.reset_hints()
        # Spread the endpoints evenly over the slots (in key order, so a sync keeps most in place).
        count = min(self._slot_count, max(1, len(self._targets)))
        slots: list[list[_Target]] = [[] for _ in range(count)]
        for i, key in enumerate(sorted(self._targets)):
            slots[i % count].append(self._targets[key])
        self._slots = slots

    def close(self) -> None:
        """Stop scraping every endpoint (the store keeps its snapshots)."""
        for target in self._targets.values():
            target.close()
        self._targets.clear()
        self._slots = [[]]
        self.busy.clear()
        self._seen = None

    def _extractor_for(self, endpoint: Endpoint) -> MetricsExtractor:
        mapping = self.mappings.for_endpoint(endpoint)
        extractor = self._extractors.get(mapping)
        if extractor is None:
            extractor = self._extractors[mapping] = MetricsExtractor(mapping)
        return extractor
