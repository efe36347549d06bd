"""Data-plane overhead of the picker: Envoy alone vs Envoy + picker, measured on this machine in one run.

Why this module exists: the picker sits in the path of every inference request (one ext_proc gRPC stream
per HTTP request), so its cost is what it adds to Envoy — latency per request and lost throughput. The aim
(from the issue) is an added p50 of at most 0.5 ms and at least 50 % of Envoy-alone throughput. This is a
benchmark, not a timed test: it prints what it measured and writes JSON; it asserts nothing about speed.

What runs (all on loopback, every process stopped by PID at the end):

* a backend Envoy answering every request with a fixed small completion body (``benchmarks/backend.py``),
  one listener per pool endpoint, so the model servers cost next to nothing, and ``/metrics`` with a real
  vLLM page so the picker's scraping works as in production;
* one gateway Envoy per mode, built by ``stack.envoy_bootstrap`` exactly like the default local stack
  (TLS to the picker, FailClose, active health checks of the picker, override_host pool): ``alone`` is the
  same config with the ext_proc filter removed (the pool then routes by round robin), ``fds`` uses
  FULL_DUPLEX_STREAMED request and response bodies (what gateways use), ``buffered`` a BUFFERED request body;
* one picker (``python -m endpoint_picker serve``, TLS, ``--health-checking``) shared by the picker modes,
  with the backend's listeners in its endpoints file (plus a plaintext one if ``fds-plaintext`` is asked
  for: not a default mode, it shows what TLS to the picker costs).

Per mode: a short warm-up, then latency at concurrency 1 (sequential keep-alive requests) and throughput at
``--concurrency`` (default 16), each for ``--duration`` seconds, with the CPU each process used (and the
CPU everything else on the machine used: a measurement disturbed by another job is repeated, then flagged
``noisy``), and Envoy's ext_proc counters (streams = requests, gRPC messages per request). With
``--rounds N`` the modes are measured N times, interleaved, and the table shows medians; added latency and
the throughput ratio are computed against Envoy alone of the same round. ``--profile`` additionally
samples the picker with py-spy during an extra (unrecorded) throughput run of each picker mode.

    .venv/bin/python -m benchmarks.overhead                       # wrk if installed, else asyncio client
    .venv/bin/python -m benchmarks.overhead --rounds 3 --profile  # interleaved rounds, py-spy on the picker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.backend import COMPLETION_BODY, backend_envoy, capture_vllm_page
from benchmarks.loadgen import LoadGenerator, LoadResult, LoadSpec, choose_generator
from benchmarks.pyspy import ProfileSummary, PySpyRecorder, find_py_spy
from stack.envoy_bootstrap import (
    EXT_PROC_FILTER,
    GATEWAY_LISTENER,
    HCM_FILTER,
    PICKER_CLUSTER,
    BodyMode,
    FailureMode,
    GatewayConfig,
    HostPort,
    build_bootstrap,
    parse_bootstrap,
)
from stack.envoy_process import EnvoyProcess, find_envoy_binary
from stack.picker_process import PickerPorts, PickerProcess, PickerSettings
from stack.ports import free_port


@dataclass(frozen=True)
class ModeSpec:
    """One gateway variant: no picker (``body_mode`` None), or the picker with a body mode and TLS or not."""

    label: str
    body_mode: BodyMode | None
    picker_tls: bool = True

    @property
    def uses_picker(self) -> bool:
        return self.body_mode is not None


MODES: dict[str, ModeSpec] = {
    "alone": ModeSpec("Envoy alone (no ext_proc)", None),
    "fds": ModeSpec("Envoy + picker, FULL_DUPLEX_STREAMED", BodyMode.FULL_DUPLEX_STREAMED),
    "buffered": ModeSpec("Envoy + picker, BUFFERED", BodyMode.BUFFERED),
    # Not in the default set: the default stack uses TLS; this one shows what TLS costs.
    "fds-plaintext": ModeSpec("Envoy + picker, FDS, plaintext gRPC", BodyMode.FULL_DUPLEX_STREAMED, False),
}
DEFAULT_MODES = "alone,fds,buffered"
REQUEST_PATH = "/v1/completions"
REQUEST_BODY = b'{"model": "m", "prompt": "hello world", "max_tokens": 1}'
AIM_ADDED_P50_MS = 0.5
AIM_THROUGHPUT_RATIO = 0.5
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_NOISE_PERCENT = 10.0  # other processes + steal above this (% of one core) marks a measurement as noisy
_COUNTERS = r"^(http\.gateway\.(downstream_rq_[2345]xx|ext_proc\..*)|cluster\.pool\.upstream_rq_total)$"


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- configs ------------------------------------------------------------------------------------------------


def _find(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise KeyError(name)


def gateway_bootstrap(
    mode: str, endpoints: Sequence[HostPort], *, listener_port: int, admin_port: int, picker_port: int
) -> dict[str, Any]:
    """The default stack's gateway config for ``mode``; ``alone`` drops the ext_proc filter (nothing else)."""
    spec = MODES[mode]
    config = GatewayConfig(
        endpoints=list(endpoints),
        listener_port=listener_port,
        admin_port=admin_port,
        picker_port=picker_port,
        picker_tls=spec.picker_tls,
        body_mode=spec.body_mode or BodyMode.FULL_DUPLEX_STREAMED,
        failure_mode=FailureMode.FAIL_CLOSE,
        access_log_path="/dev/null",  # same formatter work in every mode, no disk traffic
        picker_health_check=spec.uses_picker,
    )
    doc = build_bootstrap(config)
    if not spec.uses_picker:
        listener = _find(doc["static_resources"]["listeners"], GATEWAY_LISTENER)
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == HCM_FILTER:
                    filters = network_filter["typed_config"]["http_filters"]
                    filters[:] = [f for f in filters if f["name"] != EXT_PROC_FILTER]
        parse_bootstrap(doc)
    return doc


