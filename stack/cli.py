"""Arguments and entry point of the ``endpoint-picker stack`` subcommand.

Why this module exists: ``endpoint_picker/cli`` owns the console script and wires subcommands; the stack's
flags and their translation into :class:`stack.runner.RunnerOptions` live next to the stack so the two stay
in step.
"""

from __future__ import annotations

import argparse
import sys

from endpoint_picker.cli.arg_types import non_negative_int, positive_float, positive_int
from stack.envoy_bootstrap import BodyMode, FailureMode
from stack.placement import parse_placement
from stack.runner import options_from, run_stack


def _placement(text: str) -> str:
    try:
        parse_placement(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} out of range 0..65535 (0 = any free port)")
    return value


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-servers", choices=["sim", "standin"], default="sim",
                        help="sim: simulated vLLM servers (batching, KV cache, vLLM metrics; default); standin: "
                        "minimal fixed-delay servers")
    parser.add_argument("--replicas", type=positive_int, default=3,
                        help="model servers; with --prefill-replicas, the decode servers (default 3)")
    parser.add_argument("--prefill-replicas", type=non_negative_int, default=0, metavar="K",
                        help="sim: K more servers with role prefill, the --replicas ones get role decode "
                        "(labelled llm-d.ai/role; P/D routing comes with the scheduler)")
    parser.add_argument("--topology", type=_placement, default=None, metavar="racks=R[,servers-per-node=S]",
                        help="sim: node/rack labels per server (servers on nodes in order, nodes across racks "
                        "in turn)")
    parser.add_argument("--time-scale", type=positive_float, default=1.0,
                        help="sim: model seconds per real second (10 = ten times faster; default 1)")
    parser.add_argument("--port", type=_port, default=8081, help="gateway listener port (default 8081; 0 = free)")
    parser.add_argument("--body-mode", choices=[m.value for m in BodyMode], default=BodyMode.FULL_DUPLEX_STREAMED.value,
                        help="how Envoy hands bodies to the picker (default FULL_DUPLEX_STREAMED)")
    parser.add_argument("--failure-mode", choices=[m.value for m in FailureMode], default=FailureMode.FAIL_CLOSE.value,
                        help="what Envoy does when the picker is unreachable (default FailClose)")
    parser.add_argument("--no-secure-serving", dest="secure_serving", action="store_false",
                        help="plaintext gRPC between Envoy and the picker (default TLS, unverified)")
    parser.add_argument("--demo", dest="demo", action="store_true", default=True,
                        help="send a few requests and print which server answered each (default)")
    parser.add_argument("--no-demo", dest="demo", action="store_false", help="skip the demo requests")
    parser.add_argument("--keep-running", dest="keep_running", action="store_true", default=True,
                        help="keep the gateway up until Ctrl-C/SIGTERM (default)")
    parser.add_argument("--exit-after-demo", dest="keep_running", action="store_false",
                        help="stop everything after the demo (for scripts; exit code 1 if a demo request failed)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="the picker's log level (its log file is printed at start-up)")


async def stack_main(args: argparse.Namespace) -> int:
    if args.model_servers == "standin" and (args.prefill_replicas or args.topology):
        print("endpoint-picker stack: --prefill-replicas and --topology need --model-servers sim", file=sys.stderr)
        return 2
    options = options_from(
        replicas=args.replicas,
        port=args.port,
        body_mode=args.body_mode,
        failure_mode=args.failure_mode,
        secure_serving=args.secure_serving,
        demo=args.demo,
        keep_running=args.keep_running,
        log_level=args.log_level,
        model_servers=args.model_servers,
        prefill_replicas=args.prefill_replicas,
        topology=args.topology,
        time_scale=args.time_scale,
    )
    return await run_stack(options)
