"""``endpoint-picker fleet-sim``: run a workload against a simulated fleet under one or more routing policies.

Why it exists: one command answers "how would this router do on N endpoints at R requests/s?" in seconds,
deterministically, and prints the comparison as a markdown table (optionally JSON). Every policy sees
the identical request sequence. Example (the skewed workload where load-awareness pays)::

    endpoint-picker fleet-sim --endpoints 16 --workload mixed --rate 200 --num-requests 4000 \\
        --policy round-robin least-loaded

Workloads: ``shared-prefix``, ``multi-turn`` (chat conversations with growing context), ``lora`` (requests
over several adapters; the engines are then LoRA-enabled, ``--max-loras``), and the synthetic presets; all
at one ``--rate`` for ``--num-requests``, or in ``--stages`` of rising rate (``poisson:5x30,10x30,15x30``).
:func:`add_workload_arguments` and :func:`build_workload` are the single definition of those flags, so
the real-HTTP benchmark builds the very same requests from the very same command line.

Wall-clock timing (simulated requests per wall second) goes to stderr: it is about the simulator, not the
fleet, and is the only part of the output that differs between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace

from endpoint_picker.cli.arg_types import positive_int
from endpoint_picker.config_error import ConfigError
from simulator.engine.config import EngineConfig
from simulator.engine.profile import BUILTIN_PROFILES, get_profile
from simulator.fleet.arrivals import Arrivals
from simulator.fleet.load import Load
from simulator.fleet.lora import LoraWorkload
from simulator.fleet.multi_turn import MultiTurnWorkload
from simulator.fleet.picker_policy import PICKER_POLICIES, PickerPolicy, config_policy
from simulator.fleet.policies import POLICIES, make_policy
from simulator.fleet.policy import RoutingPolicy
from simulator.fleet.report import FleetReport, Slo, markdown_table
from simulator.fleet.shared_prefix import SharedPrefixWorkload
from simulator.fleet.simulation import FleetSimulation, uniform_fleet
from simulator.fleet.stages import Stages
from simulator.fleet.synthetic import PRESETS, SyntheticWorkload
from simulator.fleet.workload import Length, Workload

__all__ = ["WORKLOADS", "add_fleet_sim_arguments", "add_workload_arguments", "build_load", "build_workload",
           "fleet_sim_main"]

WORKLOADS = ("shared-prefix", "multi-turn", "lora", *PRESETS)
DEFAULT_NUM_REQUESTS = 2000


def length_arg(text: str) -> Length:
    try:
        return Length.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload flags (group "workload"), shared by ``fleet-sim`` and the real-HTTP benchmark; read them
    back with :func:`build_workload`. ``--rate`` defaults to 10 x ``--endpoints`` when the parser has that flag."""
    g = parser.add_argument_group("workload")
    g.add_argument("--workload", choices=WORKLOADS, default="mixed",
                   help="shared-prefix (inference-perf), multi-turn (shared-prefix chat conversations with growing "
                   "context), lora (requests over several LoRA adapters), or a synthetic preset: prefill-heavy, "
                   "decode-heavy, mixed (90%% light / 10%% heavy requests; default)")
    g.add_argument("--num-requests", type=positive_int, default=None,
                   help=f"requests to send at --rate (default {DEFAULT_NUM_REQUESTS}; not with --stages)")
    g.add_argument("--rate", type=float, default=None, metavar="REQ/S",
                   help="arrival rate in requests per virtual second (default 10 x endpoints; inf = all at once)")
    g.add_argument("--arrival", choices=("poisson", "constant"), default="poisson", help="arrival process")
    g.add_argument("--stages", default=None, metavar="[KIND:]RATExSECONDS,...",
                   help="staged arrivals instead of --rate / --num-requests, inference-perf style: stages of "
                   "RATE req/s for SECONDS back to back, e.g. poisson:5x30,10x30,15x30 (KIND poisson or "
                   "constant; default --arrival); each stage sends round(RATE x SECONDS) requests")
    g.add_argument("--seed", type=int, default=0, help="seed of the workload, the engines and random policies")
    g.add_argument("--num-groups", type=positive_int, default=10,
                   help="shared-prefix, multi-turn: groups sharing a system prompt (default 10)")
    g.add_argument("--prompts-per-group", "--conversations-per-group", dest="prompts_per_group",
                   type=positive_int, default=10,
                   help="shared-prefix: prompts per group; multi-turn: conversations per group (default 10)")
    g.add_argument("--num-turns", type=positive_int, default=5,
                   help="multi-turn: turns per conversation (SGLang --gsp-num-turns; default 5)")
    g.add_argument("--system-prompt-len", type=int, default=100,
                   help="shared-prefix, multi-turn: tokens (default 100)")
    g.add_argument("--question-len", type=length_arg, default=Length(50), metavar="LEN",
                   help="shared-prefix, multi-turn: tokens, N or mean,std_dev[,min[,max]] (default 50)")
    g.add_argument("--input-len", type=length_arg, default=None, metavar="LEN",
                   help="prefill-heavy / decode-heavy / lora: override the prompt length")
    g.add_argument("--output-len", type=length_arg, default=None, metavar="LEN",
                   help="output tokens (shared-prefix and multi-turn default 50; overrides a single-class preset's "
                   "and lora's)")
    g.add_argument("--heavy-fraction", type=float, default=None,
                   help="mixed: share of heavy requests (default 0.1)")
    g.add_argument("--num-adapters", type=positive_int, default=8,
                   help="lora: adapters lora-0..lora-{N-1} (default 8)")
    g.add_argument("--adapter-popularity", choices=("zipf", "uniform"), default="zipf",
                   help="lora: how requests spread over adapters (default zipf: lora-k gets weight 1/(k+1)^s)")
    g.add_argument("--zipf-exponent", type=float, default=1.0, metavar="S", help="lora: Zipf exponent (default 1)")
    g.add_argument("--base-model-fraction", type=float, default=0.0,
                   help="lora: share of requests for the base model, no adapter (default 0)")
    g.add_argument("--adapter-prompt-len", type=int, default=0,
                   help="lora: tokens of a per-adapter system prompt its requests share (default 0 = none)")