def write_endpoints_file(path: Path, endpoints: Sequence[HostPort]) -> None:
    doc = {
        "pool": {"name": "bench-pool"},
        "endpoints": [
            {"name": f"backend-{i}", "address": e.host, "port": e.port, "labels": {"role": "both"}}
            for i, e in enumerate(endpoints)
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


# --- process facts ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU of a running process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15 of stat)


def system_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all CPUs since boot, from /proc/stat; busy = user+nice+system+irq+softirq."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq) / _CLK_TCK, steal / _CLK_TCK


class CpuMeter:
    """CPU used by each of our processes, by everything else on the machine, and stolen by the hypervisor,
    over one measurement; in % of one core (the machine has ``nproc`` x 100 %)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self._pids = pids
        self._before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self._system_before = system_cpu_seconds()
        self._started = time.monotonic()

    def finish(self, generator_cpu_s: float) -> dict[str, float]:
        wall = time.monotonic() - self._started
        busy_after, steal_after = system_cpu_seconds()
        out: dict[str, float] = {}
        for name, pid in self._pids.items():
            before, after = self._before[name], cpu_seconds(pid)
            if before is not None and after is not None:
                out[name] = 100 * (after - before) / wall
        out["load_generator"] = 100 * generator_cpu_s / wall
        busy = 100 * (busy_after - self._system_before[0]) / wall
        out["other_processes"] = max(0.0, busy - sum(out.values()))
        out["steal"] = 100 * (steal_after - self._system_before[1]) / wall
        return {name: round(value, 1) for name, value in out.items()}


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    if not model and shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def envoy_version() -> str:
    out = subprocess.run(
        [str(find_envoy_binary()), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    # "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    _, _, rest = out.partition("version:")
    fields = rest.split()
    if fields and fields[0].count("/") >= 2:
        return fields[0].split("/")[1]
    return out.strip()


def code_version() -> dict[str, Any]:
    """The commit and the uncommitted files of the picker's code: the working tree may be moving."""
    root = Path(__file__).resolve().parent.parent

    def git(*command: str) -> str:
        try:
            return subprocess.run(["git", *command], cwd=root, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.rstrip("\n")
        except (OSError, subprocess.TimeoutExpired):
            return ""

    dirty = git("status", "--porcelain", "--", "extproc", "endpoint_picker", "stack")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": [ln[3:] for ln in dirty.splitlines()]}


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- the bench stack ----------------------------------------------------------------------------------------


@dataclass
class Gateway:
    mode: str
    listener_port: int
    admin_port: int
    envoy: EnvoyProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}{REQUEST_PATH}"

    async def counters(self) -> dict[str, int]:
        """Counters that show where requests went: downstream status classes and ext_proc streams."""
        return await self.envoy.stats(_COUNTERS)


@dataclass
class BenchStack:
    work_dir: Path
    replicas: int
    modes: Sequence[str]
    backend: EnvoyProcess | None = None
    pickers: dict[bool, PickerProcess] = field(default_factory=dict)  # by TLS on/off
    gateways: dict[str, Gateway] = field(default_factory=dict)
    endpoints: list[HostPort] = field(default_factory=list)
    metrics_page_source: str = ""

    async def start(self) -> None:
        page, self.metrics_page_source = await capture_vllm_page()
        say(f"backend /metrics page: {self.metrics_page_source}")
        self.endpoints = [HostPort("127.0.0.1", free_port()) for _ in range(self.replicas)]
        self.backend = backend_envoy(self.endpoints, admin_port=free_port(), work_dir=self.work_dir,
                                     metrics_page=page)
        await self.backend.start(ready_within=60)
        say(f"backend Envoy (PID {self.backend.pid}) direct_response on {', '.join(map(str, self.endpoints))}")

        endpoints_file = self.work_dir / "endpoints.yaml"
        write_endpoints_file(endpoints_file, self.endpoints)
        for tls in sorted({MODES[m].picker_tls for m in self.modes if MODES[m].uses_picker}, reverse=True):
            settings = PickerSettings(
                ports=PickerPorts(grpc=free_port(), health=free_port(), metrics=free_port()),
                endpoints_file=endpoints_file,
                tls=tls,
                health_checking=True,
                log_level="info",
            )
            picker = PickerProcess(settings, self.work_dir / f"picker-{'tls' if tls else 'plaintext'}.log")
            self.pickers[tls] = picker
            await picker.start(ready_within=60)
            say(f"picker (PID {picker.pid}) ready: ext_proc 127.0.0.1:{settings.ports.grpc} "
                f"({'TLS' if tls else 'plaintext'})")
            await self._wait_scraped(picker)

        for mode in self.modes:
            spec = MODES[mode]
            picker = self.pickers.get(spec.picker_tls) if spec.uses_picker else None
            picker_port = picker.ports.grpc if picker is not None else free_port()
            listener_port, admin_port = free_port(), free_port()
            doc = gateway_bootstrap(
                mode, self.endpoints, listener_port=listener_port, admin_port=admin_port, picker_port=picker_port
            )
            path = self.work_dir / f"gateway-{mode}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
            envoy = EnvoyProcess(
                path, admin_address="127.0.0.1", admin_port=admin_port, log_path=self.work_dir / f"gateway-{mode}.log"
            )
            await envoy.start(ready_within=60)
            gateway = Gateway(mode, listener_port, admin_port, envoy)
            self.gateways[mode] = gateway
            if spec.uses_picker:
                await envoy.wait_host_health(PICKER_CLUSTER, f"127.0.0.1:{picker_port}")
            say(f"gateway Envoy '{mode}' (PID {envoy.pid}) on :{listener_port} — {MODES[mode].label}")
            await self._check(gateway)

    async def _wait_scraped(self, picker: PickerProcess, within: float = 15.0) -> None:
        """Until the picker has scraped every backend's /metrics successfully (so routing sees fresh data)."""
        deadline = time.monotonic() + within
        stats: dict[str, int] = {}
        while time.monotonic() < deadline:
            stats = await picker_scrape_stats(picker)
            if stats["endpoints_scraped"] >= len(self.endpoints):
                if stats["errors"]:
                    say(f"WARNING picker scrape errors: {stats}")
                return
            await asyncio.sleep(0.2)
        say(f"WARNING the picker has not scraped every backend's /metrics after {within:.0f}s: {stats}")

    async def scrape_stats(self) -> dict[str, dict[str, int]]:
        return {"tls" if tls else "plaintext": await picker_scrape_stats(p) for tls, p in self.pickers.items()}

    async def _check(self, gateway: Gateway) -> None:
        """One request through the gateway: 200, the backend's body, and the picker in the path (or not)."""
        before = await gateway.counters()
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(gateway.url, data=REQUEST_BODY, headers={"content-type": "application/json"}) as resp,
        ):
            body = await resp.read()
            if resp.status != 200 or body != COMPLETION_BODY:
                raise RuntimeError(f"gateway '{gateway.mode}' answered {resp.status}: {body[:300]!r}")
        after = await gateway.counters()
        streams = _delta(before, after, "http.gateway.ext_proc.epp.streams_started")
        expected = 1 if MODES[gateway.mode].uses_picker else 0
        if streams != expected:
            raise RuntimeError(f"gateway '{gateway.mode}': {streams} ext_proc streams for one request")

    async def stop(self) -> None:
        for gateway in self.gateways.values():
            await gateway.envoy.stop()
        for picker in self.pickers.values():
            await picker.stop(grace=5.0)
        if self.backend is not None:
            await self.backend.stop()

    def all_pids(self) -> dict[str, int | None]:
        pids: dict[str, int | None] = {"backend_envoy": self.backend.pid if self.backend else None}
        pids.update({f"gateway_{mode}": gateway.envoy.pid for mode, gateway in self.gateways.items()})
        pids.update({f"picker_{'tls' if tls else 'plain'}": p.pid for tls, p in self.pickers.items()})
        return pids

    def picker_for(self, mode: str) -> PickerProcess | None:
        spec = MODES[mode]
        return self.pickers.get(spec.picker_tls) if spec.uses_picker else None

    def pids(self, mode: str) -> dict[str, int | None]:
        picker = self.picker_for(mode)
        return {
            "gateway_envoy": self.gateways[mode].envoy.pid,
            "picker": picker.pid if picker is not None else None,
            "backend_envoy": self.backend.pid if self.backend else None,
        }


async def picker_scrape_stats(picker: PickerProcess) -> dict[str, int]:
    """Totals of the picker's own scrape counters (``endpoint_picker_metrics_scrape*``) from its /metrics."""
    out = {"scrapes": 0, "errors": 0, "endpoints_scraped": 0}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(picker.metrics_url + "/metrics") as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return out
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("endpoint_picker_metrics_scrapes_total{"):
            out["scrapes"] += int(float(value))
            out["endpoints_scraped"] += float(value) > 0
        elif name.startswith("endpoint_picker_metrics_scrape_errors_total{"):
            out["errors"] += int(float(value))
    return out


def _delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


# --- measuring ----------------------------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    round: int
    latency: LoadResult  # concurrency 1
    throughput: LoadResult  # concurrency N
    cpu_percent: dict[str, float]  # during the throughput run, 100 = one core
    latency_cpu_percent: dict[str, float]  # during the c=1 run
    picker_streams: int  # ext_proc streams Envoy started during the throughput run
    upstream_requests: int
    noisy: bool = False  # some other process used the CPU during a measurement, even after retries
    attempts: int = 2
    ext_proc_counters: dict[str, int] = field(default_factory=dict)  # Envoy's ext_proc stats, throughput run

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "label": MODES[self.mode].label,
            "round": self.round,
            "latency_c1": self.latency.to_dict(),
            "throughput": self.throughput.to_dict(),
            "cpu_percent_during_throughput": self.cpu_percent,
            "cpu_percent_during_latency": self.latency_cpu_percent,
            "ext_proc_streams_during_throughput": self.picker_streams,
            "upstream_requests_during_throughput": self.upstream_requests,
            "noisy": self.noisy,
            "attempts": self.attempts,
            "ext_proc_counters_during_throughput": self.ext_proc_counters,
            "ext_proc_messages_per_request": self.messages_per_request(),
        }

    def messages_per_request(self) -> dict[str, float] | None:
        """gRPC messages on the ext_proc stream per HTTP request (Envoy's view: sent = to the picker)."""
        if not self.picker_streams:
            return None
        prefix = "http.gateway.ext_proc.epp."
        return {
            direction: round(self.ext_proc_counters.get(prefix + f"stream_msgs_{direction}", 0) / self.picker_streams,
                             2)
            for direction in ("sent", "received")
        }


