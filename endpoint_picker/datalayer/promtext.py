"""A targeted reader of the Prometheus text format: the samples of a few named metrics, straight from bytes.

Why it exists: the picker scrapes every endpoint every 50 ms, so 100 endpoints mean 2,000 pages a second,
while it needs about six families of a page that holds ~360 samples (vLLM 0.33). prometheus_client's
general parser takes ~7 ms for such a page -- 14 cores' worth at that rate (docs/benchmarks.md, "Metrics
scraping"). :class:`Scanner` never parses the lines it does not need: one compiled regular expression,
``\\n(name1|name2|...)`` followed by ``{`` or a blank, walks the page in C (a sample line starts with its
metric name; comment lines start with ``#``; label values and HELP texts cannot hold a raw newline), and
only the matched lines are parsed in Python -- ~30 us for a vLLM page.

It reads the text format 0.0.4 as prometheus_client's parser does (the unit tests compare the two on the
simulator's real pages, every sample of every family):

- a sample line is ``name[{labels}] value [timestamp]``, parts separated by spaces or tabs;
- label values are double-quoted with the escapes ``\\\\``, ``\\"`` and ``\\n`` (any other backslash pair is
  kept as is, like prometheus_client); ``}``, ``,``, ``=`` and ``#`` may appear inside the quotes;
- values may be ``NaN``, ``+Inf``, ``-Inf`` or any float; a timestamp is integer milliseconds and is
  returned in seconds (as prometheus_client returns it);
- a counter is written ``<name>_total``: a different sample name here, so callers that accept either
  form ask for both (:func:`counter_alias`).

Label sets are parsed once per distinct text and cached (``cache_config_info`` carries ~24 labels that
never change), so the returned label mappings are shared: treat them as read-only.

Not supported (model servers do not emit them): UTF-8 quoted metric names (``{"name", ...}``), OpenMetrics
exemplars, sample lines indented with blanks. A malformed line of a requested metric raises
:class:`PromParseError`; lines of other metrics are not examined at all.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

__all__ = [
    "PromParseError",
    "Sample",
    "ScanHints",
    "Scanner",
    "counter_alias",
    "find_family",
    "find_samples",
    "parse_labels",
]

_NO_LABELS: Mapping[str, str] = {}


class PromParseError(ValueError):
    """A sample line of a requested metric is not valid text-format exposition."""


class Sample(NamedTuple):
    name: str
    labels: Mapping[str, str]  # shared between samples with the same label text: read-only
    value: float
    timestamp: float | None  # seconds (the exposition carries milliseconds)


_PAIR = rb'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*'
_PAIR_NOCAP = rb'[ \t]*[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*"(?:[^"\\\n]|\\.)*"[ \t]*'
_PAIR_RE = re.compile(_PAIR)
_LABELS_RE = re.compile(rb"(?:" + _PAIR_NOCAP + rb"(?:," + _PAIR_NOCAP + rb")*,?)?[ \t]*")
_ESCAPE_RE = re.compile(rb'\\[\\n"]')
_ESCAPES = {b"\\\\": b"\\", b"\\n": b"\n", b'\\"': b'"'}
_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_AFTER_NAME = frozenset(b"{ \t")


def _unescape(raw: bytes) -> str:
    if b"\\" in raw:
        raw = _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], raw)
    return raw.decode("utf-8")


@functools.lru_cache(maxsize=4096)
def parse_labels(segment: bytes) -> Mapping[str, str]:
    """The label set between ``{`` and ``}`` (both exclusive); raises :class:`PromParseError`.

    Cached by the segment's bytes: the result is shared, do not modify it.
    """
    if _LABELS_RE.fullmatch(segment) is None:
        raise PromParseError(f"invalid label set {{{segment.decode('utf-8', 'replace')}}}")
    labels: dict[str, str] = {}
    for name, value in _PAIR_RE.findall(segment):
        key = name.decode("ascii")
        if key in labels:
            raise PromParseError(f"duplicate label {key!r} in {{{segment.decode('utf-8', 'replace')}}}")
        labels[key] = _unescape(value)
    return labels


def _parse_float(token: bytes) -> float:
    if b"_" in token:  # Python's float() accepts digit separators; the format does not
        raise PromParseError(f"invalid value {token!r}")
    try:
        return float(token)
    except ValueError:
        raise PromParseError(f"invalid value {token!r}") from None


_new_sample = tuple.__new__  # Sample(...) without NamedTuple's keyword-handling __new__ (hot path)


def _parse_line(page: bytes, name: str, after: int, line_end: int, want_labels: bool) -> Sample:
    """Parse the rest of a sample line; ``after`` indexes the byte right after the metric name."""
    labels = _NO_LABELS
    pos = after
    if page[pos] == 0x7B:  # "{"
        # The value and timestamp never contain '}', so the last one on the line closes the label set.
        close = page.rfind(b"}", pos, line_end)
        if close == -1:
            raise PromParseError(f"unterminated label set: {page[pos:line_end]!r}")
        if want_labels:
            labels = parse_labels(page[pos + 1 : close])
        elif page.find(b"\\", pos, close) != -1:
            parse_labels(page[pos + 1 : close])  # validate escapes
        elif page.count(b'"', pos, close) & 1:
            raise PromParseError(f"unbalanced quotes in labels: {page[pos:line_end]!r}")
        pos = close + 1
    rest = page[pos:line_end].split()
    if len(rest) == 1:
        value = rest[0]
        if b"_" not in value:
            try:
                return _new_sample(Sample, (name, labels, float(value), None))
            except ValueError:
                pass
    elif len(rest) == 2:
        return _new_sample(Sample, (name, labels, _parse_float(rest[0]), _parse_float(rest[1]) / 1000.0))
    if len(rest) == 1:
        _parse_float(rest[0])  # raises with the message
    raise PromParseError(f"{name}: expected a value and an optional timestamp, got {page[pos:line_end]!r}")


class ScanHints:
    """Where each requested metric's lines started on the previous page of one endpoint (see :class:`Scanner`).

    Owned by one endpoint's scraper; start a new one (or :meth:`reset`) on a new connection.
    """

    __slots__ = ("countdown", "offsets")

    def __init__(self) -> None:
        self.offsets: dict[str, int] | None = None
        self.countdown = 0

    def reset(self) -> None:
        self.offsets = None
        self.countdown = 0


class Scanner:
    """Finds and parses the sample lines of a fixed set of metric names.

    ``labels_of`` names the metrics whose label sets are wanted (default: all); the samples of the others
    carry an empty mapping (their label sets are still checked for balanced quotes).

    A full scan walks the whole page with one regular expression. Pages of one server keep their layout
    from scrape to scrape (only numbers change), and the text format requires all lines of a metric
    family to form one group, so with :class:`ScanHints` the scanner looks for each metric first where it
    was on the previous page (searching on from a little before that offset) and reads its group line by
    line. That is used only while the last full scan found each requested name's lines contiguous, and
    only if the hit starts the group (the line before is not the same metric); anything else falls back
    to a full scan. Names absent from a page are looked for again by the full scan done every
    ``full_scan_every`` pages.
    """

    __slots__ = ("_decoded", "_encoded", "_first_line", "_labels_of", "_names", "_regex", "full_scan_every")

    # How far before the previous offset the search starts (bytes); numbers change width between scrapes.
    _WINDOW = 512

    def __init__(self, names: Iterable[str], labels_of: Iterable[str] | None = None,
                 full_scan_every: int = 20) -> None:
        self._names = tuple(dict.fromkeys(names))
        if not self._names:
            raise ValueError("a Scanner needs at least one metric name")
        for name in self._names:
            if _METRIC_NAME_RE.fullmatch(name) is None:
                raise ValueError(f"invalid metric name {name!r}")
        self._labels_of = frozenset(self._names if labels_of is None else labels_of)
        self._decoded = {n.encode(): n for n in self._names}
        self._encoded = {n: n.encode() for n in self._names}
        alternatives = b"|".join(re.escape(n.encode()) for n in sorted(self._names, key=len, reverse=True))
        self._regex = re.compile(rb"\n(" + alternatives + rb")(?=[{ \t])")
        self._first_line = re.compile(rb"(" + alternatives + rb")(?=[{ \t])")
        self.full_scan_every = full_scan_every

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def scan(self, page: bytes, hints: ScanHints | None = None) -> dict[str, list[Sample]]:
        """Samples per requested name (names without samples are absent), each list in page order."""
        if hints is not None and hints.offsets is not None and hints.countdown > 0:
            found = self._scan_hinted(page, hints.offsets)
            if found is not None:
                hints.countdown -= 1
                return found
        found, offsets, grouped = self._scan_full(page)
        if hints is not None:
            hints.offsets = offsets if grouped else None
            hints.countdown = self.full_scan_every
        return found

    def _scan_full(self, page: bytes) -> tuple[dict[str, list[Sample]], dict[str, int], bool]:
        out: dict[str, list[Sample]] = {}
        offsets: dict[str, int] = {}
        line_ends: dict[str, int] = {}
        grouped = True
        labels_of = self._labels_of
        decoded = self._decoded
        size = len(page)
        matches: Iterable[re.Match[bytes]] = self._regex.finditer(page)
        first = self._first_line.match(page)
        if first is not None:
            matches = itertools.chain((first,), matches)
        for m in matches:
            name = decoded[m.group(1)]
            after = m.end()
            line_start = m.start(1)
            line_end = page.find(b"\n", after)
            if line_end == -1:
                line_end = size
            sample = _parse_line(page, name, after, line_end, name in labels_of)
            bucket = out.get(name)
            if bucket is None:
                out[name] = [sample]
                offsets[name] = line_start
            else:
                bucket.append(sample)
                if line_ends[name] + 1 != line_start:
                    grouped = False
            line_ends[name] = line_end
        return out, offsets, grouped

    def _scan_hinted(self, page: bytes, offsets: dict[str, int]) -> dict[str, list[Sample]] | None:
        """The scan from the previous offsets, or None when a full scan is needed."""
        out: dict[str, list[Sample]] = {}
        labels_of = self._labels_of
        size = len(page)
        for name, offset in offsets.items():
            name_bytes = self._encoded[name]
            n = len(name_bytes)
            if offset == 0:
                if not (page.startswith(name_bytes) and n < size and page[n] in _AFTER_NAME):
                    return None
                start = 0
            else:
                needle = b"\n" + name_bytes
                if page.startswith(needle, offset - 1) and offset + n < size and page[offset + n] in _AFTER_NAME:
                    hit = offset - 1  # not moved (nothing before it changed width)
                else:
                    lo = max(0, offset - self._WINDOW - 1)
                    while True:
                        hit = page.find(needle, lo)
                        if hit == -1:
                            return None
                        if hit + 1 + n < size and page[hit + 1 + n] in _AFTER_NAME:
                            break
                        lo = hit + 1
                start = hit + 1
                # It must start the group: the line before is not a sample of the same metric.
                prev = page.rfind(b"\n", 0, hit) + 1
                if page.startswith(name_bytes, prev) and page[prev + n] in _AFTER_NAME:
                    return None
            offsets[name] = start
            want_labels = name in labels_of
            samples: list[Sample] = []
            while True:
                after = start + n
                line_end = page.find(b"\n", after)
                if line_end == -1:
                    line_end = size
                samples.append(_parse_line(page, name, after, line_end, want_labels))
                start = line_end + 1
                if not (page.startswith(name_bytes, start) and start + n < size and page[start + n] in _AFTER_NAME):
                    break
            out[name] = samples
        return out


@functools.lru_cache(maxsize=256)
def _scanner(name: str, labels: bool) -> Scanner:
    return Scanner((name,), (name,) if labels else ())


def find_samples(page: bytes, name: str, *, labels: bool = True) -> list[Sample]:
    """Every sample whose metric name is exactly ``name``, in page order."""
    return _scanner(name, labels).scan(page).get(name, [])


def counter_alias(name: str) -> str:
    """``x_total`` for ``x`` and ``x`` for ``x_total``: the two ways a counter's samples may be named."""
    return name[: -len("_total")] if name.endswith("_total") else name + "_total"


def find_family(page: bytes, name: str, *, labels: bool = True) -> list[Sample]:
    """Samples of ``name`` or, when there are none, of :func:`counter_alias` of it."""
    return find_samples(page, name, labels=labels) or find_samples(page, counter_alias(name), labels=labels)
