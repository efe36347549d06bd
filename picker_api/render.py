"""Human-readable text for decisions and state (what ``endpoint-picker explain|state|decisions`` print)."""

from __future__ import annotations

from collections.abc import Sequence

from picker_api.stubs import picker_pb2 as pb

OUTCOME_TEXT = {pb.OUTCOME_SCHEDULED: "scheduled", pb.OUTCOME_REJECTED: "rejected",
                pb.OUTCOME_UNSPECIFIED: "unknown"}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Left-aligned columns, two spaces apart; trailing spaces trimmed."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    return [indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
            for line in (headers, *rows)]


def _num(value: float) -> str:
    return f"{value:.3f}"


def _keys(keys: Sequence[str]) -> str:
    return ", ".join(keys) if keys else "-"


def _outcome(d: pb.Decision) -> str:
    text = OUTCOME_TEXT.get(d.outcome, "unknown")
    return f"{text}: {d.outcome_detail}" if d.outcome_detail else text


def _time(msg: pb.Decision | pb.State) -> str:
    return msg.time.ToJsonString() if msg.HasField("time") else "-"


def render_decision(d: pb.Decision) -> str:
    lines = [
        f"request     {d.request_id}",
        f"model       {d.model or '-'}   priority {d.priority}",
        f"time        {_time(d)}",
        f"outcome     {_outcome(d)}",
        f"pick        {d.pick or '-'}",
        f"fallbacks   {_keys(d.fallbacks)}",
    ]
    if d.HasField("saturation"):
        lines.append(f"saturation  {d.saturation:.3f}")
    lines.append(f"candidates  {len(d.candidates)}: {_keys(d.candidates)}")
    for p in d.profiles:
        lines.append("")
        lines.extend(render_profile(p, primary=p.name == d.primary_profile, pick=d.pick, fallbacks=d.fallbacks))
    if d.timings:
        lines.append("")
        lines.append("timings (microseconds)")
        lines.extend(table(["stage", "us"], [[t.stage, f"{t.microseconds:.1f}"] for t in d.timings], indent="  "))
    return "\n".join(lines)


def render_profile(p: pb.ProfileDecision, *, primary: bool = False, pick: str = "",
                   fallbacks: Sequence[str] = ()) -> list[str]:
    title = f"profile {p.name}" + (" (primary)" if primary else "")
    lines = [f"{title}: {len(p.candidates)} candidates, {len(p.scored_endpoints)} scored"]
    if p.filters:
        lines.append("  filters")
        lines.extend(table(["filter", "removed"], [[f.filter, f"{len(f.removed_endpoints)}: "
                                                  f"{_keys(f.removed_endpoints)}"] for f in p.filters],
                           indent="    "))
    else:
        lines.append("  filters     none removed an endpoint")
    if p.scored_endpoints:
        lines.append("  scores      raw -> weighted per scorer; rows by total, highest first")
        position = {key: i for i, key in enumerate(p.scored_endpoints)}
        total = {t.endpoint: t.total for t in p.totals}
        by_scorer = [{s.endpoint: s for s in scorer.scores} for scorer in p.scorers]
        chosen = [pick, *fallbacks] if primary and pick else list(p.picked)
        rank = {key: "pick" if i == 0 else f"fallback {i}" for i, key in enumerate(chosen)}
        headers = ["endpoint", *(f"{s.scorer} x{s.weight:g}" for s in p.scorers), "total", ""]
        rows = []
        for key in sorted(p.scored_endpoints, key=lambda k: (-total.get(k, 0.0), position[k])):
            cells = [key]
            for scores in by_scorer:
                s = scores.get(key)
                cells.append(f"{_num(s.raw)} -> {_num(s.weighted)}" if s is not None else "-")
            cells += [_num(total[key]) if key in total else "-", rank.get(key, "")]
            rows.append(cells)
        lines.extend(table(headers, rows, indent="    "))
    lines.append(f"  picked      {_keys(p.picked)}")
    return lines


def render_decision_line(d: pb.Decision) -> str:
    """One line per decision, for ``endpoint-picker decisions``."""
    total = next((t.microseconds for t in d.timings if t.stage == "total"), None)
    parts = [_time(d), d.request_id, f"model={d.model or '-'}"]
    if d.outcome == pb.OUTCOME_SCHEDULED:
        parts.append(f"-> {d.pick}" + (f" (+{len(d.fallbacks)} fallbacks)" if d.fallbacks else ""))
    else:
        parts.append(_outcome(d))
    parts.append(f"profile={d.primary_profile or '-'}")
    if total is not None:
        parts.append(f"{total:.0f}us")
    return "  ".join(parts)


def _seconds(duration_seconds: float) -> str:
    return f"{duration_seconds * 1000:.0f}ms" if duration_seconds < 1 else f"{duration_seconds:.1f}s"


def render_state(s: pb.State) -> str:
    threshold = s.staleness_threshold.ToTimedelta().total_seconds()
    lines = [
        f"pool        {s.pool.namespace}/{s.pool.name}   synced {'yes' if s.synced else 'no'}   "
        f"endpoints {len(s.endpoints)}   decisions recorded {s.decisions_recorded}",
        f"time        {_time(s)}   metrics count as stale after "
        + (_seconds(threshold) if threshold > 0 else "never"),
        "prefix idx  " + (", ".join(f"{i.plugin}: {i.entries} entries" for i in s.prefix_indexes)
                          if s.prefix_indexes else "none"),
        "",
    ]
    headers = ["endpoint", "name", "waiting", "running", "kv-cache", "metrics age", "in-flight", "tokens",
               "prefix entries", "labels"]
    rows = []
    for e in s.endpoints:
        if e.HasField("metrics"):
            m = e.metrics
            age = _seconds(m.age.ToTimedelta().total_seconds()) + (" STALE" if m.stale else "")
            scraped = [str(m.waiting_queue_size), str(m.running_requests), f"{m.kv_cache_usage * 100:.1f}%", age]
        else:
            scraped = ["-", "-", "-", "never scraped"]
        labels = ",".join(f"{k}={v}" for k, v in sorted(e.labels.items())) or "-"
        rows.append([e.key, e.name, *scraped, str(e.in_flight.requests), str(e.in_flight.tokens),
                     str(e.prefix_index_entries), labels])
    lines.extend(table(headers, rows))
    return "\n".join(lines)