def _check_clean(mode: str, result: LoadResult) -> None:
    if result.requests == 0:
        raise RuntimeError(f"{mode}: no request completed")
    if result.non_2xx or result.socket_errors:
        say(f"WARNING {mode}: {result.non_2xx} non-2xx responses, {result.socket_errors} socket errors")


@dataclass
class Measurement:
    result: LoadResult
    cpu: dict[str, float]
    counters: dict[str, int]  # gateway counter deltas over the run
    attempts: int

    @property
    def noisy(self) -> bool:
        return _noise(self.cpu) >= _NOISE_PERCENT


def _noise(cpu: dict[str, float]) -> float:
    return cpu.get("other_processes", 0.0) + cpu.get("steal", 0.0)


async def wait_for_quiet(stack: BenchStack, within: float) -> float:
    """Wait (at most ``within`` s) until processes outside the benchmark use < _NOISE_PERCENT of a core over
    one second; returns the last noise level seen."""
    deadline = time.monotonic() + within
    for _ in range(int(within) + 2):
        meter = CpuMeter(stack.all_pids())
        await asyncio.sleep(1.0)
        noise = _noise(meter.finish(0.0))
        if noise < _NOISE_PERCENT or time.monotonic() >= deadline:
            return noise
    return noise


async def measure(
    stack: BenchStack, generator: LoadGenerator, mode: str, spec: LoadSpec, args: argparse.Namespace
) -> Measurement:
    """One load run with CPU and counter accounting; noisy runs (another job on the machine) are repeated
    up to ``--noisy-retries`` times after waiting up to ``--quiet-wait`` s for the machine to calm down."""
    gateway = stack.gateways[mode]
    attempts = 1 + max(0, args.noisy_retries)
    for attempt in range(1, attempts + 1):
        if args.quiet_wait > 0:
            noise = await wait_for_quiet(stack, args.quiet_wait)
            if noise >= _NOISE_PERCENT:
                say(f"  machine still busy ({noise:.0f} % of a core used elsewhere); measuring anyway")
        before = await gateway.counters()
        meter = CpuMeter(stack.pids(mode))
        result = await generator.run(spec)
        cpu = meter.finish(result.cpu_s)
        after = await gateway.counters()
        counters = {key: _delta(before, after, key) for key in after}
        measurement = Measurement(result, cpu, counters, attempt)
        if not measurement.noisy or attempt == attempts:
            return measurement
        say(f"  {mode} c={spec.concurrency}: noisy ({_noise(cpu):.0f} % of a core used by other processes), "
            f"measuring again ({attempt}/{attempts - 1})")
    raise AssertionError("unreachable")


