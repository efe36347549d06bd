"""The ``endpoint-picker`` command line: one console script with subcommands.

This is the composition root: it is the one place in :mod:`endpoint_picker` allowed to start the gRPC server
from :mod:`extproc` and the local gateway from :mod:`stack`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from endpoint_picker import __version__
from endpoint_picker.config_error import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="endpoint-picker", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"endpoint-picker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from endpoint_picker.cli import serve

    serve_parser = sub.add_parser("serve", help="run the Endpoint Picker (ext_proc gRPC server)",
                                  description=serve.__doc__)
    serve.add_arguments(serve_parser)
    serve_parser.set_defaults(run=serve.run)

    from simulator.server.cli import add_sim_arguments, sim_main

    sim_parser = sub.add_parser("sim", help="run simulated vLLM-like model servers (one or many in one process)",
                                description="A vLLM-faithful model-server simulator: OpenAI API, vLLM metrics, "
                                "KV-cache events over ZMQ, prefill/decode roles, fault injection.")
    add_sim_arguments(sim_parser)
    sim_parser.set_defaults(run=sim_main)

    from simulator.fleet.cli import add_fleet_sim_arguments, fleet_sim_main

    fleet_parser = sub.add_parser("fleet-sim", help="compare routing policies on a simulated fleet in virtual time",
                                  description="Run a workload against N simulated engines (no sockets, virtual "
                                  "time) under each routing policy and print TTFT/TPOT/throughput/cache-hit tables.")
    add_fleet_sim_arguments(fleet_parser)
    fleet_parser.set_defaults(run=fleet_sim_main)

    from picker_api.cli import add_subcommands as add_api_subcommands

    add_api_subcommands(sub)  # explain, state, decisions: clients of the picker API on the ext_proc port

    stack_parser = sub.add_parser("stack", help="run a local gateway: real Envoy + picker + model servers",
                                  description="Bring up a real Envoy, the picker and N local model servers, "
                                  "show requests being routed, and stop everything on Ctrl-C.")
    try:
        from stack.cli import add_stack_arguments, stack_main
    except ImportError as exc:  # the [stack] extra is not installed
        missing = str(exc)

        async def stack_unavailable(_args: argparse.Namespace) -> int:
            print(f"endpoint-picker stack needs the 'stack' extra (pip install 'endpoint-picker[stack]'): {missing}",
                  file=sys.stderr)
            return 2

        stack_parser.set_defaults(run=stack_unavailable)
    else:
        add_stack_arguments(stack_parser)
        stack_parser.set_defaults(run=stack_main)

    bench_parser = sub.add_parser("bench", help="benchmarks: routing vs round robin and peer routers, fleet scale, "
                                  "overhead", description="Run the benchmarks behind docs/benchmarks.md.")
    try:
        from benchmarks.cli import add_bench_arguments, bench_main
    except ImportError as exc:  # the [bench] extra is not installed
        missing_bench = str(exc)

        async def bench_unavailable(_args: argparse.Namespace) -> int:
            print(f"endpoint-picker bench needs the 'bench' extra (pip install 'endpoint-picker[bench]'): "
                  f"{missing_bench}", file=sys.stderr)
            return 2

        bench_parser.set_defaults(run=bench_unavailable)
    else:
        add_bench_arguments(bench_parser)
        bench_parser.set_defaults(run=bench_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"] and argv[1:2] in (["fleet"], ["overhead"]):
        from benchmarks.cli import passthrough  # each of these benchmarks parses its own flags

        return passthrough(argv) or 0
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(args.run(args))
    except ConfigError as exc:
        print(f"endpoint-picker: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
