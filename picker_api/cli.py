"""``endpoint-picker explain|state|decisions``: command-line clients of the picker API.

``explain REQUEST_ID`` prints one request's decision (candidates, filters, per-scorer raw and weighted scores,
totals, the pick and fallbacks); ``state`` prints the pool's endpoints with their latest metrics, in-flight
counts and prefix-index entries; ``decisions`` prints recent decisions, one line each, and with ``--follow``
keeps printing new ones. ``--json`` prints the messages in the proto3 JSON mapping instead.

They talk to the picker's ext_proc port (``--address``, default localhost:9002) with TLS by default, trusting
the certificate the picker presents (it is self-signed unless the picker has ``--cert-path``); ``--ca-file``
verifies against a CA instead, ``--insecure`` talks plaintext to a picker run with ``--secure-serving=false``.

This module imports no gRPC at import time, so ``endpoint-picker --help`` works without the generated stubs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from endpoint_picker.cli.arg_types import non_negative_int

if TYPE_CHECKING:
    from picker_api.client import PickerClient, Target

DEFAULT_ADDRESS = "localhost:9002"  # picker_api.client.DEFAULT_ADDRESS, without importing grpc here

EXIT_NOT_FOUND = 1
EXIT_UNREACHABLE = 3


def _add_connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=DEFAULT_ADDRESS,
                   help=f"the picker's ext_proc gRPC address, host:port (default {DEFAULT_ADDRESS})")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--tls", dest="tls", action="store_true", default=True,
                     help="TLS, trusting the certificate the picker presents unless --ca-file (default)")
    tls.add_argument("--insecure", dest="tls", action="store_false",
                     help="plaintext, for a picker run with --secure-serving=false")
    p.add_argument("--ca-file", type=Path, default=None,
                   help="PEM CA bundle to verify the picker's certificate with (instead of trusting it as served)")
    p.add_argument("--server-name", default=None,
                   help="TLS name to verify (default: the first DNS name in the picker's certificate)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds for connecting and each call (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON (proto3 JSON mapping) instead of tables")


def add_subcommands(sub: Any) -> None:
    """Add ``explain``, ``state`` and ``decisions`` to the ``endpoint-picker`` subcommands."""
    explain = sub.add_parser("explain", help="explain where the picker sent a request, and why",
                             description="Print the decision record of REQUEST_ID: candidates, what each filter "
                             "removed, each scorer's raw and weighted scores per endpoint, totals, the pick and "
                             "fallbacks. " + _TLS_NOTE)
    explain.add_argument("request_id", metavar="REQUEST_ID", help="the request's x-request-id")
    _add_connection_arguments(explain)
    explain.set_defaults(run=run_explain)

    state = sub.add_parser("state", help="show the picker's endpoints, their metrics, in-flight and prefix index",
                           description="Print every endpoint of the pool with its latest scraped metrics and "
                           "their age, this picker's in-flight requests and tokens on it, and its prefix-index "
                           "entries. " + _TLS_NOTE)
    _add_connection_arguments(state)
    state.set_defaults(run=run_state)

    decisions = sub.add_parser("decisions", help="list recent scheduling decisions (--follow for live ones)",
                               description="Print recent decisions one line each; with --follow keep printing "
                               "new ones until interrupted. " + _TLS_NOTE)
    decisions.add_argument("-f", "--follow", action="store_true", help="keep printing new decisions")
    decisions.add_argument("--recent", type=non_negative_int, default=20,
                           help="recent decisions to print first (default 20)")
    decisions.add_argument("--model", default="", help="only decisions for this model")
    decisions.add_argument("--limit", type=non_negative_int, default=0,
                           help="stop after this many decisions in total (default: no limit)")
    _add_connection_arguments(decisions)
    decisions.set_defaults(run=run_decisions)


_TLS_NOTE = ("TLS by default, trusting the certificate the picker presents (self-signed unless it runs with "
             "--cert-path); --ca-file to verify, --insecure for plaintext.")


def target_of(args: argparse.Namespace) -> Target:
    from picker_api.client import Target

    return Target(address=args.address, tls=args.tls, ca_file=args.ca_file, server_name=args.server_name,
                  timeout=args.timeout)


async def _with_client(args: argparse.Namespace, body: Callable[[PickerClient], Awaitable[int]]) -> int:
    import grpc

    from picker_api.client import PickerClient, open_channel

    target = target_of(args)
    try:
        channel = await open_channel(target)
    except (OSError, ValueError) as exc:
        print(f"endpoint-picker: cannot reach the picker at {target.address}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        async with PickerClient(channel, target.timeout) as client:
            return await body(client)
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND:
            print(f"endpoint-picker: {exc.details()}", file=sys.stderr)
            return EXIT_NOT_FOUND
        if code == grpc.StatusCode.UNIMPLEMENTED:
            print(f"endpoint-picker: the server at {target.address} does not serve the picker API "
                  "(an older picker?)", file=sys.stderr)
            return EXIT_UNREACHABLE
        print(f"endpoint-picker: {target.address}: {code.name}: {exc.details()}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _print_json(msg: Any) -> None:
    import orjson

    from picker_api.convert import to_json_dict

    sys.stdout.write(orjson.dumps(to_json_dict(msg), option=orjson.OPT_INDENT_2).decode() + "\n")


async def run_explain(args: argparse.Namespace) -> int:
    from picker_api.render import render_decision

    async def body(client: PickerClient) -> int:
        decision = await client.explain(args.request_id)
        if args.json:
            _print_json(decision)
        else:
            print(render_decision(decision))
        return 0

    return await _with_client(args, body)


async def run_state(args: argparse.Namespace) -> int:
    from picker_api.render import render_state

    async def body(client: PickerClient) -> int:
        state = await client.state()
        if args.json:
            _print_json(state)
        else:
            print(render_state(state))
        return 0

    return await _with_client(args, body)


async def run_decisions(args: argparse.Namespace) -> int:
    import orjson

    from picker_api.convert import to_json_dict
    from picker_api.render import render_decision_line

    async def body(client: PickerClient) -> int:
        async for decision in client.decisions(recent=args.recent, recent_only=not args.follow, model=args.model,
                                               limit=args.limit):
            if args.json:  # one JSON object per line, so a follower can be piped into jq
                sys.stdout.write(orjson.dumps(to_json_dict(decision)).decode() + "\n")
            else:
                sys.stdout.write(render_decision_line(decision) + "\n")
            sys.stdout.flush()
        return 0

    return await _with_client(args, body)