async def measure_mode(
    stack: BenchStack, generator: LoadGenerator, mode: str, round_no: int, args: argparse.Namespace
) -> ModeResult:
    gateway = stack.gateways[mode]

    def spec(concurrency: int, duration: float, requests: int | None = None) -> LoadSpec:
        return LoadSpec(url=gateway.url, body=REQUEST_BODY, concurrency=concurrency, duration=duration,
                        requests=requests)

    if args.warmup > 0:
        await generator.run(spec(args.concurrency, args.warmup))
    c1 = await measure(stack, generator, mode, spec(1, args.duration, args.requests), args)
    latency = c1.result
    _check_clean(mode, latency)
    say(f"  {mode} c=1: {latency.requests} requests, p50 {latency.p50_ms:.3f} ms, p99 {latency.p99_ms:.3f} ms"
        + _noise_note(c1.cpu))

    cn = await measure(stack, generator, mode, spec(args.concurrency, args.duration, args.requests), args)
    throughput, cpu_percent = cn.result, cn.cpu
    _check_clean(mode, throughput)
    streams = cn.counters.get("http.gateway.ext_proc.epp.streams_started", 0)
    upstream = cn.counters.get("cluster.pool.upstream_rq_total", 0)
    say(
        f"  {mode} c={args.concurrency}: {throughput.requests} requests, {throughput.rps:.0f} req/s, "
        f"p50 {throughput.p50_ms:.2f} ms, p99 {throughput.p99_ms:.2f} ms; CPU % "
        + ", ".join(f"{k} {v:.0f}" for k, v in cpu_percent.items())
        + _noise_note(cpu_percent)
    )
    ext_proc = {key: value for key, value in cn.counters.items() if ".ext_proc." in key and value}
    return ModeResult(mode, round_no, latency, throughput, cpu_percent, c1.cpu, streams, upstream,
                      noisy=c1.noisy or cn.noisy, attempts=c1.attempts + cn.attempts, ext_proc_counters=ext_proc)