def add_fleet_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fleet-sim`` subcommand's flags."""
    g = parser.add_argument_group("fleet and routing")
    g.add_argument("--endpoints", type=positive_int, default=8, help="simulated model servers (default 8)")
    g.add_argument("--policy", nargs="+", choices=sorted({*POLICIES, *PICKER_POLICIES}),
                   default=["round-robin", "least-loaded"],
                   help="routing policies to compare, one run each (default: round-robin least-loaded); epp-* "
                   "run the picker's real scheduler: epp-default (the product default config), epp-prefix-load, "
                   "epp-prefix-token-load")
    g.add_argument("--policy-config", action="append", default=[], metavar="PATH",
                   help="also run the picker's scheduler with this EndpointPickerConfig YAML (repeatable)")
    g.add_argument("--scrape-interval", type=float, default=0.0, metavar="S",
                   help="virtual seconds between metric scrapes the policy sees (default 0 = live gauges)")

    add_workload_arguments(parser)

    g = parser.add_argument_group("engine (vLLM flags, as for endpoint-picker sim)")
    g.add_argument("--profile", default="llama-3.1-8b-h100", metavar="NAME|PATH",
                   help=f"latency profile: one of {', '.join(BUILTIN_PROFILES)} or a YAML file")
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--max-num-seqs", type=int, default=1024)
    g.add_argument("--max-num-batched-tokens", type=int, default=8192)
    g.add_argument("--num-gpu-blocks-override", type=int, default=None)
    g.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--prefix-caching-hash-algo", choices=("sha256", "sha256_cbor"), default="sha256")
    g.add_argument("--enable-lora", action=argparse.BooleanOptionalAction, default=None,
                   help="LoRA-enabled engines (default: on for --workload lora)")
    g.add_argument("--max-loras", type=positive_int, default=1, help="adapters per batch (vLLM default 1)")
    g.add_argument("--max-cpu-loras", type=positive_int, default=None,
                   help="adapters cached in host memory (default --max-loras)")

    g = parser.add_argument_group("report")
    g.add_argument("--slo-ttft", type=float, default=None, metavar="S", help="TTFT bound for goodput (seconds)")
    g.add_argument("--slo-tpot", type=float, default=None, metavar="S", help="TPOT bound for goodput (seconds)")
    g.add_argument("--json", default=None, metavar="PATH", help="also write the reports as JSON ('-' = stdout, "
                   "replacing the table)")
    g.add_argument("--per-endpoint", action="store_true", help="also print requests routed per endpoint")


