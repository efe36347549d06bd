"""The targeted Prometheus text parser against prometheus_client's: every sample of every family of the
simulator's real pages (vLLM, SGLang, trtllm-serve), hand-written edge cases (escapes, comments, NaN/Inf,
timestamps, counters' ``_total``), malformed lines, and the hinted scan that reuses the previous page's
layout."""

from __future__ import annotations

import pytest
from dl_pages import KINDS, engine_page, reference, same

from endpoint_picker.datalayer.promtext import (
    PromParseError,
    ScanHints,
    Scanner,
    counter_alias,
    find_family,
    find_samples,
    parse_labels,
)


def mine(page: bytes, name: str) -> list[tuple[dict[str, str], float, float | None]]:
    return [(dict(s.labels), s.value, s.timestamp) for s in find_samples(page, name)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_sample_of_a_real_page_matches_prometheus_client(kind: str) -> None:
    page = engine_page(kind, lora=kind == "vllm")
    ref = reference(page)
    assert len(ref) > 20
    for name, samples in ref.items():
        assert same(mine(page, name), samples), name
    # One scanner over all names at once reads the same.
    found = Scanner(ref).scan(page)
    assert set(found) == set(ref)
    for name, samples in found.items():
        assert same([(dict(s.labels), s.value, s.timestamp) for s in samples], ref[name]), name


EDGE_PAGE = (
    'edge_first{a="1"} 1\n'  # the first line has no newline before it
    "# HELP edge_gauge A gauge; its name also appears in comments: edge_gauge{x=\"y\"} 5\n"
    "# TYPE edge_gauge gauge\n"
    'edge_gauge{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb",other="\\\\t"} 1.5\n'
    'edge_gauge{odd="} , = # {",empty=""} -2\n'
    "edge_gauge{} 3\n"
    'edge_gauge{trailing="comma",} 4\n'
    'edge_gauge{ spaced = "x" , b="y" } 5\n'
    "edge_gauge_by_reason{reason=\"x\"} 99\n"  # a longer name that starts with edge_gauge
    "# TYPE edge_values gauge\n"
    'edge_values{v="nan"} NaN\n'
    'edge_values{v="inf"} +Inf\n'
    'edge_values{v="-inf"} -Inf\n'
    'edge_values{v="exp"} 1.5e-3\n'
    'edge_values{v="int"} 42\n'
    'edge_values{v="ts"} 7 1712345678901\n'
    "edge_values\t8\t-1000\n"
    "edge_nolabels 9\n"
    "# TYPE edge_requests counter\n"
    'edge_requests_total{code="200"} 10\n'
    'edge_requests_created{code="200"} 1.7e9\n'
    "edge_last 11"  # no final newline
)


def test_edge_cases_match_prometheus_client() -> None:
    page = EDGE_PAGE.encode()
    ref = reference(page)
    for name in ("edge_first", "edge_gauge", "edge_gauge_by_reason", "edge_values", "edge_nolabels",
                 "edge_requests_total", "edge_requests_created", "edge_last"):
        assert same(mine(page, name), ref[name]), name
    gauge = mine(page, "edge_gauge")
    assert gauge[0][0] == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "a\nb", "other": "\\t"}
    assert gauge[1][0] == {"odd": "} , = # {", "empty": ""}
    values = [v for _labels, v, _ts in mine(page, "edge_values")]
    assert values[0] != values[0] and values[1] == float("inf") and values[2] == float("-inf")
    assert mine(page, "edge_values")[5][2] == pytest.approx(1712345678.901)
    # Names only in comments, or prefixes of longer names, are not samples.
    assert mine(page, "edge") == []
    assert mine(page, "edge_gauge_by") == []


def test_counters_are_found_with_or_without_total() -> None:
    page = EDGE_PAGE.encode()
    assert counter_alias("x") == "x_total" and counter_alias("x_total") == "x"
    assert [s.value for s in find_family(page, "edge_requests")] == [10.0]
    assert [s.value for s in find_family(page, "edge_requests_total")] == [10.0]
    assert [s.value for s in find_family(page, "edge_nolabels_total")] == [9.0]
    assert find_family(page, "edge_missing") == []