def _noise_note(cpu: dict[str, float]) -> str:
    """A warning when something outside the benchmark used the CPU (another job on the machine)."""
    other = _noise(cpu)
    return f"  [NOISY: {other:.0f} % of a core used by other processes/steal]" if other >= _NOISE_PERCENT else ""


async def profile_mode(
    stack: BenchStack, generator: LoadGenerator, mode: str, args: argparse.Namespace, py_spy: str
) -> ProfileSummary | None:
    """An extra, unrecorded throughput run with py-spy sampling the picker."""
    picker = stack.picker_for(mode)
    assert picker is not None and picker.pid is not None
    output = Path(args.output).with_name(f"overhead-pyspy-{mode}.txt")
    recorder = PySpyRecorder(py_spy, picker.pid, output, duration=args.duration)
    await recorder.start()
    await asyncio.sleep(0.5)  # let py-spy attach before the load starts
    gateway = stack.gateways[mode]
    result = await generator.run(
        LoadSpec(url=gateway.url, body=REQUEST_BODY, concurrency=args.concurrency, duration=args.duration)
    )
    summary = await recorder.finish()
    say(f"  {mode} under py-spy: {result.rps:.0f} req/s (sampling slows the picker a little)")
    if summary is not None:
        print(summary.render(), flush=True)
    return summary


