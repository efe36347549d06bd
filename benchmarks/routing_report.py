"""Writing a routing benchmark's results: JSON (everything), a Markdown table, PNG plots, and the goal check.

Why this module exists: the numbers are only useful if people can read and compare them — the table goes
into docs/benchmarks.md as is, the plots show TTFT and throughput against the offered rate with one line per
target, and the JSON keeps every per-request measurement for anyone who wants to recompute. The goal check
states the issue's targets (p90 TTFT at the highest stage <= 0.5 x round robin's and no worse than the best
peer's; output throughput >= the best peer's) and whether this run met them, without judgement calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.latency_stats import Slo, Summary
from benchmarks.routing import StagePlan, TargetRun
from benchmarks.targets import PEER_NAMES


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}" if value >= 0.1 else f"{value * 1000:.1f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def summaries(runs: Sequence[TargetRun], stages: Sequence[StagePlan], slo: Slo,
              endpoints: Sequence[str]) -> dict[str, dict[int, Summary]]:
    return {run.name: run.stage_summaries(stages, slo, endpoints) for run in runs if run.error is None}


def markdown_table(runs: Sequence[TargetRun], stages: Sequence[StagePlan],
                   table: Mapping[str, Mapping[int, Summary]], slo: Slo) -> str:
    goodput = f"goodput req/s ({slo})" if not slo.empty else "goodput"
    head = ["target", "offered req/s", "req/s", "out tok/s", goodput, "TTFT p50 ms", "TTFT p90 ms", "TTFT p99 ms",
            "TPOT p50 ms", "TPOT p90 ms", "ITL p99 ms", "E2E p90 s", "cache hit", "errors", "spread CV"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage in stages:
        for run in runs:
            if run.error is not None:
                if stage.index == stages[0].index:
                    lines.append(f"| {run.name} | failed: {run.error[:80]} |" + " |" * (len(head) - 2))
                continue
            s = table[run.name][stage.index]
            hit = run.stage_cache.get(stage.index)
            cells = [run.name, f"{stage.rate:g}", f"{s.request_throughput:.1f}", f"{s.output_throughput:.0f}",
                     "-" if s.goodput is None else f"{s.goodput:.1f}", _ms(s.ttft["p50"]), _ms(s.ttft["p90"]),
                     _ms(s.ttft["p99"]), _ms(s.tpot["p50"]), _ms(s.tpot["p90"]), _ms(s.itl["p99"]),
                     _s(s.e2e["p90"]), _pct(hit.hit_rate if hit else None), str(s.errors), f"{s.spread.cv:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_check(runs: Sequence[TargetRun], stages: Sequence[StagePlan],
               table: Mapping[str, Mapping[int, Summary]], ours: str = "epp-default") -> list[str]:
    """The issue's goals at the highest-rate stage, as sentences with the numbers."""
    if not stages or ours not in table:
        return [f"goal check skipped: no results for {ours}"]
    top = max(stages, key=lambda s: s.rate).index
    mine = table[ours][top]
    out = [f"At the highest stage ({max(s.rate for s in stages):g} req/s offered):"]
    p90 = mine.ttft["p90"]
    rr = table.get("round-robin", {}).get(top)
    if rr is not None and p90 is not None and rr.ttft["p90"]:
        ratio = p90 / rr.ttft["p90"]
        out.append(f"- {ours} p90 TTFT {_ms(p90)} ms = {ratio:.2f} x round-robin's {_ms(rr.ttft['p90'])} ms "
                   f"(goal <= 0.5): {'met' if ratio <= 0.5 else 'NOT met'}")
    peers = {name: table[name][top] for name in PEER_NAMES if name in table}
    if peers and p90 is not None:
        best_name, best = min(peers.items(), key=lambda kv: kv[1].ttft["p90"] or float("inf"))
        if best.ttft["p90"] is not None:
            out.append(f"- p90 TTFT vs the best peer ({best_name}, {_ms(best.ttft['p90'])} ms): "
                       f"{'met' if p90 <= best.ttft['p90'] else 'NOT met'} ({_ms(p90)} ms)")
        best_tp_name, best_tp = max(peers.items(), key=lambda kv: kv[1].output_throughput)
        out.append(f"- output throughput {mine.output_throughput:.0f} tok/s vs the best peer's "
                   f"({best_tp_name}) {best_tp.output_throughput:.0f} tok/s: "
                   f"{'met' if mine.output_throughput >= best_tp.output_throughput * 0.99 else 'NOT met'} "
                   "(within 1 % counts as equal: at the same offered load every target that keeps up carries "
                   "the same tokens)")
    elif not peers:
        out.append("- no peer router results in this run: the peer comparison is not checked")
    return out