def build_load(args: argparse.Namespace) -> tuple[int | None, Load]:
    """``(num_requests, arrivals)`` from ``--num-requests``, ``--rate``, ``--arrival`` and ``--stages``."""
    if args.stages:
        if args.rate is not None:
            raise ValueError("--rate and --stages exclude each other (the stages set the rates)")
        if args.num_requests is not None:
            raise ValueError("--num-requests and --stages exclude each other (the stages set the count)")
        return None, Stages.parse(args.stages, args.arrival)
    rate = args.rate
    if rate is None:
        endpoints = getattr(args, "endpoints", None)
        if endpoints is None:
            raise ValueError("give --rate or --stages")
        rate = 10.0 * endpoints
    count = args.num_requests if args.num_requests is not None else DEFAULT_NUM_REQUESTS
    return count, Arrivals(rate, args.arrival)


def build_workload(args: argparse.Namespace) -> Workload:
    """The workload the flags of :func:`add_workload_arguments` describe (ValueError on bad input)."""
    num_requests, arrivals = build_load(args)
    if args.workload == "shared-prefix":
        return SharedPrefixWorkload(
            num_requests=num_requests,
            arrivals=arrivals,
            num_groups=args.num_groups,
            num_prompts_per_group=args.prompts_per_group,
            system_prompt_len=args.system_prompt_len,
            question_len=args.question_len,
            output_len=args.output_len or Length(50),
            seed=args.seed,
        )
    if args.workload == "multi-turn":
        return MultiTurnWorkload(
            num_requests=num_requests,
            arrivals=arrivals,
            num_groups=args.num_groups,
            conversations_per_group=args.prompts_per_group,
            num_turns=args.num_turns,
            system_prompt_len=args.system_prompt_len,
            question_len=args.question_len,
            output_len=args.output_len or Length(50),
            seed=args.seed,
        )
    if args.workload == "lora":
        defaults = LoraWorkload(num_requests, arrivals)
        return LoraWorkload(
            num_requests=num_requests,
            arrivals=arrivals,
            num_adapters=args.num_adapters,
            popularity=args.adapter_popularity,
            zipf_exponent=args.zipf_exponent,
            base_fraction=args.base_model_fraction,
            input_len=args.input_len or defaults.input_len,
            output_len=args.output_len or defaults.output_len,
            adapter_prompt_len=args.adapter_prompt_len,
            seed=args.seed,
        )
    classes = list(PRESETS[args.workload])
    if len(classes) == 1:
        cls = classes[0]
        classes = [replace(cls, input_len=args.input_len or cls.input_len,
                           output_len=args.output_len or cls.output_len)]
    elif args.input_len or args.output_len:
        raise ValueError(f"--input-len / --output-len apply to single-class presets, not {args.workload}")
    if args.heavy_fraction is not None:
        if args.workload != "mixed" or not 0 < args.heavy_fraction < 1:
            raise ValueError("--heavy-fraction applies to --workload mixed and must be in (0, 1)")
        light, heavy = classes
        classes = [replace(light, weight=1 - args.heavy_fraction), replace(heavy, weight=args.heavy_fraction)]
    return SyntheticWorkload(num_requests, arrivals, tuple(classes), args.seed,
                             args.workload)


def _engine_config(args: argparse.Namespace, workload: Workload) -> EngineConfig:
    lora = args.enable_lora if args.enable_lora is not None else isinstance(workload, LoraWorkload)
    if not lora and isinstance(workload, LoraWorkload):
        raise ValueError("--workload lora needs LoRA-enabled engines: drop --no-enable-lora")
    return EngineConfig(
        profile=get_profile(args.profile),
        block_size=args.block_size,
        num_gpu_blocks=args.num_gpu_blocks_override,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_prefix_caching=args.enable_prefix_caching,
        prefix_caching_hash_algo=args.prefix_caching_hash_algo,
        enable_lora=lora,
        max_loras=args.max_loras,
        max_cpu_loras=args.max_cpu_loras,
        seed=args.seed,
    )


