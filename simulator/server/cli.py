"""``endpoint-picker sim``: run one or many simulated model servers from the command line.

Why it exists: the lead wires this into the product's CLI (``add_sim_arguments`` on the ``sim`` subparser,
``sim_main`` as its coroutine). Flags use vLLM's names and formats where vLLM has them; the simulator's
own flags say so in their help. Example::

    endpoint-picker sim --replicas 4 --port 8000 --time-scale 10 \\
        --kv-events-config '{"enable_kv_cache_events": true, "endpoint": "tcp://127.0.0.1:*",
                             "topic": "kv@{host}:{port}@{model}"}'

``sim_main`` returns 0 after SIGINT/SIGTERM, 1 when every server crashed (fault injection), 2 on a bad
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import orjson

from simulator.engine.config import EngineConfig
from simulator.engine.profile import BUILTIN_PROFILES, get_profile
from simulator.server.config import DEFAULT_MODEL, LoraModule, SimServerConfig
from simulator.server.faults import parse_faults
from simulator.server.fleet import SimFleet, fleet_configs, loopback_hosts
from simulator.server.kv_events_config import KVEventsConfig, parse_kv_events_config
from simulator.server.topology import parse_topology

__all__ = ["add_sim_arguments", "config_from_args", "sim_main"]

log = logging.getLogger(__name__)


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sim`` subcommand's flags."""
    g = parser.add_argument_group("server (vLLM flags)")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000, help="port; with --replicas, the first of consecutive "
                   "ports (0 = ephemeral ports)")
    g.add_argument("--model", default=DEFAULT_MODEL, help="model name or path (only a name here)")
    g.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="names the model is served under (default: --model)")
    g.add_argument("--seed", type=int, default=0, help="seed of generated tokens, output lengths and faults")

    g = parser.add_argument_group("engine (vLLM flags)")
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--max-num-seqs", type=int, default=1024)
    g.add_argument("--max-num-batched-tokens", type=int, default=8192)
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--num-gpu-blocks-override", type=int, default=None,
                   help="total KV blocks (default: the profile's KV capacity / block size)")
    g.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--prefix-caching-hash-algo", choices=("sha256", "sha256_cbor"), default="sha256")
    g.add_argument("--kv-events-config", default=None, metavar="JSON",
                   help="vLLM's KVEventsConfig JSON; endpoint/topic may use {host} {port} {model} {index}")
    g.add_argument("--enable-lora", action="store_true")
    g.add_argument("--max-loras", type=int, default=1)
    g.add_argument("--max-cpu-loras", type=int, default=None)
    g.add_argument("--lora-modules", nargs="+", default=[], metavar="NAME=PATH",
                   help="LoRA adapters: name=path or JSON {\"name\", \"path\", \"base_model_name\"}")

    g = parser.add_argument_group("simulation (simulator flags)")
    g.add_argument("--name", default="sim", help="server name (x-served-by); replicas get -0, -1, ...")
    g.add_argument("--profile", default="llama-3.1-8b-h100", metavar="NAME|PATH",
                   help=f"latency profile: one of {', '.join(BUILTIN_PROFILES)} or a YAML file")
    g.add_argument("--engine", dest="engine_kind", choices=("vllm", "sglang", "trtllm-serve"), default="vllm",
                   help="whose /metrics names to expose")
    g.add_argument("--role", choices=("prefill", "decode", "both"), default="both",
                   help="P/D role: decode servers honour x-prefiller-host-port")
    g.add_argument("--time-scale", type=float, default=1.0,
                   help="model seconds per real second (10 = ten times faster than real time)")
    g.add_argument("--topology", default=None, metavar="LABELS",
                   help="location labels, e.g. node=n1,rack=r1 ({index} = replica index)")
    g.add_argument("--kv-events-encoding", choices=("map", "positional"), default="map",
                   help="KV event encoding: vLLM >= 0.24 maps (default) or <= 0.23 arrays")
    g.add_argument("--output-len-mean", type=int, default=128,
                   help="without ignore_eos, mean tokens before EOS (Gaussian, sd = mean / 2)")
    g.add_argument("--prefill-timeout", type=float, default=10.0,
                   help="real seconds a decode server waits for its prefiller before prefilling locally")
    g.add_argument("--faults", default=None, metavar="JSON",
                   help='fault injection, e.g. {"error_rates": {"503": 0.1}, "hang_rate": 0.01}')
    g.add_argument("--replicas", type=int, default=1, help="servers to run in this process")
    g.add_argument("--hosts", nargs="?", const="auto", default=None, metavar="IP,IP,...",
                   help="one loopback IP per replica, all on --port (bare flag: 127.0.0.2, 127.0.0.3, ...)")
    if not any(a.dest == "log_level" for a in parser._actions):
        g.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def _lora_module(text: str) -> LoraModule:
    text = text.strip()
    if text.startswith("{"):
        data = orjson.loads(text)
        if not isinstance(data, dict) or not data.get("name") or not data.get("path"):
            raise ValueError(f"LoRA module JSON needs name and path: {text}")
        return LoraModule(str(data["name"]), str(data["path"]), data.get("base_model_name"))
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"LoRA module {text!r} is not name=path")
    return LoraModule(name, path)


