"""Measures how much CPU a fleet of simulated servers in one process needs under a steady load.

Why it exists: the local gateway and the benchmarks host many simulated servers in one process; if that
process were CPU-bound, its timing would be wrong (steps late, tokens bunched). This script makes the
claim checkable: it starts ``endpoint-picker sim --replicas N --port 0`` as a child process, drives it
from this process (so the load generator's CPU is not counted) with constant-rate streaming requests
spread round-robin over the servers, optionally scrapes every server's ``/metrics`` like a picker, and
reports the child's CPU use from ``/proc/<pid>/stat`` (user + system time over the measured window)
together with client-side TTFT / ITL percentiles and the engines' own lateness.

    .venv/bin/python -m simulator.server.cpu_check --replicas 16 --rate 50 --duration 30
    .venv/bin/python -m simulator.server.cpu_check --replicas 16 --rate 50 --duration 30 --scrape-interval 0.05

Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa "
          "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass
class Stats:
    ok: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    scrape_ms: list[float] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def one_request(session: aiohttp.ClientSession, url: str, i: int, output_tokens: int, stats: Stats,
                      record: bool) -> None:
    prompt = " ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(32))
    body = {"prompt": prompt, "max_tokens": output_tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.monotonic()
    last = None
    try:
        async with session.post(url + "/v1/completions", data=orjson.dumps(body),
                                headers={"content-type": "application/json"}) as resp:
            if resp.status != 200:
                stats.errors += 1
                return
            async for line in resp.content:
                if not line.startswith(b"data: {") or b'"text"' not in line:
                    continue
                now = time.monotonic()
                if record:
                    if last is None:
                        stats.ttft.append(now - start)
                    else:
                        stats.itl.append(now - last)
                last = now
        stats.ok += 1
    except (aiohttp.ClientError, OSError):
        stats.errors += 1


async def scraper(session: aiohttp.ClientSession, urls: list[str], interval: float, stats: Stats,
                  stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        for url in urls:
            s = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url + "/metrics") as resp:
                    await resp.read()
            stats.scrape_ms.append((time.monotonic() - s) * 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - t0)))


async def run(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "simulator.server.cli", "--replicas", str(args.replicas), "--port", "0",
           "--time-scale", str(args.time_scale), "--log-level", "warning", "--max-num-seqs", "256"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    urls: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while len(urls) < args.replicas:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the fleet exited before listing its servers")
                urls.append(line.split()[1])
        stats = Stats()
        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            scrape_task = None
            if args.scrape_interval > 0:
                scrape_task = asyncio.create_task(scraper(session, urls, args.scrape_interval, stats, stop))
            tasks: set[asyncio.Task[None]] = set()
            total = int(args.rate * (args.warmup + args.duration))
            warm_n = int(args.rate * args.warmup)
            t0 = time.monotonic()
            cpu0 = wall0 = None
            for i in range(total):
                if i == warm_n:
                    cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
                delay = t0 + i / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one_request(session, urls[i % len(urls)], i, args.output_tokens, stats,
                                                       record=i >= warm_n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
            async with asyncio.timeout(60):
                while tasks:
                    await asyncio.wait(set(tasks))
            stop.set()
            if scrape_task is not None:
                await scrape_task
            states = []
            for url in urls:
                async with session.get(url + "/admin/state") as resp:
                    states.append(await resp.json())
        assert cpu0 is not None and wall0 is not None
        cpu_pct = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
        print(f"fleet: {args.replicas} servers in one process, time scale {args.time_scale}")
        print(f"load: {args.rate} req/s total, {args.output_tokens} output tokens, streaming, 32-word prompts, "
              f"{args.duration}s measured after {args.warmup}s warm-up"
              + (f", /metrics scraped every {args.scrape_interval * 1000:.0f} ms per server" if scrape_task else ""))
        print(f"fleet process CPU: {cpu_pct:.1f}% of one core ({cpu1 - cpu0:.2f} CPU-s over {wall1 - wall0:.1f} s)")
        print(f"requests: {stats.ok} ok, {stats.errors} errors")
        print(f"client TTFT ms: p50 {pct(stats.ttft, .5) * 1e3:.1f}  p99 {pct(stats.ttft, .99) * 1e3:.1f}")
        print(f"client ITL ms:  p50 {pct(stats.itl, .5) * 1e3:.2f}  p99 {pct(stats.itl, .99) * 1e3:.2f}  "
              f"mean {statistics.fmean(stats.itl) * 1e3 if stats.itl else float('nan'):.2f}")
        steps = sum(st["driver_steps"] for st in states)
        late_mean = sum(st["step_lateness_mean_s"] * st["driver_steps"] for st in states) / max(steps, 1)
        late_max = max(st["step_lateness_max_s"] for st in states)
        print(f"engine steps: {steps}; step delivery lateness ms: mean {late_mean * 1e3:.2f}  max {late_max * 1e3:.1f}")
        if stats.scrape_ms:
            rate = len(stats.scrape_ms) / (time.monotonic() - t0)
            print(f"scrapes: {rate:.0f}/s; ms p50 {pct(stats.scrape_ms, .5):.2f}  p99 {pct(stats.scrape_ms, .99):.2f}")
        return 0
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second, all servers together")
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--scrape-interval", type=float, default=0.0, help="seconds; 0 = no scraping")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
