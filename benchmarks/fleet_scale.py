"""Fleet scale in virtual time: the picker's real scheduler and plugins driving N simulated engines, no sockets.

Why this module exists: the routing benchmarks over HTTP stop at a few dozen servers on a 2-core machine; the
fleet simulator (``simulator/fleet``) reaches production sizes -- hundreds to a thousand endpoints, thousands
of requests per second -- deterministically per seed. This benchmark sweeps endpoints x arrival rate for a
few routing policies (the baseline ``round-robin`` and the picker's own ``epp-default`` by default) and
reports, per point, two kinds of numbers:

- the cost of simulating it: wall seconds against simulated seconds (``speed`` > 1 is faster than real
  time), wall time per request inside the policy (for ``epp-*``: the whole scheduling cycle over every
  endpoint) against inside the engines, and simulated requests per wall second. These vary from run to run
  and machine to machine (``--repeat`` runs each point again and reports the best and the range);
- the quality of the routing (``simulator.fleet.report``): TTFT / TPOT percentiles, throughput, goodput at
  the SLOs, prefix-cache hit rate, spread of requests over endpoints. These are deterministic for a seed:
  every repeat must reproduce them exactly, and the benchmark says so if one does not.

The default sweep is 8, 64, 256 and 1000 endpoints at 1 and 4 requests per second per endpoint (so 1000
endpoints at 1000 req/s is one of its points), 10 virtual seconds of arrivals each. ``--points 1000x1000``
runs chosen points only. Progress goes to stderr, the tables to stdout, everything to ``--json``::

    endpoint-picker bench fleet                     # the default sweep
    python -m benchmarks.fleet_scale --repeat 2 --json bench-results/fleet-scale.json
    python -m benchmarks.fleet_scale --points 1000x1000 --policy epp-default --repeat 3

The workload (default ``shared-prefix``) scales with the fleet: one group of shared system prompts per two
endpoints, so the picker's prefix index and the engines' caches have as much to do per endpoint at every size.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endpoint_picker.cli.arg_types import positive_float, positive_int
from simulator.engine.config import EngineConfig
from simulator.engine.profile import BUILTIN_PROFILES, get_profile
from simulator.fleet.arrivals import Arrivals
from simulator.fleet.cli import length_arg
from simulator.fleet.picker_policy import PICKER_POLICIES, PickerPolicy
from simulator.fleet.policies import POLICIES, make_policy
from simulator.fleet.policy import RoutingPolicy
from simulator.fleet.report import FleetReport, Slo
from simulator.fleet.shared_prefix import SharedPrefixWorkload
from simulator.fleet.simulation import FleetSimulation, uniform_fleet
from simulator.fleet.synthetic import PRESETS, SyntheticWorkload
from simulator.fleet.workload import Length, Workload

__all__ = ["Point", "add_arguments", "main", "parse_point", "run", "run_cli", "run_point", "sweep_points"]

WORKLOADS = ("shared-prefix", *PRESETS)
DEFAULT_ENDPOINTS = (8, 64, 256, 1000)
DEFAULT_RATES_PER_ENDPOINT = (1.0, 4.0)
DEFAULT_POLICIES = ("round-robin", "epp-default")


@dataclass(frozen=True, slots=True)
class Point:
    """One fleet size at one offered load."""

    endpoints: int
    rate: float  # requests per virtual second, the whole fleet

    def __str__(self) -> str:
        return f"{self.endpoints} endpoints @ {self.rate:g} req/s"


def parse_point(text: str) -> Point:
    """``"1000x1000"``: endpoints x requests per second."""
    try:
        n_text, rate_text = text.lower().split("x", 1)
        point = Point(int(n_text), float(rate_text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ENDPOINTSxRATE such as 1000x1000, got {text!r}") from None
    if point.endpoints < 1 or not point.rate > 0 or math.isinf(point.rate):
        raise argparse.ArgumentTypeError(f"{text!r}: endpoints must be >= 1 and the rate finite and > 0")
    return point


def sweep_points(endpoints: Sequence[int], rates_per_endpoint: Sequence[float]) -> list[Point]:
    """Every fleet size at every per-endpoint rate, smallest first."""
    return sorted({Point(n, n * r) for n in endpoints for r in rates_per_endpoint},
                  key=lambda p: (p.endpoints, p.rate))


def _workload(args: argparse.Namespace, point: Point) -> Workload:
    count = max(1, round(point.rate * args.duration))
    arrivals = Arrivals(point.rate, args.arrival)
    if args.workload == "shared-prefix":
        groups = max(1, math.ceil(point.endpoints * args.groups_per_endpoint))
        return SharedPrefixWorkload(count, arrivals, num_groups=groups, num_prompts_per_group=args.prompts_per_group,
                                    system_prompt_len=args.system_prompt_len, question_len=args.question_len,
                                    output_len=args.output_len, seed=args.seed)
    return SyntheticWorkload.preset(args.workload, count, arrivals, seed=args.seed)


def _policy(name: str, seed: int) -> RoutingPolicy:
    if name in PICKER_POLICIES:
        return PICKER_POLICIES[name](seed, 0.0)
    return make_policy(name, seed)


def _engine(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(profile=get_profile(args.profile), seed=args.seed)


def _quality(report: FleetReport) -> dict[str, Any]:
    """The report without the per-endpoint request counts (a thousand numbers per point at 1000 endpoints)."""
    doc = report.to_dict()
    spread = doc["spread"]
    assert isinstance(spread, dict)
    spread.pop("per_endpoint", None)
    return doc


def run_point(args: argparse.Namespace, point: Point, policy_name: str) -> dict[str, Any]:
    """Build the fleet and the policy, run the workload once; timings and the (deterministic) quality."""
    workload = _workload(args, point)
    t0 = time.perf_counter()
    policy = _policy(policy_name, args.seed)
    sim = FleetSimulation(uniform_fleet(point.endpoints, _engine(args)), policy)
    setup = time.perf_counter() - t0
    run_ = sim.run(workload.requests())
    requests = len(run_.records)
    report = FleetReport.of(run_, workload.name, Slo(args.slo_ttft, args.slo_tpot))
    doc: dict[str, Any] = {
        "policy": policy_name,
        "endpoints": point.endpoints,
        "rate_rps": point.rate,
        "requests": requests,
        "simulated_s": run_.end_time,
        "setup_s": setup,
        "wall_s": run_.wall_seconds,
        "cpu_s": run_.cpu_seconds,
        "speed": run_.end_time / run_.wall_seconds if run_.wall_seconds > 0 else math.inf,
        "policy_us_per_request": run_.policy_seconds / requests * 1e6 if requests else 0.0,
        "engine_us_per_request": run_.engine_seconds / requests * 1e6 if requests else 0.0,
        "loop_us_per_request": ((run_.wall_seconds - run_.policy_seconds - run_.engine_seconds) / requests * 1e6
                                if requests else 0.0),
        "schedule_us_per_request": None,
        "requests_per_wall_s": run_.requests_per_wall_second,
        "engine_steps": run_.steps,
        "quality": _quality(report),
    }
    if isinstance(policy, PickerPolicy):
        doc["schedule_us_per_request"] = policy.mean_schedule_us
        policy.close()
    return doc


_TIMING_KEYS = ("setup_s", "wall_s", "cpu_s", "speed", "policy_us_per_request", "engine_us_per_request",
                "loop_us_per_request", "schedule_us_per_request", "requests_per_wall_s")


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one point: timings of the fastest run (by wall), every run's wall and speed, and whether
    the quality numbers were identical in every repeat (they must be: the simulation is deterministic)."""
    best = dict(min(runs, key=lambda r: r["wall_s"]))
    best["repeats"] = len(runs)
    best["wall_s_all"] = [r["wall_s"] for r in runs]
    best["speed_all"] = [r["speed"] for r in runs]
    best["wall_s_median"] = statistics.median(best["wall_s_all"])
    best["deterministic"] = all(r["quality"] == runs[0]["quality"] and r["engine_steps"] == runs[0]["engine_steps"]
                                for r in runs)
    return best


