"""CPU cost of scraping model-server metrics: 100 endpoints every 50 ms must stay under a quarter of one core.

Why this module exists: the picker polls every endpoint's ``/metrics`` every 50 ms (the upstream default)
on the same event loop that answers Envoy, so the scraper's CPU is taken from request handling. This
benchmark measures it; it prints what it measured and writes JSON, and asserts nothing.

What runs (loopback only; the child is stopped by its PID at the end):

* a child process serving ``/metrics`` on ``--endpoints`` ports. By default (``--server static``) every
  port answers with one real vLLM page (~360 samples, ~48 KB) that the child captured from a simulated vLLM
  server (LoRA on, after a few dozen requests, so histograms and LoRA series are filled), through a minimal
  keep-alive HTTP/1.1 server -- the point is the scraper's CPU, not the servers'. ``--server sim`` runs that
  many real simulated vLLM servers (``SimFleet``) in the child instead.
* in this process: a :class:`Datastore` with those endpoints and the picker's :class:`MetricsScraper`
  (``--interval`` 50 ms, ``--timeout`` 1 s). After ``--warmup`` seconds, this process's CPU time
  (``resource.getrusage``, user + system, all threads) is read over ``--window`` seconds -> CPU % of one
  core, scrapes per second, CPU microseconds per scrape. With ``--clients scraper,aiohttp`` the same is
  measured for a baseline that uses one shared aiohttp ``ClientSession`` (keep-alive, a task per
  endpoint) with the same targeted parser -- the design the scraper replaced.
* a second window with a loop-lag probe (a 5 ms sleeper recording how late it wakes) and a sampler of the
  snapshots' ages, so "never blocks the event loop" and "how fresh are the metrics" have numbers too;
  kept out of the CPU window because the probes cost CPU themselves.
* a parser micro-benchmark on the same page: prometheus_client's ``text_string_to_metric_families`` (all
  families, as a general consumer would) vs the targeted extractor (``MetricsExtractor.extract``), with a
  full scan of the page and with the previous page's layout as a hint (the scraper's steady state: a full
  scan every 20th page).

    .venv/bin/python -m benchmarks.scrape_load                         # 100 static endpoints, 10 s window
    .venv/bin/python -m benchmarks.scrape_load --clients scraper,aiohttp --window 5
    .venv/bin/python -m benchmarks.scrape_load --server sim --endpoints 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUDGET_PERCENT = 25.0
_READY_TIMEOUT = 60.0


# -- the child: /metrics servers ---------------------------------------------------------------------


async def capture_vllm_page() -> bytes:
    """A real vLLM /metrics page: a simulated vLLM server with LoRA after a few dozen mixed requests."""
    import aiohttp

    from simulator.engine import EngineConfig
    from simulator.server import LoraModule, SimServer, SimServerConfig

    config = SimServerConfig(
        name="capture", time_scale=50.0, engine=EngineConfig(enable_lora=True, max_loras=2),
        lora_modules=(LoraModule("sql-lora", "/adapters/sql"), LoraModule("chat-lora", "/adapters/chat")),
    )
    server = await SimServer(config).start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            models = [config.served_model_name, "sql-lora", "chat-lora"]

            async def one(i: int) -> None:
                body = {"model": models[i % 3], "prompt": "hello world " * (20 + i), "max_tokens": 16 + i % 7}
                async with session.post(server.url + "/v1/completions", json=body) as resp:
                    await resp.read()

            await asyncio.gather(*(one(i) for i in range(40)))
            async with session.get(server.url + "/metrics") as resp:
                return await resp.read()
    finally:
        await server.stop()


class _StaticMetrics(asyncio.Protocol):
    """Answers every request on a keep-alive connection with the same 200 /metrics response."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._pending = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._pending += data
        while (end := self._pending.find(b"\r\n\r\n")) >= 0:
            self._pending = self._pending[end + 4 :]
            assert self._transport is not None
            self._transport.write(self._response)


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    ports: list[int] = []
    page = await capture_vllm_page()
    fleet = None
    if args.server == "static":
        response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(page)) + page
        for _ in range(args.endpoints):
            srv = await loop.create_server(lambda: _StaticMetrics(response), "127.0.0.1", 0)
            ports.append(srv.sockets[0].getsockname()[1])
    else:
        from simulator.server import SimFleet, SimServerConfig, fleet_configs

        fleet = await SimFleet(fleet_configs(SimServerConfig(name="sim", time_scale=50.0), args.endpoints)).start()
        ports = [s.port for s in fleet.servers]
    ready = Path(args.serve)
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"ports": ports, "page": page.decode()}))
    tmp.rename(ready)
    stop = asyncio.Event()
    import signal

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    if fleet is not None:
        await fleet.stop()