def config_from_args(args: argparse.Namespace) -> SimServerConfig:
    """The template server config the flags describe (raises ValueError on bad input)."""
    engine = EngineConfig(
        profile=get_profile(args.profile),
        block_size=args.block_size,
        num_gpu_blocks=args.num_gpu_blocks_override,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len,
        enable_prefix_caching=args.enable_prefix_caching,
        prefix_caching_hash_algo=args.prefix_caching_hash_algo,
        hash_seed=os.environ.get("PYTHONHASHSEED"),
        enable_lora=args.enable_lora,
        max_loras=args.max_loras,
        max_cpu_loras=args.max_cpu_loras,
        seed=args.seed,
    )
    faults = parse_faults(orjson.loads(args.faults)) if args.faults else parse_faults(None)
    kv_events = parse_kv_events_config(args.kv_events_config) if args.kv_events_config else KVEventsConfig()
    return SimServerConfig(
        name=args.name,
        host=args.host,
        port=args.port,
        model=args.model,
        served_model_names=tuple(args.served_model_name or ()),
        engine_kind=args.engine_kind,
        role=args.role,
        engine=engine,
        kv_events_encoding=args.kv_events_encoding,
        lora_modules=tuple(_lora_module(m) for m in args.lora_modules),
        time_scale=args.time_scale,
        topology=parse_topology(args.topology),
        faults=faults,
        output_len_mean=args.output_len_mean,
        prefill_timeout_s=args.prefill_timeout,
        kv_events=kv_events,
    )


def _hosts(args: argparse.Namespace) -> Sequence[str] | None:
    if args.hosts is None:
        return None
    if args.hosts == "auto":
        return loopback_hosts(args.replicas)
    return [h.strip() for h in args.hosts.split(",") if h.strip()]


async def sim_main(args: argparse.Namespace) -> int:
    """Run the servers until SIGINT/SIGTERM (0) or until all of them crashed (1)."""
    try:
        template = config_from_args(args)
        configs = fleet_configs(template, args.replicas, hosts=_hosts(args))
    except (ValueError, OSError) as exc:
        print(f"endpoint-picker sim: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: no handlers
            loop.add_signal_handler(sig, interrupted.set)
            handled.append(sig)
    fleet = SimFleet(configs)
    try:
        try:
            await fleet.start()
        except OSError as exc:
            print(f"endpoint-picker sim: cannot start: {exc}", file=sys.stderr)
            return 2
        for server in fleet.servers:
            extra = f" kv-events {server.kv_events_endpoint}" if server.kv_events_endpoint else ""
            print(f"{server.name} {server.url}{extra}", flush=True)

        async def all_stopped() -> None:
            for server in fleet.servers:
                await server.stopped.wait()

        waiters = [asyncio.ensure_future(interrupted.wait()), asyncio.ensure_future(all_stopped())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await fleet.stop()
    if not interrupted.is_set() and all(s.crashed for s in fleet.servers):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m simulator.server.cli``) until the lead wires the subcommand."""
    parser = argparse.ArgumentParser(prog="endpoint-picker sim", description=__doc__.splitlines()[0])
    add_sim_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(sim_main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