# --- report -------------------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: Sequence[ModeResult], modes: Sequence[str]) -> list[dict[str, Any]]:
    """Per mode, medians over rounds; added latency and throughput ratio against ``alone`` of the same round."""
    alone = {r.round: r for r in results if r.mode == "alone"}
    rows = []
    for mode in modes:
        mine = [r for r in results if r.mode == mode]
        if not mine:
            continue
        added_p50 = [r.latency.p50_ms - alone[r.round].latency.p50_ms for r in mine if r.round in alone]
        added_p99 = [r.latency.p99_ms - alone[r.round].latency.p99_ms for r in mine if r.round in alone]
        ratio = [r.throughput.rps / alone[r.round].throughput.rps for r in mine if r.round in alone]
        cpu_keys = sorted({k for r in mine for k in r.cpu_percent})
        rows.append({
            "mode": mode,
            "label": MODES[mode].label,
            "rounds": len(mine),
            "c1_p50_ms": _median([r.latency.p50_ms for r in mine]),
            "c1_p99_ms": _median([r.latency.p99_ms for r in mine]),
            "added_p50_ms": _median(added_p50) if added_p50 and mode != "alone" else None,
            "added_p99_ms": _median(added_p99) if added_p99 and mode != "alone" else None,
            "rps": _median([r.throughput.rps for r in mine]),
            "rps_min": min(r.throughput.rps for r in mine),
            "rps_max": max(r.throughput.rps for r in mine),
            "ratio_vs_alone": _median(ratio) if ratio and mode != "alone" else None,
            "cN_p50_ms": _median([r.throughput.p50_ms for r in mine]),
            "cN_p99_ms": _median([r.throughput.p99_ms for r in mine]),
            "cpu_percent": {k: _median([r.cpu_percent[k] for r in mine if k in r.cpu_percent]) for k in cpu_keys},
            "ext_proc_messages_per_request": _median_messages(mine),
            "cpu_ms_per_request": {
                k: _median([_cpu_ms_per_request(r, k) for r in mine if k in r.cpu_percent])
                for k in ("gateway_envoy", "picker", "backend_envoy") if any(k in r.cpu_percent for r in mine)
            },
        })  # fmt: skip
    return rows


def _median_messages(results: Sequence[ModeResult]) -> dict[str, float] | None:
    per_run = [m for m in (r.messages_per_request() for r in results) if m]
    if not per_run:
        return None
    return {key: _median([m[key] for m in per_run]) for key in per_run[0]}


def _cpu_ms_per_request(result: ModeResult, process: str) -> float:
    """CPU milliseconds ``process`` spent per request during the throughput run."""
    t = result.throughput
    return result.cpu_percent[process] / 100 * t.duration_s / t.requests * 1000 if t.requests else float("nan")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else f"{value:{spec}}"


