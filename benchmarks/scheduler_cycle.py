"""One scheduling cycle with the default profile over many endpoints, measured (not a timed test).

Reproduces the issue's target: 100 endpoints with fresh metrics, the default profile (queue 2, kv-cache 2,
prefix 3 with the approximate prefix producer), and a 32k-token prompt whose prefix some endpoints hold.
Prints p50/p90/p99/max per cycle over N cycles after a warm-up, plus the same without the prefix match.

    python -m benchmarks.scheduler_cycle [--endpoints 100] [--prompt-tokens 32768] [--cycles 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import orjson

from endpoint_picker.datalayer import EndpointMetrics, MetricsStore
from endpoint_picker.datastore import Endpoint
from endpoint_picker.decisions import DecisionLog
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.request import attach_body, new_request
from endpoint_picker.scheduling import FrameworkScheduler, default_config


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(endpoints: int, prompt_tokens: int, cycles: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    eps = [Endpoint(f"pod-{i}", f"10.2.{i // 250}.{i % 250 + 1}", 8000) for i in range(endpoints)]
    store = MetricsStore()
    inflight = InFlightTracker()
    scheduler = FrameworkScheduler(default_config(rng), inflight, store, DecisionLog())
    words = [f"w{rng.randrange(50_000)}" for _ in range(prompt_tokens // 2)]
    shared = " ".join(words)  # ~4 characters a token: the prompt is about prompt_tokens tokens long
    # Warm the prefix index: a third of the endpoints have served requests sharing this prompt's prefix.
    for ep in eps:
        store.put(ep.key, EndpointMetrics(scraped_at=time.monotonic() + 3600, waiting_queue_size=rng.randrange(8),
                                          kv_cache_usage=rng.random(), running_requests=rng.randrange(32)))
    for i in range(endpoints // 3):
        r = new_request("/v1/completions", {"x-request-id": f"warm{i}"}, None)
        attach_body(r, orjson.dumps({"model": "m", "prompt": shared[: len(shared) * (i + 1) // (endpoints // 3)]}))
        result = await scheduler.schedule(r, eps)
        del result
    bodies = [orjson.dumps({"model": "m", "prompt": shared + f" question {i}"}) for i in range(64)]
    timings: list[float] = []
    for i in range(cycles):
        r = new_request("/v1/completions", {"x-request-id": f"r{i}"}, None)
        attach_body(r, bodies[i % len(bodies)])
        t0 = time.perf_counter()
        await scheduler.schedule(r, eps)
        timings.append(time.perf_counter() - t0)
    warm = timings[cycles // 10:]
    return {
        "p50_us": percentile(warm, 0.50) * 1e6,
        "p90_us": percentile(warm, 0.90) * 1e6,
        "p99_us": percentile(warm, 0.99) * 1e6,
        "max_us": max(warm) * 1e6,
        "mean_us": statistics.fmean(warm) * 1e6,
        "prompt_bytes": len(bodies[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--prompt-tokens", type=int, default=32_768)
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"scheduling cycle, default profile, {args.endpoints} endpoints, {args.prompt_tokens}-token prompt, "
          f"{args.cycles} cycles")
    stats = asyncio.run(run(args.endpoints, args.prompt_tokens, args.cycles, args.seed))
    print("| endpoints | prompt tokens | p50 µs | p90 µs | p99 µs | max µs |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.endpoints} | {args.prompt_tokens} | {stats['p50_us']:.0f} | {stats['p90_us']:.0f} | "
          f"{stats['p99_us']:.0f} | {stats['max_us']:.0f} |")


if __name__ == "__main__":
    main()
