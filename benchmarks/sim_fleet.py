"""The simulated model-server fleet of a routing benchmark, as one child process, and what it reports.

Why this module exists: every target of the comparison must meet the same fleet in the same state, so the
benchmark starts a fresh fleet (cold prefix caches, the same seeds) for each target and stops it afterwards.
The fleet runs in its own process (``endpoint-picker sim --replicas N --hosts ...``) so that its CPU use does
not disturb the load generator's timing, each server on its own loopback IP like pods in a cluster. The
prefix-cache hit rate is read from the servers themselves (``vllm:prefix_cache_queries`` / ``_hits``
counters on each ``/metrics``), as a benchmark against real vLLM would.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from simulator.server.fleet import loopback_hosts
from stack.child_process import ManagedProcess
from stack.ports import free_port


@dataclass(frozen=True)
class FleetSpec:
    """What ``endpoint-picker sim`` is told (vLLM flag names), shared by every target of one run."""

    replicas: int = 4
    num_gpu_blocks: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    lora_modules: Sequence[str] = ()  # adapter names; enables LoRA
    max_loras: int = 2
    seed: int = 0
    extra_args: Sequence[str] = field(default_factory=tuple)

    def command(self, hosts: Sequence[str], port: int) -> list[str]:
        cmd = [sys.executable, "-m", "endpoint_picker", "sim", "--replicas", str(self.replicas),
               "--hosts", ",".join(hosts), "--port", str(port), "--log-level", "warning",
               "--seed", str(self.seed), "--max-num-seqs", str(self.max_num_seqs),
               "--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        if self.num_gpu_blocks is not None:
            cmd += ["--num-gpu-blocks-override", str(self.num_gpu_blocks)]
        if self.lora_modules:
            cmd += ["--enable-lora", "--max-loras", str(self.max_loras),
                    "--lora-modules", *(f"{name}=/adapters/{name}" for name in self.lora_modules)]
        return [*cmd, *self.extra_args]

    def describe(self) -> dict[str, object]:
        return {"replicas": self.replicas, "num_gpu_blocks_override": self.num_gpu_blocks,
                "max_num_seqs": self.max_num_seqs, "max_num_batched_tokens": self.max_num_batched_tokens,
                "lora_modules": list(self.lora_modules), "max_loras": self.max_loras, "seed": self.seed,
                "profile": "llama-3.1-8b-h100 (default)"}


@dataclass
class CacheCounters:
    queries: float = 0.0
    hits: float = 0.0

    def minus(self, other: CacheCounters) -> CacheCounters:
        return CacheCounters(self.queries - other.queries, self.hits - other.hits)

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries else None


def _counter_total(text: str, name: str) -> float:
    """Sum of every sample of counter ``name`` (``name_total`` with any labels) on a Prometheus text page."""
    total = 0.0
    prefix = name + "_total"
    for line in text.splitlines():
        if line.startswith(prefix) and line[len(prefix):len(prefix) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class SimFleetProcess:
    """``async with SimFleetProcess(spec, log_path):`` — N simulated servers up (``/health`` 200), then stopped."""

    def __init__(self, spec: FleetSpec, log_path: Path) -> None:
        self.spec = spec
        self.hosts = loopback_hosts(spec.replicas)
        self.port = free_port(self.hosts[0])
        self.process = ManagedProcess(spec.command(self.hosts, self.port), log_path)

    @property
    def addresses(self) -> list[str]:
        return [f"{host}:{self.port}" for host in self.hosts]

    @property
    def urls(self) -> list[str]:
        return [f"http://{a}" for a in self.addresses]

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def start(self, ready_within: float = 30.0) -> None:
        await self.process.start()
        deadline = time.monotonic() + ready_within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            pending = list(self.urls)
            while pending:
                if not self.process.running():
                    raise RuntimeError(f"the simulated fleet exited early:\n{self.process.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"simulated servers not healthy after {ready_within:g}s: {pending}")
                still: list[str] = []
                for url in pending:
                    try:
                        async with session.get(url + "/health") as resp:
                            if resp.status != 200:
                                still.append(url)
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        still.append(url)
                pending = still
                if pending:
                    await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.process.stop(grace=5.0)

    async def __aenter__(self) -> SimFleetProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def cache_counters(self) -> CacheCounters:
        """Prefix-cache queries and hits (tokens) summed over the fleet, from every server's /metrics."""
        total = CacheCounters()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            pages = await asyncio.gather(*(self._page(session, url) for url in self.urls))
        for text in pages:
            total.queries += _counter_total(text, "vllm:prefix_cache_queries")
            total.hits += _counter_total(text, "vllm:prefix_cache_hits")
        return total

    @staticmethod
    async def _page(session: aiohttp.ClientSession, url: str) -> str:
        try:
            async with session.get(url + "/metrics") as resp:
                return await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return ""