def write_plots(out_dir: Path, runs: Sequence[TargetRun], stages: Sequence[StagePlan],
                table: Mapping[str, Mapping[int, Summary]], title: str) -> list[Path]:
    """ttft.png (p50 and p90 TTFT) and throughput.png (output tokens/s) against the offered rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rates = [s.rate for s in stages]
    paths: list[Path] = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for run in runs:
        if run.name not in table:
            continue
        rows = [table[run.name][s.index] for s in stages]
        for ax, key in zip(axes, ("p50", "p90"), strict=True):
            ax.plot(rates, [(r.ttft[key] or float("nan")) * 1000 for r in rows], marker="o", label=run.name)
    for ax, key in zip(axes, ("p50", "p90"), strict=True):
        ax.set_xlabel("offered load (req/s)")
        ax.set_ylabel(f"TTFT {key} (ms, log scale)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"TTFT {key}")
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    paths.append(out_dir / "ttft.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    for run in runs:
        if run.name in table:
            ax.plot(rates, [table[run.name][s.index].output_throughput for s in stages], marker="o", label=run.name)
    ax.set_xlabel("offered load (req/s)")
    ax.set_ylabel("output tokens/s")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("output throughput", fontsize=10)
    paths.append(out_dir / "throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_results(out_dir: Path, meta: Mapping[str, Any], runs: Sequence[TargetRun], stages: Sequence[StagePlan],
                  slo: Slo, endpoints: Sequence[str], *, plots: bool = True) -> str:
    """results.json, results.md and the plots in ``out_dir``; returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summaries(runs, stages, slo, endpoints)
    md = [f"# Routing benchmark\n\n{meta.get('summary', '')}\n",
          markdown_table(runs, stages, table, slo), "",
          "cache hit = prefix-cache hits / queries in tokens, read from the simulated servers' /metrics at the "
          "stage boundaries; spread CV = coefficient of variation of requests per endpoint.", "",
          *goal_check(runs, stages, table), ""]
    md.append("| target | what | wall s | send lag p99 ms | CPU % of a core |")
    md.append("|---|---|---|---|---|")
    for run in runs:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in run.cpu_percent.items())
        md.append(f"| {run.name} | {run.description} | {run.wall_seconds:.0f} | {run.send_lag_p99 * 1000:.1f} | "
                  f"{cpu} |")
    text = "\n".join(md) + "\n"
    if plots:
        write_plots(out_dir, runs, stages, table, str(meta.get("summary", ""))[:160])
        text += "\n![TTFT against offered load](ttft.png)\n\n![output throughput](throughput.png)\n"
    (out_dir / "results.md").write_text(text, encoding="utf-8")
    doc = {
        **meta,
        "stages": [{"index": s.index, "rate": s.rate, "start": s.start, "end": s.end} for s in stages],
        "slo": str(slo),
        "targets": [{
            "name": run.name, "description": run.description, "error": run.error, "wall_seconds": run.wall_seconds,
            "cpu_percent": run.cpu_percent, "send_lag_p99": run.send_lag_p99, "send_lag_max": run.send_lag_max,
            "stages": {str(i): {**s.to_dict(), "server_cache_hit": run.stage_cache[i].hit_rate
                                if i in run.stage_cache else None}
                       for i, s in table.get(run.name, {}).items()},
            "requests": [r.to_dict() for r in run.results],
        } for run in runs],
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return text