def run_fleet_sim(args: argparse.Namespace) -> int:
    try:
        workload = build_workload(args)
        engine = _engine_config(args, workload)
        slo = Slo(args.slo_ttft, args.slo_tpot)
    except (ValueError, OSError) as exc:
        print(f"endpoint-picker fleet-sim: {exc}", file=sys.stderr)
        return 2
    reports: list[FleetReport] = []
    timings: list[str] = []
    try:
        policies = [_make_policy(name, args) for name in args.policy]
        policies += [config_policy(path, args.seed, args.scrape_interval) for path in args.policy_config]
    except (ValueError, OSError, ConfigError) as exc:
        print(f"endpoint-picker fleet-sim: {exc}", file=sys.stderr)
        return 2
    for policy in policies:
        name = policy.name
        sim = FleetSimulation(uniform_fleet(args.endpoints, engine), policy, scrape_interval=args.scrape_interval)
        try:
            run = sim.run(workload.requests())
        except ValueError as exc:
            print(f"endpoint-picker fleet-sim: {exc}", file=sys.stderr)
            return 2
        timings.append(f"[fleet-sim] {name}: {len(run.records)} requests, {run.steps} engine steps, "
                       f"{run.end_time:.1f} s simulated in {run.wall_seconds:.2f} s wall, {run.cpu_seconds:.2f} s "
                       f"CPU ({run.requests_per_wall_second:.0f} simulated req/s wall, "
                       f"{run.requests_per_cpu_second:.0f} per CPU second)")
        if isinstance(policy, PickerPolicy):
            timings.append(f"[fleet-sim] {name}: {policy.decisions} scheduling calls, mean "
                           f"{policy.mean_choose_us:.0f} us per decision in the adapter, of which "
                           f"{policy.mean_schedule_us:.0f} us in FrameworkScheduler.schedule")
            policy.close()
        reports.append(FleetReport.of(run, workload.name, slo))
    doc = {"workload": workload.describe(), "endpoints": args.endpoints, "scrape_interval": args.scrape_interval,
           "reports": [r.to_dict() for r in reports]}
    if args.json and args.json != "-":
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
    if args.json == "-":
        print(json.dumps(doc, indent=2))
    else:
        _print_tables(args, workload, reports)
    sys.stdout.flush()
    for line in timings:
        print(line, file=sys.stderr)
    return 0


def _make_policy(name: str, args: argparse.Namespace) -> RoutingPolicy:
    if name in PICKER_POLICIES:
        return PICKER_POLICIES[name](args.seed, args.scrape_interval)
    return make_policy(name, args.seed)


def _print_tables(args: argparse.Namespace, workload: Workload, reports: list[FleetReport]) -> None:
    print(f"{args.endpoints} endpoints, {workload.summary()}, seed {args.seed}\n")
    print(markdown_table(reports))
    if args.per_endpoint:
        print()
        names = [f"{i}" for i in range(args.endpoints)]
        print("| policy | " + " | ".join(names) + " |")
        print("|---|" + "|".join("---" for _ in names) + "|")
        for r in reports:
            print(f"| {r.policy} | " + " | ".join(str(c) for c in r.spread.per_endpoint) + " |")


async def fleet_sim_main(args: argparse.Namespace) -> int:
    """The subcommand's coroutine. The simulation itself is synchronous CPU work; it runs in a worker thread
    because the picker policies drive the scheduler's coroutines on an event loop of their own, which cannot
    nest inside this one."""
    return await asyncio.to_thread(run_fleet_sim, args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m simulator.fleet.cli``."""
    parser = argparse.ArgumentParser(prog="endpoint-picker fleet-sim", description=__doc__.splitlines()[0])
    add_fleet_sim_arguments(parser)
    return run_fleet_sim(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
