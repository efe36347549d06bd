"""``endpoint-picker bench``: the benchmarks behind docs/benchmarks.md, one subcommand each.

Why this module exists: one entry point for every number we publish, each reproducible with one command —

- ``bench routing`` (default): the comparison through real processes on loopback — Envoy round robin, Envoy
  + this picker (default and named variants), sglang-router and vllm-router ``cache_aware`` — against the
  same simulated fleet, in stages of rising rate; results folder with JSON, Markdown and PNG plots.
- ``bench fleet``: the virtual-time fleet benchmark (the real scheduler on 8 to 1000 simulated engines, no
  sockets): how scheduling cost grows with endpoints and rate (:mod:`benchmarks.fleet_scale`).
- ``bench overhead``: the data-plane overhead of the picker, Envoy alone vs Envoy + picker
  (:mod:`benchmarks.overhead`).

The default routing run is the one in docs/benchmarks.md: a shared-prefix workload (inference-perf shape)
whose highest stage saturates a round-robin fleet of 4 simulated H100 servers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from benchmarks.latency_stats import Slo
from benchmarks.peers import DEFAULT_CACHE_DIR
from benchmarks.routing import TargetRun, make_plan, progress_printer, run_target, stage_plans
from benchmarks.routing_report import write_results
from benchmarks.sim_fleet import FleetSpec
from benchmarks.targets import PEER_NAMES, TARGET_NAMES, make_target
from simulator.fleet.cli import add_workload_arguments, build_workload
from simulator.fleet.stages import Stages
from simulator.server.config import DEFAULT_MODEL

DEFAULT_TARGETS = ("round-robin", "epp-default", "epp-upstream-default", "epp-default-buffered", *PEER_NAMES)
# The documented run: 32 groups x 8 prompts of 4000 + 400 tokens, 64 out, on 4 servers with 4000 KV blocks
# each (64k tokens: an eighth of the 32 system prompts fits per server, so where a group goes matters).
# Round robin saturates near 36 req/s (fleet-sim); the stages climb to it and past it.
ROUTING_DEFAULTS = {
    "workload": "shared-prefix", "num_groups": 32, "prompts_per_group": 8, "system_prompt_len": 4000,
    "question_len": "400", "output_len": "64", "stages": "poisson:12x25,24x25,36x25,48x25",
}


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    routing = sub.add_parser("routing", help="compare routers on the same simulated fleet (default)",
                             description=__doc__.split("\n\n")[1] if __doc__ else None)
    add_routing_arguments(routing)
    routing.set_defaults(bench_run=routing_main)
    for name, text in (("fleet", "virtual-time fleet scale benchmark"),
                       ("overhead", "data-plane overhead: Envoy vs Envoy + picker")):
        # Listed for --help; the command line is handed to the benchmark's own parser (see passthrough).
        p = sub.add_parser(name, help=f"{text} (flags: endpoint-picker bench {name} --help)", add_help=False)
        p.add_argument("argv", nargs=argparse.REMAINDER)
        p.set_defaults(bench_run=_passthrough_run(name))
    add_routing_arguments(parser)  # `endpoint-picker bench` alone = `bench routing`
    parser.set_defaults(bench_run=routing_main)


PASSTHROUGH = {"fleet": "benchmarks.fleet_scale", "overhead": "benchmarks.overhead"}


def passthrough(argv: Sequence[str]) -> int | None:
    """``bench fleet ...`` / ``bench overhead ...``: run that benchmark's own ``main`` with the rest of the
    command line (its flags and --help are its own); None for any other command line."""
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in PASSTHROUGH:
        import importlib

        return int(importlib.import_module(PASSTHROUGH[argv[1]]).main(list(argv[2:])) or 0)
    return None


def _passthrough_run(name: str) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def run(args: argparse.Namespace) -> int:
        # Reached only when parsed as a subcommand (no leading options); main() runs its own event loop.
        result = await asyncio.to_thread(passthrough, ["bench", name, *args.argv])
        return int(result or 0)
    return run


def add_routing_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("targets and fleet")
    g.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS), metavar="TARGET",
                   help=f"routers to compare, in order: {', '.join(TARGET_NAMES)}, or epp-config:PATH (an "
                   f"EndpointPickerConfig for this picker). Default: {' '.join(DEFAULT_TARGETS)}")
    g.add_argument("--endpoints", type=int, default=4, help="simulated model servers (default 4)")
    g.add_argument("--num-gpu-blocks-override", type=int, default=4000,
                   help="KV blocks per simulated server (default 4000 = 64k tokens)")
    g.add_argument("--max-num-seqs", type=int, default=256)
    g.add_argument("--max-loras", type=int, default=2, help="adapters per batch, for --workload lora (default 2)")
    g.add_argument("--peer-cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                   help="where peer routers are installed, one virtualenv each (default .bench/peers in the "
                   "checkout)")
    g.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request (default 120)")
    add_workload_arguments(parser)
    parser.set_defaults(**ROUTING_DEFAULTS)
    g = parser.add_argument_group("report")
    g.add_argument("--slo", type=Slo.parse, default=Slo.parse("ttft=500ms,tpot=50ms"),
                   help="goodput bounds, e.g. ttft=500ms,tpot=50ms (also itl=, e2e=; default ttft=500ms,tpot=50ms)")
    g.add_argument("--out", type=Path, default=None,
                   help="results folder (default bench-results/routing-<UTC time>)")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


async def routing_main(args: argparse.Namespace) -> int:
    say = progress_printer()
    try:
        workload = build_workload(args)
        targets = [make_target(name, args.peer_cache_dir) for name in args.targets]
    except (ValueError, OSError) as exc:
        print(f"endpoint-picker bench: {exc}", file=sys.stderr)
        return 2
    requests = list(workload.requests())
    load = getattr(workload, "arrivals", None)  # every built-in workload has one; the Workload protocol does not
    stages = stage_plans(requests, [(s.rate, s.duration) for s in load.stages] if isinstance(load, Stages) else None)
    lora = sorted({r.lora_name for r in requests if r.lora_name})
    spec = FleetSpec(replicas=args.endpoints, num_gpu_blocks=args.num_gpu_blocks_override,
                     max_num_seqs=args.max_num_seqs, lora_modules=lora, max_loras=args.max_loras,
                     seed=args.seed)
    out = args.out or Path("bench-results") / f"routing-{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}"
    say(f"{workload.summary()}; {len(requests)} requests per target, {len(stages)} stage(s); "
        f"targets: {', '.join(t.name for t in targets)}; results in {out}")
    plan = make_plan(requests, DEFAULT_MODEL)
    runs: list[TargetRun] = []
    with tempfile.TemporaryDirectory(prefix="epp-bench-") as tmp:
        work = Path(tmp)
        for i, target in enumerate(targets, 1):
            say(f"[{i}/{len(targets)}] {target.name}")
            runs.append(await run_target(target, spec, plan, stages, work, model=DEFAULT_MODEL, progress=say,
                                         request_timeout=args.request_timeout))
            if runs[-1].error is not None:
                _keep_logs(work, out, target.name)
    meta = {
        "summary": f"{workload.summary()}; {args.endpoints} simulated servers (llama-3.1-8b-h100 profile, "
                   f"{args.num_gpu_blocks_override} KV blocks each)",
        "workload": workload.describe(),
        "fleet": spec.describe(),
        "machine": {"nproc": _nproc(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "command": "endpoint-picker bench " + " ".join(sys.argv[2:]),
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    text = write_results(out, meta, runs, stages, args.slo, [], plots=not args.no_plots)
    print(text)
    files = "results.json, results.md" + ("" if args.no_plots else ", ttft.png, throughput.png")
    say(f"results written to {out}/ ({files})")
    return 1 if any(r.error for r in runs) else 0


def _keep_logs(work: Path, out: Path, name: str) -> None:
    """Copy a failed target's logs next to the results (the work folder is removed)."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for path in work.glob(f"{name}*.log"):
        (logs / path.name).write_bytes(path.read_bytes())


def _nproc() -> int:
    import os

    return len(os.sched_getaffinity(0))


async def bench_main(args: argparse.Namespace) -> int:
    return int(await args.bench_run(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone: ``python -m benchmarks.cli [routing|fleet|overhead] ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    direct = passthrough(["bench", *argv])
    if direct is not None:
        return direct
    parser = argparse.ArgumentParser(prog="endpoint-picker bench", description=(__doc__ or "").splitlines()[0])
    add_bench_arguments(parser)
    return asyncio.run(bench_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
