"""The routing benchmark: one workload, one simulated fleet, several routers, the same requests at the same times.

Why this module exists: it answers the question the product exists for — are requests served better through
this picker than through a round-robin Service or a peer router? — with numbers anyone can reproduce on a
laptop. For each target in turn it starts a fresh simulated fleet (cold caches, same seeds), starts the
target in front of it, replays the workload open-loop (every request sent at its arrival time whatever the
target's latency, in stages of rising rate), streams every response, and records what the client saw plus
the prefix-cache counters of the servers at every stage boundary and the CPU each process used. Results go to
a folder as JSON, a Markdown table and PNG plots (:mod:`benchmarks.routing_report`).

The load generator runs on this process's event loop. If it falls behind its schedule (a saturated 2-core
machine), the lateness of sends is measured and reported with the results rather than hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.latency_stats import Slo, Summary, summarize
from benchmarks.overhead import cpu_seconds
from benchmarks.sim_fleet import CacheCounters, FleetSpec, SimFleetProcess
from benchmarks.stream_client import RequestResult, StreamRequest, new_session, send
from benchmarks.targets import Target, check_routes
from simulator.fleet.workload import FleetRequest

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StagePlan:
    """One stage: its index, offered rate (req/s) and start/end offsets (s) from the start of the run."""

    index: int
    rate: float
    start: float
    end: float


def request_for(req: FleetRequest, model: str) -> StreamRequest:
    """The HTTP request a workload request becomes: chat messages when it has them, else a completions prompt;
    a LoRA request names its adapter as the model (vLLM's convention)."""
    messages = req.messages()
    return StreamRequest(
        request_id=req.request_id,
        model=req.lora_name or model,
        max_tokens=req.max_tokens,
        prompt=None if messages is not None else req.text,
        messages=messages,
        stage=req.stage,
        label=req.label,
    )


@dataclass
class TimedRequest:
    at: float  # seconds from the start of the run
    request: StreamRequest


@dataclass
class TargetRun:
    """Everything one target produced."""

    name: str
    description: str
    results: list[RequestResult] = field(default_factory=list)
    stage_cache: dict[int, CacheCounters] = field(default_factory=dict)
    cpu_percent: dict[str, float] = field(default_factory=dict)
    send_lag_p99: float = 0.0
    send_lag_max: float = 0.0
    wall_seconds: float = 0.0
    error: str | None = None

    def stage_summaries(self, stages: Sequence[StagePlan], slo: Slo, endpoints: Sequence[str]) -> dict[int, Summary]:
        return {s.index: summarize([r for r in self.results if r.stage == s.index], slo, endpoints) for s in stages}


def bar(done: int, total: int, width: int = 24) -> str:
    """``[#########...............]  37%``: a text progress bar (stderr may be a log file, so no redraws)."""
    frac = done / total if total else 1.0
    filled = round(frac * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {frac:4.0%}"


def _lag_stats(lags: list[float]) -> tuple[float, float]:
    if not lags:
        return 0.0, 0.0
    ordered = sorted(lags)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], ordered[-1]


async def replay(url: str, plan: Sequence[TimedRequest], stages: Sequence[StagePlan], *,
                 on_stage: Callable[[int], Any], progress: Progress, label: str,
                 request_timeout: float) -> tuple[list[RequestResult], list[float]]:
    """Send every request at its time (open loop); returns the results and each send's lateness (s)."""
    results: list[RequestResult] = []
    lags: list[float] = []
    tasks: set[asyncio.Task[RequestResult]] = set()
    boundaries = sorted((s.start, s.index) for s in stages)
    total = len(plan)
    done = 0

    def finished(task: asyncio.Task[RequestResult]) -> None:
        nonlocal done
        tasks.discard(task)
        if not task.cancelled() and task.exception() is None:
            results.append(task.result())
        done += 1

    async with new_session() as session:
        t0 = time.monotonic()
        last_report = 0.0
        for i, item in enumerate(plan):
            while boundaries and boundaries[0][0] <= item.at:
                _, stage = boundaries.pop(0)
                await _sleep_until(t0 + stages[stage].start)
                on_stage(stage)
            await _sleep_until(t0 + item.at)
            lags.append(max(0.0, time.monotonic() - t0 - item.at))
            task = asyncio.create_task(send(session, url, item.request, time_limit=request_timeout))
            tasks.add(task)
            task.add_done_callback(finished)
            now = time.monotonic() - t0
            if now - last_report >= 5.0:
                last_report = now
                progress(f"{label}: {bar(done, total)}  {now:4.0f}s  sent {i + 1}/{total}  done {done}  "
                         f"in flight {len(tasks)}")
        for _, stage in boundaries:  # stages with no requests
            on_stage(stage)
        deadline = time.monotonic() + request_timeout + 5
        while tasks and time.monotonic() < deadline:
            await asyncio.wait(set(tasks), timeout=5.0)
            progress(f"{label}: {bar(done, total)}  {time.monotonic() - t0:4.0f}s  sent {total}/{total}  "
                     f"done {done}  in flight {len(tasks)}")
        for task in list(tasks):
            task.cancel()
    return results, lags


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_target(target: Target, fleet_spec: FleetSpec, plan: Sequence[TimedRequest],
                     stages: Sequence[StagePlan], work_dir: Path, *, model: str, progress: Progress,
                     request_timeout: float = 120.0) -> TargetRun:
    """A fresh fleet, ``target`` in front of it, the whole plan replayed; everything stopped afterwards."""
    run = TargetRun(target.name, target.describe())
    fleet = SimFleetProcess(fleet_spec, work_dir / f"{target.name}-fleet.log")
    started = time.monotonic()
    try:
        await fleet.start()
        progress(f"{target.name}: {fleet_spec.replicas} simulated servers up (PID {fleet.pid})")
        await target.start(fleet.addresses, work_dir)
        progress(f"{target.name}: up at {target.url} — {run.description}")
        await check_routes(target.url, model)

        snapshots: dict[int, asyncio.Task[CacheCounters]] = {}

        def on_stage(index: int) -> None:
            snapshots[index] = asyncio.create_task(fleet.cache_counters())

        pids = {"fleet": fleet.pid, **target.pids()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self_before, wall_before = _self_cpu(), time.monotonic()
        results, lags = await replay(target.url, plan, stages, on_stage=on_stage, progress=progress,
                                     label=target.name, request_timeout=request_timeout)
        wall = time.monotonic() - wall_before
        for name, pid in pids.items():
            before, after = cpu_before[name], cpu_seconds(pid)
            if before is not None and after is not None:
                run.cpu_percent[name] = round(100 * (after - before) / wall, 1)
        run.cpu_percent["load_generator"] = round(100 * (_self_cpu() - self_before) / wall, 1)
        end = await fleet.cache_counters()
        marks = [await snapshots[s.index] if s.index in snapshots else CacheCounters() for s in stages]
        for k, stage in enumerate(stages):
            upper = marks[k + 1] if k + 1 < len(marks) else end
            run.stage_cache[stage.index] = upper.minus(marks[k])
        run.results = sorted(results, key=lambda r: r.sent)
        run.send_lag_p99, run.send_lag_max = _lag_stats(lags)
        failed = sum(not r.ok for r in results)
        progress(f"{target.name}: {len(results)} requests, {failed} failed, send lag p99 "
                 f"{run.send_lag_p99 * 1000:.1f} ms, CPU % of a core {run.cpu_percent}")
    except (RuntimeError, OSError, ValueError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        progress(f"{target.name}: FAILED — {run.error}")
    finally:
        with contextlib.suppress(Exception):
            await target.stop()
        await fleet.stop()
        run.wall_seconds = time.monotonic() - started
    return run


def make_plan(requests: Sequence[FleetRequest], model: str) -> list[TimedRequest]:
    return [TimedRequest(r.arrival_time, request_for(r, model)) for r in requests]


def stage_plans(requests: Sequence[FleetRequest], stages: Sequence[tuple[float, float]] | None) -> list[StagePlan]:
    """Stage boundaries: from (rate, duration) pairs, or one stage spanning the requests at their mean rate."""
    if stages:
        plans, start = [], 0.0
        for i, (rate, duration) in enumerate(stages):
            plans.append(StagePlan(i, rate, start, start + duration))
            start += duration
        return plans
    span = max((r.arrival_time for r in requests), default=0.0)
    rate = len(requests) / span if span > 0 else float(len(requests))
    return [StagePlan(0, rate, 0.0, span)]


def progress_printer() -> Progress:
    """Progress lines on stderr with the elapsed time (a bar makes no sense for an open-loop replay)."""
    t0 = time.monotonic()
    tty = sys.stderr.isatty()

    def say(message: str) -> None:
        elapsed = time.monotonic() - t0
        line = f"[bench {elapsed:6.0f}s] {message}"
        print(line if not tty else line.ljust(min(os.get_terminal_size().columns, 160)), file=sys.stderr,
              flush=True)
    return say