# -- this process: the measurements ------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parser_microbench(page: bytes, repeat: int = 5) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    from endpoint_picker.datalayer import EngineMappings, MetricsExtractor

    def general() -> None:
        for family in text_string_to_metric_families(page.decode()):
            for _sample in family.samples:
                pass

    from endpoint_picker.datalayer.promtext import ScanHints

    extractor = MetricsExtractor(EngineMappings().engines["vllm"])
    hints = ScanHints()

    def targeted() -> None:
        extractor.extract(page, 0.0)

    def targeted_hinted() -> None:
        extractor.extract(page, 0.0, None, hints)

    def per_call(fn: Any, number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6

    samples = sum(1 for line in page.split(b"\n") if line and not line.startswith(b"#"))
    return {
        "page_bytes": len(page),
        "page_samples": samples,
        "prometheus_client_us": per_call(general, 20),
        "targeted_us": per_call(targeted, 2000),
        "targeted_hinted_us": per_call(targeted_hinted, 2000),
    }


async def _window(seconds: float, counter: Any) -> dict[str, float]:
    cpu0, n0, t0 = _cpu_seconds(), counter(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, n1, t1 = _cpu_seconds(), counter(), time.monotonic()
    wall = t1 - t0
    scrapes = n1 - n0
    return {
        "wall_s": wall,
        "cpu_percent": 100.0 * (cpu1 - cpu0) / wall,
        "scrapes_per_s": scrapes / wall,
        "cpu_us_per_scrape": 1e6 * (cpu1 - cpu0) / scrapes if scrapes else float("nan"),
    }


async def _lag_and_age(seconds: float, store: Any, keys: list[str]) -> dict[str, float]:
    """Loop lag (how late a 5 ms sleeper wakes) and snapshot ages sampled every 20 ms."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    ages: list[float] = []
    end = loop.time() + seconds
    next_age = loop.time()
    while loop.time() < end:
        before = loop.time()
        await asyncio.sleep(0.005)
        lags.append(loop.time() - before - 0.005)
        now = loop.time()
        if now >= next_age:
            next_age = now + 0.02
            clock = store.clock()
            for key in keys:
                m = store.get(key)
                ages.append(float("inf") if m is None else clock - m.scraped_at)
    lags.sort()
    ages.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {
        "loop_lag_p50_ms": 1e3 * pct(lags, 0.5),
        "loop_lag_p99_ms": 1e3 * pct(lags, 0.99),
        "loop_lag_max_ms": 1e3 * (lags[-1] if lags else float("nan")),
        "age_p50_ms": 1e3 * pct(ages, 0.5),
        "age_p99_ms": 1e3 * pct(ages, 0.99),
        "age_max_ms": 1e3 * (ages[-1] if ages else float("nan")),
    }


async def measure_scraper(ports: Sequence[int], args: argparse.Namespace) -> dict[str, Any]:
    from endpoint_picker.datalayer import MetricsScraper, MetricsStore
    from endpoint_picker.datastore import Datastore, Endpoint

    datastore = Datastore()
    datastore.replace_endpoints(Endpoint(f"ep-{i}", "127.0.0.1", port) for i, port in enumerate(ports))
    store = MetricsStore()
    scraper = MetricsScraper(datastore, store, interval=args.interval, timeout=args.timeout,
                             slot_period=args.slot_period)
    task = asyncio.create_task(scraper.run())
    try:
        await asyncio.sleep(args.warmup)
        stats = scraper.stats
        result: dict[str, Any] = await _window(args.window, lambda: sum(stats.scrapes.values()))
        result.update(await _lag_and_age(min(args.window, 5.0), store, [ep.key for ep in datastore.endpoints()]))
        result["errors"] = sum(stats.errors.values())
        result["slots"] = scraper.slot_count
        return result
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def measure_aiohttp(ports: Sequence[int], args: argparse.Namespace) -> dict[str, Any]:
    """Baseline: one shared aiohttp ClientSession (keep-alive), a task per endpoint, the targeted parser."""
    import aiohttp

    from endpoint_picker.datalayer import EngineMappings, MetricsExtractor, MetricsStore

    extractor = MetricsExtractor(EngineMappings().engines["vllm"])
    store = MetricsStore()
    done = [0]
    errors = [0]
    connector = aiohttp.TCPConnector(limit=len(ports) * 2, limit_per_host=2, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def poll(port: int) -> None:
            loop = asyncio.get_running_loop()
            url = f"http://127.0.0.1:{port}/metrics"
            key = f"127.0.0.1:{port}"
            next_at = loop.time()
            while True:
                try:
                    async with session.get(url) as resp:
                        body = await resp.read()
                    store.put(key, extractor.extract(body, store.clock(), store.get(key)).metrics)
                    done[0] += 1
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    errors[0] += 1
                next_at = max(next_at + args.interval, loop.time())
                await asyncio.sleep(next_at - loop.time())

        tasks = [asyncio.create_task(poll(p)) for p in ports]
        try:
            await asyncio.sleep(args.warmup)
            result: dict[str, Any] = await _window(args.window, lambda: done[0])
            result.update(await _lag_and_age(min(args.window, 5.0), store, [f"127.0.0.1:{p}" for p in ports]))
            result["errors"] = errors[0]
            return result
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from stack.child_process import ManagedProcess

    work = Path(tempfile.mkdtemp(prefix="scrape-load-"))
    ready = work / "ready.json"
    child = ManagedProcess(
        [sys.executable, "-m", "benchmarks.scrape_load", "--serve", str(ready), "--server", args.server,
         "--endpoints", str(args.endpoints)],
        work / "servers.log",
    )
    await child.start()
    try:
        deadline = time.monotonic() + _READY_TIMEOUT
        while not ready.exists():  # bounded: the child writes the file once every port listens
            if not child.running() or time.monotonic() > deadline:
                raise RuntimeError(f"metrics servers did not start:\n{child.log_tail()}")
            await asyncio.sleep(0.05)
        info = json.loads(ready.read_text())
        ports: list[int] = info["ports"]
        page = info["page"].encode()
        report: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "load_average_1m_at_start": os.getloadavg()[0]},
            "settings": {"endpoints": len(ports), "interval_s": args.interval, "timeout_s": args.timeout,
                         "slot_period_s": args.slot_period,
                         "window_s": args.window, "warmup_s": args.warmup, "server": args.server},
            "parser": parser_microbench(page),
            "clients": {},
        }
        for client in args.clients:
            measure = measure_scraper if client == "scraper" else measure_aiohttp
            report["clients"][client] = await measure(ports, args)
        report["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]
        return report
    finally:
        await child.stop()


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    p = report["parser"]
    print(f"\nparser, one vLLM page ({p['page_samples']} samples, {p['page_bytes']} bytes):")
    print(f"  prometheus_client.parser (all families): {p['prometheus_client_us']:9.1f} us/page")
    print(f"  targeted extractor, full scan:           {p['targeted_us']:9.1f} us/page")
    print(f"  targeted extractor, previous layout:     {p['targeted_hinted_us']:9.1f} us/page (what the scraper runs)")
    m = report["machine"]
    print(f"\n{s['endpoints']} endpoints ({s['server']} servers), every {s['interval_s'] * 1e3:g} ms, "
          f"CPU of this process over {s['window_s']:g} s ({m['cpus']} CPUs, load average "
          f"{m['load_average_1m_at_start']:.2f} -> {m['load_average_1m_at_end']:.2f}):")
    header = (f"  {'client':<8} {'CPU % of a core':>15} {'scrapes/s':>10} {'CPU us/scrape':>13} {'errors':>7} "
              f"{'loop lag p99/max ms':>20} {'age p50/p99/max ms':>20}")
    print(header)
    for name, r in report["clients"].items():
        lag = f"{r['loop_lag_p99_ms']:.2f}/{r['loop_lag_max_ms']:.2f}"
        age = f"{r['age_p50_ms']:.0f}/{r['age_p99_ms']:.0f}/{r['age_max_ms']:.0f}"
        print(f"  {name:<8} {r['cpu_percent']:15.1f} {r['scrapes_per_s']:10.0f} {r['cpu_us_per_scrape']:13.1f} "
              f"{r['errors']:7d} {lag:>20} {age:>20}")
    scraper = report["clients"].get("scraper")
    if scraper is not None:
        verdict = "within" if scraper["cpu_percent"] <= BUDGET_PERCENT else "OVER"
        print(f"\nbudget {BUDGET_PERCENT:g} % of one core: scraper {verdict} ({scraper['cpu_percent']:.1f} %)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scrape_load", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=100, help="number of /metrics endpoints (default 100)")
    parser.add_argument("--interval", type=float, default=0.05, help="scrape interval in seconds (default 0.05)")
    parser.add_argument("--timeout", type=float, default=1.0, help="per-scrape timeout in seconds (default 1)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default 2)")
    parser.add_argument("--window", type=float, default=10.0, help="CPU measuring window in seconds (default 10)")
    parser.add_argument("--slot-period", type=float, default=None,
                        help="the scraper's slot period in seconds (default: the scraper's own default)")
    parser.add_argument("--server", choices=["static", "sim"], default="static",
                        help="static: one captured vLLM page on every port (default); sim: real simulated servers")
    parser.add_argument("--clients", default="scraper",
                        help="comma list of: scraper (the picker's), aiohttp (baseline); default scraper")
    parser.add_argument("--output", default="bench-results/scrape_load.json", help="JSON results file")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # child mode: ready-file path
    args = parser.parse_args(argv)
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for client in args.clients:
        if client not in ("scraper", "aiohttp"):
            parser.error(f"unknown client {client!r}")
    if args.endpoints < 1:
        parser.error("--endpoints must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        asyncio.run(_serve(args))
        return 0
    report = asyncio.run(run(args))
    print_report(report)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