def markdown_tables(rows: Sequence[dict[str, Any]], results: Sequence[ModeResult], concurrency: int) -> str:
    lines = [
        f"| Mode | p50 c=1 (ms) | p99 c=1 (ms) | added p50 | added p99 | req/s c={concurrency} | vs alone "
        f"| p50 c={concurrency} (ms) | p99 c={concurrency} (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        rps = f"{row['rps']:.0f}"
        if row["rounds"] > 1:
            rps += f" ({row['rps_min']:.0f}-{row['rps_max']:.0f})"
        lines.append(
            f"| {row['label']} | {row['c1_p50_ms']:.3f} | {row['c1_p99_ms']:.3f} "
            f"| {_fmt(row['added_p50_ms'], '+.3f')} | {_fmt(row['added_p99_ms'], '+.3f')} | {rps} "
            f"| {_fmt(None if row['ratio_vs_alone'] is None else 100 * row['ratio_vs_alone'], '.0f')}"
            f"{'' if row['ratio_vs_alone'] is None else ' %'} "
            f"| {row['cN_p50_ms']:.2f} | {row['cN_p99_ms']:.2f} |"
        )
    names = ["gateway_envoy", "picker", "backend_envoy", "load_generator"]
    lines += [
        "",
        f"CPU during the c={concurrency} run (% of one core; the machine has {os.cpu_count()} cores):",
        "",
        "| Mode | gateway Envoy | picker | backend Envoy | load generator | benchmark total | other processes "
        "| steal | Envoy CPU ms/req | picker CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu = row["cpu_percent"]
        per_request = row["cpu_ms_per_request"]
        cells = [_fmt(cpu.get(n), ".0f") for n in names]
        lines.append(
            f"| {row['label']} | {' | '.join(cells)} | {sum(cpu.get(n, 0.0) for n in names):.0f} "
            f"| {_fmt(cpu.get('other_processes'), '.0f')} | {_fmt(cpu.get('steal'), '.0f')} "
            f"| {_fmt(per_request.get('gateway_envoy'), '.3f')} | {_fmt(per_request.get('picker'), '.3f')} |"
        )
    messages = [(row["label"], row["ext_proc_messages_per_request"]) for row in rows
                if row.get("ext_proc_messages_per_request")]
    if messages:
        lines += ["", "ext_proc gRPC messages per HTTP request (Envoy's counters: sent to / received from the picker):"]
        lines += [f"- {label}: {m['sent']:.2f} sent, {m['received']:.2f} received" for label, m in messages]
    if len({r.round for r in results}) > 1:
        lines += [
            "",
            "Per round:",
            "",
            f"| Round | Mode | p50 c=1 (ms) | p99 c=1 (ms) | req/s c={concurrency} | noisy |",
            "|---:|---|---:|---:|---:|---|",
        ]
        lines.extend(
            f"| {r.round} | {r.mode} | {r.latency.p50_ms:.3f} | {r.latency.p99_ms:.3f} | {r.throughput.rps:.0f} "
            f"| {'yes' if r.noisy else ''} |"
            for r in results
        )
    noisy = sum(1 for r in results if r.noisy)
    if noisy:
        lines += ["", f"WARNING: {noisy} of {len(results)} mode runs were measured while other processes used "
                      f"the CPU (see 'noisy'); their numbers are less trustworthy."]
    return "\n".join(lines)


def verdict(rows: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for row in rows:
        if row["added_p50_ms"] is None or row["ratio_vs_alone"] is None:
            continue
        p50_ok = row["added_p50_ms"] <= AIM_ADDED_P50_MS
        tp_ok = row["ratio_vs_alone"] >= AIM_THROUGHPUT_RATIO
        out.append(
            f"{row['label']}: added p50 {row['added_p50_ms']:+.3f} ms (aim <= {AIM_ADDED_P50_MS} ms: "
            f"{'met' if p50_ok else 'NOT met'}), throughput {100 * row['ratio_vs_alone']:.0f} % of Envoy alone "
            f"(aim >= {100 * AIM_THROUGHPUT_RATIO:.0f} %: {'met' if tp_ok else 'NOT met'})"
        )
    return out


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead",
        description="Added latency and lost throughput of Envoy + picker against Envoy alone, on this machine.",
    )
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per measurement (c=1 latency, c=N throughput); default 10")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per measurement instead of a duration (asyncio generator only; wrk always "
                             "runs for --duration)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections for the throughput run (16)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unrecorded load before each mode (2)")
    parser.add_argument("--modes", default=DEFAULT_MODES,
                        help=f"comma-separated, from {', '.join(MODES)} (default {DEFAULT_MODES})")
    parser.add_argument("--rounds", type=int, default=1, help="measure every mode this many times, interleaved")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk if installed (auto), or the asyncio client")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1; CPU is scarce)")
    parser.add_argument("--replicas", type=int, default=3, help="pool endpoints (backend listeners), default 3")
    parser.add_argument("--noisy-retries", type=int, default=2,
                        help="repeat a measurement this many times if other processes used >= 10%% of a core "
                             "during it (default 2)")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="before each measurement wait up to this many seconds for other processes to go "
                             "quiet (default 30; 0 = do not wait)")
    parser.add_argument("--profile", action="store_true",
                        help="after measuring, sample the picker with py-spy during an extra throughput run")
    parser.add_argument("--output", default="bench-results/overhead.json", help="JSON results file")
    parser.add_argument("--keep-work-dir", action="store_true", help="keep configs and logs (printed path)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    args.modes = list(dict.fromkeys(modes))
    if args.duration <= 0 or args.duration > 600:
        parser.error("--duration must be in (0, 600] seconds")
    if args.requests is not None and not 1 <= args.requests <= 10_000_000:
        parser.error("--requests must be between 1 and 10,000,000")
    if not 1 <= args.concurrency <= 1024:
        parser.error("--concurrency must be between 1 and 1024")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    if not 0 <= args.noisy_retries <= 10 or not 0 <= args.quiet_wait <= 600:
        parser.error("--noisy-retries must be in [0, 10] and --quiet-wait in [0, 600]")
    return args


async def run(args: argparse.Namespace, *, progress: Callable[[str], None] = say) -> dict[str, Any]:
    work_dir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    generator = choose_generator(args.generator, wrk_threads=args.wrk_threads, work_dir=work_dir)
    generator_version = await generator.version()
    progress(f"load generator: {generator.name} ({generator_version})")
    if generator.name == "wrk" and args.requests is not None:
        progress("note: wrk runs by duration; --requests is ignored (use --generator python for a fixed count)")
    if generator.name != "wrk":
        progress(f"note: the asyncio client shares the {os.cpu_count()} cores with Envoy and the picker and may be "
                 "the bottleneck at high concurrency; install wrk for trustworthy throughput numbers")
    py_spy = find_py_spy() if args.profile else None
    if args.profile and py_spy is None:
        progress("note: --profile needs py-spy (.venv/bin/pip install py-spy); skipping the profile")

    facts = {
        "code": code_version(),
        "machine": machine_facts(),
        "versions": {
            "envoy": envoy_version(),
            "python": platform.python_version(),
            "grpcio": package_version("grpcio"),
            "protobuf": package_version("protobuf"),
        },
        "generator": {"name": generator.name, "version": generator_version},
    }
    progress(f"machine: {facts['machine']}; versions: {facts['versions']}")
    stack = BenchStack(work_dir, args.replicas, args.modes)
    results: list[ModeResult] = []
    profiles: dict[str, Any] = {}
    started = time.monotonic()
    try:
        await stack.start()
        for round_no in range(1, args.rounds + 1):
            for mode in args.modes:
                progress(f"round {round_no}/{args.rounds}: {MODES[mode].label}")
                results.append(await measure_mode(stack, generator, mode, round_no, args))
        if py_spy is not None:
            for mode in args.modes:
                if MODES[mode].uses_picker:
                    progress(f"profiling the picker under {MODES[mode].label} (py-spy, {args.duration:.0f} s)")
                    summary = await profile_mode(stack, generator, mode, args, py_spy)
                    if summary is not None:
                        profiles[mode] = summary.to_dict()
        scrape_stats = await stack.scrape_stats()
    finally:
        await stack.stop()
        if args.keep_work_dir:
            progress(f"configs and logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    rows = summarise(results, args.modes)
    report = {
        "benchmark": "data-plane overhead",
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.overhead", *sys.argv[1:]]),
        "settings": {
            "duration_s": args.duration,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "modes": args.modes,
            "replicas": args.replicas,
            "request": {"path": REQUEST_PATH, "body": REQUEST_BODY.decode()},
            "backend": "Envoy direct_response, one listener per endpoint",
            "backend_metrics_page": stack.metrics_page_source,
            "picker_scrapes_at_end": scrape_stats,
            "picker": "TLS, --health-checking, FailClose, override_host pool",
        },
        **facts,
        "aim": {"added_p50_ms_max": AIM_ADDED_P50_MS, "throughput_ratio_min": AIM_THROUGHPUT_RATIO},
        "summary": rows,
        "runs": [r.to_dict() for r in results],
        "profiles": profiles,
    }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    tables = markdown_tables(report["summary"], _results_from(report), args.concurrency)
    print()
    print(f"Generator: {report['generator']['name']}; machine: {report['machine']['nproc']} cores "
          f"({report['machine']['cpu_model']}); Envoy {report['versions']['envoy']}, Python "
          f"{report['versions']['python']}, grpcio {report['versions']['grpcio']}")
    print()
    print(tables)
    print()
    for line in verdict(report["summary"]):
        print(line)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {output}")
    return 0


def _results_from(report: dict[str, Any]) -> list[ModeResult]:
    """Rebuild the per-run objects from the JSON report (for the per-round table)."""
    out = []
    for run_ in report["runs"]:
        out.append(ModeResult(
            mode=run_["mode"],
            round=run_["round"],
            latency=LoadResult(**run_["latency_c1"]),
            throughput=LoadResult(**run_["throughput"]),
            cpu_percent=run_["cpu_percent_during_throughput"],
            latency_cpu_percent=run_["cpu_percent_during_latency"],
            picker_streams=run_["ext_proc_streams_during_throughput"],
            upstream_requests=run_["upstream_requests_during_throughput"],
            noisy=run_["noisy"],
            attempts=run_["attempts"],
            ext_proc_counters=run_["ext_proc_counters_during_throughput"],
        ))  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