def _fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.1f}"


def cost_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ["policy", "endpoints", "req/s", "requests", "simulated s", "wall s", "CPU s", "speed (sim s / wall s)",
            "policy µs/req", "of which schedule() µs", "engines µs/req", "loop µs/req", "sim req / wall s",
            "setup s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        speeds = r.get("speed_all", [r["speed"]])
        speed = f"{max(speeds):.2f}" if len(speeds) == 1 else f"{min(speeds):.2f} to {max(speeds):.2f}"
        lines.append("| " + " | ".join([
            r["policy"], str(r["endpoints"]), f"{r['rate_rps']:g}", str(r["requests"]), f"{r['simulated_s']:.1f}",
            f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", speed, _fmt(r["policy_us_per_request"]),
            _fmt(r["schedule_us_per_request"]),
            _fmt(r["engine_us_per_request"]), _fmt(r["loop_us_per_request"]), _fmt(r["requests_per_wall_s"]),
            f"{r['setup_s']:.1f}",
        ]) + " |")
    return "\n".join(lines)


def quality_table(rows: Sequence[dict[str, Any]]) -> str:
    goodput = any(r["quality"]["goodput_rps"] is not None for r in rows)
    head = ["policy", "endpoints", "req/s", "throughput req/s", "out tok/s", "TTFT p50 / p90 / p99 ms",
            "TPOT p50 / p90 / p99 ms", "cache hit", "req/endpoint min-max (CV)"]
    if goodput:
        head.append("goodput req/s")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        q = r["quality"]
        ttft, tpot, spread = q["ttft"], q["tpot"], q["spread"]
        row = [
            r["policy"], str(r["endpoints"]), f"{r['rate_rps']:g}", f"{q['throughput_rps']:.1f}",
            f"{q['output_tokens_per_s']:.0f}",
            f"{_ms(ttft['p50'])} / {_ms(ttft['p90'])} / {_ms(ttft['p99'])}",
            f"{_ms(tpot['p50'])} / {_ms(tpot['p90'])} / {_ms(tpot['p99'])}",
            f"{q['prefix_cache_hit_rate']:.1%}", f"{spread['min']}-{spread['max']} ({spread['cv']:.2f})",
        ]
        if goodput:
            row.append("-" if q["goodput_rps"] is None else f"{q['goodput_rps']:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags (for ``python -m benchmarks.fleet_scale`` and a ``bench fleet`` subcommand)."""
    g = parser.add_argument_group("sweep")
    g.add_argument("--endpoints", type=positive_int, nargs="+", default=list(DEFAULT_ENDPOINTS),
                   help="fleet sizes (default 8 64 256 1000)")
    g.add_argument("--rate-per-endpoint", type=positive_float, nargs="+", default=list(DEFAULT_RATES_PER_ENDPOINT),
                   metavar="REQ/S", help="offered load per endpoint; every size runs at each (default 1 4)")
    g.add_argument("--points", type=parse_point, nargs="+", default=None, metavar="NxRATE",
                   help="run exactly these points instead of the sweep, e.g. 1000x1000 (endpoints x req/s)")
    g.add_argument("--policy", nargs="+", choices=sorted({*POLICIES, *PICKER_POLICIES}), default=list(DEFAULT_POLICIES),
                   help="routing policies, each runs every point (default: round-robin epp-default)")
    g.add_argument("--duration", type=positive_float, default=10.0, metavar="S",
                   help="virtual seconds of arrivals per point (default 10); the run lasts until every request "
                   "finished")
    g.add_argument("--repeat", type=positive_int, default=1,
                   help="runs per point: timings of the fastest, the range of speeds, and a check that the "
                   "quality numbers repeat exactly (default 1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the workload, the engines and the policies")
    g.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the short unrecorded run per policy before the sweep")

    g = parser.add_argument_group("workload")
    g.add_argument("--workload", choices=WORKLOADS, default="shared-prefix",
                   help="shared-prefix (default; scaled with the fleet) or a synthetic preset")
    g.add_argument("--arrival", choices=("poisson", "constant"), default="poisson")
    g.add_argument("--groups-per-endpoint", type=positive_float, default=0.5,
                   help="shared-prefix: system-prompt groups per endpoint (default 0.5)")
    g.add_argument("--prompts-per-group", type=positive_int, default=5, help="shared-prefix (default 5)")
    g.add_argument("--system-prompt-len", type=positive_int, default=1000, help="shared-prefix: tokens (default 1000)")
    g.add_argument("--question-len", type=length_arg, default=Length(100), metavar="LEN",
                   help="shared-prefix: tokens, N or mean,std_dev[,min[,max]] (default 100)")
    g.add_argument("--output-len", type=length_arg, default=Length(50), metavar="LEN",
                   help="shared-prefix: output tokens (default 50)")
    g.add_argument("--profile", default="llama-3.1-8b-h100", metavar="NAME|PATH",
                   help=f"engine latency profile: one of {', '.join(BUILTIN_PROFILES)} or a YAML file")

    g = parser.add_argument_group("report")
    g.add_argument("--slo-ttft", type=float, default=0.25, metavar="S", help="TTFT bound for goodput (default 0.25)")
    g.add_argument("--slo-tpot", type=float, default=0.04, metavar="S", help="TPOT bound for goodput (default 0.04)")
    g.add_argument("--json", default=None, metavar="PATH", help="write every point's numbers as JSON")


def run(args: argparse.Namespace, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the sweep ``args`` describe; the JSON document (``points``: one entry per point and policy)."""
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    points = list(args.points) if args.points else sweep_points(args.endpoints, args.rate_per_endpoint)
    jobs = [(p, name) for p in points for name in args.policy]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    if args.warmup:
        # One short unrecorded run per policy: imports and first calls would otherwise land on the first point.
        for name in args.policy:
            run_point(argparse.Namespace(**{**vars(args), "duration": 1.0}), Point(8, 8.0), name)
    for k, (point, name) in enumerate(jobs, 1):
        runs = []
        for rep in range(args.repeat):
            tag = f"[fleet-scale] {k}/{len(jobs)} {name}, {point}" + (f", run {rep + 1}/{args.repeat}"
                                                                    if args.repeat > 1 else "")
            say(f"{tag}: ...")
            doc = run_point(args, point, name)
            say(f"{tag}: {doc['requests']} requests, {doc['simulated_s']:.1f} s simulated in {doc['wall_s']:.1f} s "
                f"wall (speed {doc['speed']:.2f}; setup {doc['setup_s']:.1f} s), policy "
                f"{doc['policy_us_per_request']:.0f} µs/req, engines {doc['engine_us_per_request']:.0f} µs/req")
            runs.append(doc)
        merged = _merge(runs)
        if not merged["deterministic"]:
            say(f"[fleet-scale] WARNING: {name}, {point}: quality numbers differ between repeats")
        rows.append(merged)
    say(f"[fleet-scale] {len(jobs)} points in {time.perf_counter() - started:.0f} s")
    return {
        "benchmark": "fleet-scale",
        "argv": sys.argv[1:],
        "python": sys.version.split()[0],
        "settings": {
            "duration_s": args.duration, "seed": args.seed, "repeat": args.repeat, "warmup": args.warmup,
            "workload": args.workload,
            "arrival": args.arrival, "groups_per_endpoint": args.groups_per_endpoint,
            "prompts_per_group": args.prompts_per_group, "system_prompt_len": args.system_prompt_len,
            "question_len": args.question_len.describe(), "output_len": args.output_len.describe(),
            "profile": args.profile, "slo_ttft_s": args.slo_ttft, "slo_tpot_s": args.slo_tpot,
        },
        "points": rows,
    }


def report(doc: dict[str, Any]) -> str:
    """The two markdown tables: cost of the simulation, quality of the routing."""
    rows = doc["points"]
    return (f"Cost (wall time on this machine, of the fastest repeat; speed > 1 is faster than real time, a range "
            f"over repeats):\n\n{cost_table(rows)}\n\n"
            f"Routing quality (deterministic per seed):\n\n{quality_table(rows)}")


def run_cli(args: argparse.Namespace) -> int:
    """Run the sweep the flags of :func:`add_arguments` describe; print the tables (stdout) and progress
    (stderr), write ``--json``; 2 on bad input, 1 if a repeat was not deterministic, else 0."""
    try:
        doc = run(args)
    except (ValueError, OSError) as exc:
        print(f"fleet_scale: {exc}", file=sys.stderr)
        return 2
    print(report(doc))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"[fleet-scale] wrote {path}", file=sys.stderr)
    return 0 if all(r["deterministic"] for r in doc["points"]) else 1


def main(argv: list[str] | None = None, prog: str = "endpoint-picker bench fleet") -> int:
    """Parse ``argv`` and :func:`run_cli` (a leading ``--``, as a pass-through parser may leave, is ignored)."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))

if __name__ == "__main__":
    sys.exit(main())