def test_labels_can_be_skipped_for_speed() -> None:
    page = EDGE_PAGE.encode()
    assert [dict(s.labels) for s in find_samples(page, "edge_nolabels", labels=False)] == [{}]
    assert [s.value for s in find_samples(page, "edge_gauge", labels=False)] == [1.5, -2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("line", [
    'bad{a="1"} notanumber',
    'bad{a="1"} 1_000',
    'bad{a="1"}',
    'bad{a="1"} 1 2 3',
    'bad{a="unterminated} 1',
    'bad{a=unquoted} 1',
    'bad{a="1" b="2"} 1',
    'bad{a="1",a="2"} 1',
    'bad{1a="x"} 1',
    "bad 1 notatimestamp",
])
def test_malformed_lines_of_a_requested_family_raise(line: str) -> None:
    page = f"# TYPE bad gauge\n{line}\nok 1\n".encode()
    with pytest.raises(PromParseError):
        find_samples(page, "bad")
    # Lines of other families are never looked at.
    assert [s.value for s in find_samples(page, "ok")] == [1.0]


def test_parse_labels_results_are_cached_and_shared() -> None:
    first = parse_labels(b'a="1",b="2"')
    assert first == {"a": "1", "b": "2"}
    assert parse_labels(b'a="1",b="2"') is first


def test_scanner_rejects_bad_names() -> None:
    with pytest.raises(ValueError):
        Scanner([])
    with pytest.raises(ValueError):
        Scanner(["not a name"])


def _page(running: int, extra_lora: int, *, histogram_width: int = 1, moved: bool = False) -> bytes:
    """A vLLM-like page whose numbers (and so offsets) change between scrapes."""
    hist = "".join(f'vllm:h_bucket{{le="{i}"}} {"9" * histogram_width}.0\n' for i in range(30))
    lora = "".join(f'vllm:lora_requests_info{{max_lora="2",running_lora_adapters="a{i}",waiting_lora_adapters=""}} '
                   f"{1000 + i}.5\n" for i in range(1 + extra_lora))
    gauges = (f'# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{engine="0"}} {running}.0\n'
              f'# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{engine="0"}} {running * 7}.0\n'
              f"# TYPE vllm:lora_requests_info gauge\n{lora}")
    if moved:
        return f"# TYPE vllm:h histogram\n{hist}{gauges}".encode()
    return f"{gauges}# TYPE vllm:h histogram\n{hist}".encode()


NAMES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:lora_requests_info", "vllm:absent")


def _plain(found: dict) -> dict:
    return {k: [(dict(s.labels), s.value, s.timestamp) for s in v] for k, v in found.items()}


def test_hinted_scan_reads_the_same_as_a_full_scan_as_pages_change() -> None:
    scanner = Scanner(NAMES, full_scan_every=5)
    hints = ScanHints()
    pages = [_page(r, r % 3, histogram_width=1 + r % 4) for r in range(40)]
    pages += [_page(5, 0, moved=True), _page(6, 2, moved=True), _page(123456, 9)]
    for page in pages:
        assert _plain(scanner.scan(page, hints)) == _plain(scanner.scan(page)), page[:80]
    assert hints.offsets is not None  # hints stayed in use


def test_hinted_scan_notices_a_family_that_appears_within_the_full_scan_period() -> None:
    scanner = Scanner(("a", "b"), full_scan_every=3)
    hints = ScanHints()
    assert set(scanner.scan(b"a 1\n", hints)) == {"a"}
    seen = [set(scanner.scan(b"a 1\nb 2\n", hints)) for _ in range(4)]
    assert seen[-1] == {"a", "b"}  # found by the next full scan


def test_hints_are_not_used_when_a_family_is_not_one_group() -> None:
    page = b"x 1\ny 2\nx 3\n"  # x in two groups (against the format, but readable)
    scanner = Scanner(("x",))
    hints = ScanHints()
    for _ in range(3):
        assert [s.value for s in scanner.scan(page, hints)["x"]] == [1.0, 3.0]
    assert hints.offsets is None
