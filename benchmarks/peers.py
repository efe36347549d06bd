"""Install and run the peer LLM routers the benchmark compares the picker with: sglang-router and vllm-router.

Why this module exists: a comparison is only fair when every router runs the same way each time -- a pinned
version in its own venv (the two ship clashing native libraries and must never share one), loopback-only
addresses and fresh ports (both default to API 30000 / metrics 29000, sglang binds 0.0.0.0 and panics on a
metrics-port clash), a quiet log level (vllm-router logs every routing decision at INFO), a short health-check
interval, and a readiness check that waits until the router itself reports every worker healthy rather than
a fixed sleep (sglang answers ``/health`` before any worker is registered; vllm lists configured workers as
healthy even when they are dead). See ``/work/shared/reference/peers.md`` sections 2-4 and 6.

Fairness defaults (applied to both routers, see ``PeerSpec.fair_args``):

- ``--log-level warn`` / ``warning``;
- ``--health-check-interval-secs 5`` (default 60) so a failed worker leaves the pool within seconds;
- ``--worker-startup-check-interval 1`` (default 30): vllm-router re-checks a worker that was not healthy at
  its first startup check only after this interval (observed: ready 29.6 s after a worker came up 1 s late,
  1.7 s with 1), and sglang's ``power_of_two`` polls ``/get_load`` at it (peers.md gotcha 7);
- the routers' own ``cache_aware`` thresholds (``--cache-threshold 0.3 --balance-abs-threshold 64
  --balance-rel-threshold 1.5``): nothing is passed, so each router runs as shipped;
- retries (5, backoff from 50 ms) and the circuit breaker (10 failures) stay at their defaults; both change
  what a failure run measures, so failure benchmarks should decide deliberately, e.g.
  ``extra_args=["--disable-retries", "--disable-circuit-breaker"]``.

Anything else goes through ``extra_args``, appended last: both launchers parse with Python argparse, so for a
flag that takes one value the last occurrence wins and ``extra_args`` can override a fair default. E.g.
``MATCHED_THRESHOLDS`` (``--balance-abs-threshold 8``) makes the cache-aware escape to the least-loaded worker
trigger at a small load gap (peers.md section 6, gotcha 3: with the shipped 64 / 1.5, sglang sends every fresh
prefix to one worker at low concurrency). Flags PeerRouter owns (host, ports, workers, policy, log level) are
refused in ``extra_args``.

vllm-router's ``cache_aware`` asks *every* worker for ``/v1/completions/render`` (or ``/tokenize`` when
render 404s) on every request to get token ids; the simulator serves both, and ``prefix_routing_counts``
reads ``vllm_router_prefix_routing_decisions_total`` from its metrics port so a run can check that prefix
routing really happened (an ``outcome="missing_tokens"`` count means it silently fell back to least-load).

Command line::

    python -m benchmarks.peers install [--cache-dir D] [name ...]   # one venv per router (~30 s, ~140 MB each)
    python -m benchmarks.peers smoke [--cache-dir D] [name ...]     # each router against 3 simulated servers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from stack.ports import free_port

__all__ = [
    "DEFAULT_CACHE_DIR",
    "MATCHED_THRESHOLDS",
    "PEERS",
    "SERVED_BY",
    "PeerRouter",
    "PeerSpec",
    "PeerStartError",
    "Reply",
    "build_command",
    "counter_by_label",
    "ensure_installed",
    "installed_python",
    "main",
    "not_ready",
    "parse_workers",
    "prefix_routing_counts",
    "send_request",
    "smoke",
    "token_source_counts",
]

DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / ".bench" / "peers"
# A documented alternative to the shipped thresholds (peers.md section 6, gotcha 3): pass as extra_args.
MATCHED_THRESHOLDS: tuple[str, ...] = ("--balance-abs-threshold", "8")

_STAMP = "installed-pin.txt"
_PIP_TIMEOUT_S = 900.0
_LOG_TAIL_BYTES = 4000


@dataclass(frozen=True)
class PeerSpec:
    """One peer router: what to install and how to launch it."""

    name: str
    pin: str  # pip requirement, exact version
    module: str  # launched as ``<venv python> -m <module>`` so the PID we hold is the router itself
    log_level: str  # the router's own spelling of "warnings and errors only"
    fair_args: tuple[str, ...] = ("--health-check-interval-secs", "5", "--worker-startup-check-interval", "1")


PEERS: dict[str, PeerSpec] = {
    "sglang-router": PeerSpec(name="sglang-router", pin="sglang-router==0.3.2",
                              module="sglang_router.launch_router", log_level="warn"),
    "vllm-router": PeerSpec(name="vllm-router", pin="vllm-router==0.1.17",
                            module="vllm_router.launch_router", log_level="warning"),
}


def _spec(name: str) -> PeerSpec:
    try:
        return PEERS[name]
    except KeyError:
        raise ValueError(f"unknown peer router {name!r}; known: {', '.join(PEERS)}") from None


def _venv_python(cache_dir: Path, name: str) -> Path:
    return cache_dir / name / "venv" / "bin" / "python"


def _stamp_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / name / _STAMP


def installed_python(name: str, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path | None:
    """The venv python of an existing install of ``name``'s pinned version, or None (installs nothing)."""
    spec = _spec(name)
    python = _venv_python(cache_dir, name)
    stamp = _stamp_path(cache_dir, name)
    try:
        pinned = stamp.read_text().strip()
    except OSError:
        return None
    return python if pinned == spec.pin and python.exists() else None


def _tail(path: Path, limit: int = _LOG_TAIL_BYTES, since: int = 0) -> str:
    """The last ``limit`` bytes of a log, not before offset ``since``."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(since, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<no log: {exc}>"


def _run_logged(cmd: Sequence[str], log: Path, timeout: float) -> None:
    with log.open("ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        try:
            done = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{cmd[0]} timed out after {timeout:.0f} s; log {log}:\n{_tail(log)}") from None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {done.returncode}; log {log}:\n{_tail(log)}")


def ensure_installed(name: str, cache_dir: Path = DEFAULT_CACHE_DIR,
                     progress: Callable[[str], None] = print) -> Path:
    """Create ``cache_dir/<name>/venv`` on first use (``python -m venv`` + ``pip install <pin>``) and return the
    venv's python; reuse it when the stamp file says the pin is already installed.

    The venv is made by the interpreter running this code (``sys.executable``; from inside a venv, ``venv``
    bases the new one on the same base interpreter). pip's output goes to ``cache_dir/<name>/install.log``.
    The stamp is written only after pip succeeded, so an interrupted install is redone next time. An exclusive
    lock on ``cache_dir/<name>/.lock`` keeps concurrent callers (parallel benchmark runs) from installing into
    the same venv at once; a waiting caller then finds the stamp and reuses the venv.
    """
    spec = _spec(name)
    found = installed_python(name, cache_dir)
    if found is not None:
        progress(f"{name}: {spec.pin} already installed in {found.parent.parent}")
        return found
    home = cache_dir / name
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("wb") as lock:
        # Blocks at most as long as the holder's venv + pip steps, each bounded by _PIP_TIMEOUT_S.
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = installed_python(name, cache_dir)
        if found is not None:
            progress(f"{name}: {spec.pin} installed meanwhile in {found.parent.parent}")
            return found
        return _install(spec, cache_dir, progress)


def _install(spec: PeerSpec, cache_dir: Path, progress: Callable[[str], None]) -> Path:
    name = spec.name
    home = cache_dir / name
    python = _venv_python(cache_dir, name)
    log = home / "install.log"
    stamp = _stamp_path(cache_dir, name)
    stamp.unlink(missing_ok=True)
    if not python.exists():
        progress(f"{name}: creating venv {python.parent.parent}")
        _run_logged([sys.executable, "-m", "venv", str(python.parent.parent)], log, timeout=_PIP_TIMEOUT_S)
    progress(f"{name}: pip install {spec.pin} (log: {log})")
    _run_logged([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", spec.pin],
                log, timeout=_PIP_TIMEOUT_S)
    stamp.write_text(spec.pin + "\n")
    progress(f"{name}: installed {spec.pin}")
    return python


# --- launching -------------------------------------------------------------------------------------------

# Flags PeerRouter owns: overriding them could bind a public address, clash on a port or change the pool.
_MANAGED_FLAGS = frozenset({"--host", "--port", "--prometheus-host", "--prometheus-port", "--worker-urls",
                            "--policy", "--log-level"})
# reqwest (inside both routers) honours these; the pool is on loopback and must be reached directly.
_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_POLL_INTERVAL_S = 0.05
_LAUNCH_ATTEMPTS = 3
# What both routers print (and exit 1) when their API or metrics port is taken.
_PORT_CLASH = "Address already in use"
_HTTP_TIMEOUT_S = 1.0


class PeerStartError(RuntimeError):
    """A peer router exited early or did not report every worker healthy in time (message has its log tail)."""

    def __init__(self, message: str, *, exited: bool = False) -> None:
        super().__init__(message)
        self.exited = exited


def _check_loopback(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"peer routers bind loopback addresses only, not {host!r}")


def build_command(spec: PeerSpec, python: Path, worker_urls: Sequence[str], *, policy: str, host: str,
                  port: int, metrics_port: int, extra_args: Sequence[str] = ()) -> list[str]:
    """The router's argv: API and metrics on ``host`` (loopback), the fairness defaults, then ``extra_args``."""
    _check_loopback(host)
    if not worker_urls:
        raise ValueError("a peer router needs at least one worker URL")
    if port == metrics_port:
        raise ValueError("API and metrics ports must differ")
    for arg in extra_args:
        flag = arg.split("=", 1)[0]
        if flag in _MANAGED_FLAGS:
            raise ValueError(f"{flag} is set by PeerRouter; pass it as a constructor argument instead")
    return [
        str(python), "-m", spec.module,
        "--host", host, "--port", str(port),
        "--worker-urls", *worker_urls,
        "--policy", policy,
        "--prometheus-host", host, "--prometheus-port", str(metrics_port),
        "--log-level", spec.log_level,
        *spec.fair_args,
        *extra_args,
    ]


def parse_workers(body: Any) -> dict[str, bool]:
    """``GET /workers`` of either router -> {worker URL: is_healthy}.

    Both answer ``{"workers": [{"url": ..., "is_healthy": ..., "load": ..., ...}], "total": N, "stats": {...}}``
    (sglang adds ``id`` and ``metadata`` from ``/server_info``; vllm reports ``model_id: "unknown"``).
    sglang lists a worker only once it registered it; vllm lists every configured worker from the start.
    """
    if not isinstance(body, dict) or not isinstance(body.get("workers"), list):
        raise ValueError(f"not a /workers answer: {str(body)[:200]}")
    status: dict[str, bool] = {}
    for worker in body["workers"]:
        if isinstance(worker, dict) and isinstance(worker.get("url"), str):
            status[worker["url"].rstrip("/")] = worker.get("is_healthy") is True
    return status


def not_ready(status: dict[str, bool], expected: Sequence[str]) -> list[str]:
    """The expected worker URLs that ``/workers`` does not (yet) list as healthy."""
    return [url for url in expected if not status.get(url.rstrip("/"), False)]


def counter_by_label(metrics_text: str, sample: str, label: str) -> dict[str, float]:
    """Sum the samples named ``sample`` of a Prometheus page by the value of ``label``."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == sample and label in s.labels:
                totals[s.labels[label]] = totals.get(s.labels[label], 0.0) + s.value
    return totals


def prefix_routing_counts(metrics_text: str) -> dict[str, float]:
    """vllm-router's prefix-routing outcomes by ``outcome`` (``prefix_hit``, ``prefix_miss``,
    ``missing_tokens`` = no token ids from render/tokenize, so the request was routed by load alone)."""
    return counter_by_label(metrics_text, "vllm_router_prefix_routing_decisions_total", "outcome")


def token_source_counts(metrics_text: str) -> dict[str, float]:
    """How vllm-router got token ids for routing, by ``result`` (``render``, ``tokenize``, failures)."""
    return counter_by_label(metrics_text, "vllm_router_kv_routing_inputs_total", "result")


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _PROXY_ENV}


class PeerRouter:
    """One peer router process on fresh loopback ports, in front of ``worker_urls``.

    ``await start()`` launches it (no shell) and returns once ``GET /workers`` lists every worker healthy and
    every worker answers ``/health`` itself (vllm-router lists dead workers as healthy until its health checks
    fail); ``await stop()`` sends SIGTERM to the recorded PID and SIGKILL after ``grace``. Also an async
    context manager (start on enter, stop on exit).
    """

    def __init__(self, name: str, python: Path, worker_urls: Sequence[str], *, policy: str = "cache_aware",
                 extra_args: Sequence[str] = (), log_path: Path, host: str = "127.0.0.1") -> None:
        _check_loopback(host)
        self.spec = _spec(name)
        self.name = name
        self.python = python
        self.worker_urls = [u.rstrip("/") for u in worker_urls]
        self.policy = policy
        self.extra_args = tuple(extra_args)
        self.log_path = log_path
        self.host = host
        self.port = 0
        self.metrics_port = 0
        self.url = ""
        self.metrics_url = ""
        self.pid: int | None = None
        self.command: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        # Validate extra_args now rather than at start().
        build_command(self.spec, python, self.worker_urls, policy=policy, host=host, port=1, metrics_port=2,
                      extra_args=self.extra_args)

    async def __aenter__(self) -> PeerRouter:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        if self._log is not None:
            self._log.flush()
        return _tail(self.log_path, limit)

    async def start(self, ready_within: float = 60.0) -> None:
        """Launch on fresh loopback ports and return once every worker is healthy (see the class docstring).

        Raises ``PeerStartError`` (quoting the log tail) if the process exits first or ``ready_within`` seconds
        pass; the process is stopped before raising. A port taken between picking and binding ("Address already
        in use": another process won the race) is retried on new ports, at most ``_LAUNCH_ATTEMPTS`` times
        within the same ``ready_within``.
        """
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")
        # Append mode: the router writes through the same open file, so every write lands at the end.
        self._log = self.log_path.open("ab")
        deadline = asyncio.get_running_loop().time() + ready_within
        try:
            for attempt in range(1, _LAUNCH_ATTEMPTS + 1):
                log_start = await self._launch()
                try:
                    await self._wait_ready(deadline, ready_within)
                    return
                except PeerStartError as exc:
                    clash = exc.exited and _PORT_CLASH in _tail(self.log_path, since=log_start)
                    if not clash or attempt == _LAUNCH_ATTEMPTS:
                        raise
                    self._log.write(f"--- ports {self.port}/{self.metrics_port} taken, new ports ---\n".encode())
        except BaseException:
            await self.stop()
            raise

    async def _launch(self) -> int:
        """Start the process on new ports; the log offset where its output begins."""
        assert self._log is not None
        self.port = free_port(self.host)
        self.metrics_port = free_port(self.host)
        self.url = f"http://{self.host}:{self.port}"
        self.metrics_url = f"http://{self.host}:{self.metrics_port}/metrics"
        self.command = build_command(self.spec, self.python, self.worker_urls, policy=self.policy, host=self.host,
                                     port=self.port, metrics_port=self.metrics_port, extra_args=self.extra_args)
        self._log.flush()
        offset = os.fstat(self._log.fileno()).st_size
        self._log.write(("$ " + " ".join(self.command) + "\n").encode())
        self._log.flush()
        self._proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            env=_child_env())
        self.pid = self._proc.pid
        return offset

    async def _wait_ready(self, deadline: float, ready_within: float) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        exited = asyncio.ensure_future(self._proc.wait())
        healthy_direct: set[str] = set()
        last = "no answer yet"
        timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for _ in range(int(ready_within / _POLL_INTERVAL_S) + 2):
                    if exited.done():
                        raise PeerStartError(
                            f"{self.name} (pid {self.pid}) exited with code {exited.result()} before it was ready;"
                            f" log {self.log_path}:\n{self.log_tail()}", exited=True)
                    missing, last = await self._poll(session, healthy_direct)
                    if not missing:
                        return
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    # Wakes early if the process exits; otherwise this is the poll interval.
                    await asyncio.wait({exited}, timeout=min(_POLL_INTERVAL_S, remaining))
        finally:
            exited.cancel()
        raise PeerStartError(
            f"{self.name} (pid {self.pid}) did not report every worker healthy within {ready_within:.1f} s"
            f" ({last}); log {self.log_path}:\n{self.log_tail()}")

    async def _poll(self, session: aiohttp.ClientSession, healthy_direct: set[str]) -> tuple[list[str], str]:
        """(workers not ready yet, a description of the last answer)."""
        for worker in self.worker_urls:
            if worker in healthy_direct:
                continue
            try:
                async with session.get(worker + "/health") as resp:
                    if resp.status == 200:
                        healthy_direct.add(worker)
            except (aiohttp.ClientError, TimeoutError):
                pass
        direct_missing = [w for w in self.worker_urls if w not in healthy_direct]
        if direct_missing:
            return direct_missing, f"workers not answering /health themselves: {direct_missing}"
        try:
            async with session.get(self.url + "/workers") as resp:
                if resp.status != 200:
                    return list(self.worker_urls), f"GET /workers -> {resp.status}"
                status = parse_workers(orjson.loads(await resp.read()))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return list(self.worker_urls), f"GET /workers failed: {type(exc).__name__} {exc}"
        missing = not_ready(status, self.worker_urls)
        return missing, f"/workers: {status}; not yet healthy: {missing}"

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the recorded PID, SIGKILL after ``grace`` seconds; the exit code (None if never started)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.wait_for(proc.wait(), 10.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode if proc is not None else None

    async def metrics_text(self) -> str:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                    session.get(self.metrics_url) as resp):
            resp.raise_for_status()
            return await resp.text()


# --- requests (smoke test, integration tests) ------------------------------------------------------------

SERVED_BY = "x-served-by"  # the simulator names the server that answered in this response header


@dataclass
class Reply:
    status: int
    served_by: str | None  # the simulator's x-served-by header as relayed by the router
    events: int  # SSE data events before [DONE] (streaming), else 1 (0 on an error status)
    text: str  # generated text, or the error body
    complete: bool  # non-streamed: status 200; streamed: status 200 and ``data: [DONE]`` arrived


async def send_request(session: aiohttp.ClientSession, base_url: str, *, model: str, prompt: str, chat: bool,
                       stream: bool, max_tokens: int = 4) -> Reply:
    """One OpenAI completions / chat request; streamed answers are read to ``data: [DONE]``."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": stream}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    path = "/v1/chat/completions" if chat else "/v1/completions"
    async with session.post(base_url + path, json=body) as resp:
        served_by = resp.headers.get(SERVED_BY)
        if resp.status != 200 or not stream:
            raw = await resp.read()
            if resp.status != 200:
                return Reply(resp.status, served_by, 0, raw.decode("utf-8", "replace"), False)
            choice = orjson.loads(raw)["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
            return Reply(200, served_by, 1, text or "", True)
        events, parts, done = 0, [], False
        async for line in resp.content:
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[len(b"data: "):]
            if data == b"[DONE]":
                done = True
                break
            events += 1
            for choice in orjson.loads(data).get("choices", []):
                parts.append((choice.get("delta", {}).get("content") or "") if chat else choice.get("text", ""))
        return Reply(200, served_by, events, "".join(parts), done)


# --- command line ------------------------------------------------------------------------------------------

_SMOKE_PREFIXES = [
    f"Group {g}: You are a careful assistant. " + " ".join(f"fact-{g}-{i} is {i * (g + 3)}." for i in range(60))
    for g in range(4)
]


class _DropHttp2Probes(logging.Filter):
    """sglang-router probes each worker for gRPC (HTTP/2 preface) once; the sims' aiohttp logs a harmless error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and "PRI/Upgrade" in str(exc))


async def smoke_router(router: PeerRouter, model: str, requests: int) -> tuple[dict[int, list[str]], int]:
    """Send ``requests`` requests in waves of one per prefix group, sent together (so the router sees
    in-flight load when it places fresh prefixes), cycling completions/chat and streamed/not.
    Returns ({group: servers that answered, in order}, number of incomplete replies)."""
    groups = len(_SMOKE_PREFIXES)
    spread: dict[int, list[str]] = {g: [] for g in range(groups)}
    failures = 0
    # One connection per request (peers.md gotcha 1: sglang + keep-alive + streaming adds ~40 ms).
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        for wave_start in range(0, requests, groups):
            wave = range(wave_start, min(requests, wave_start + groups))
            replies = await asyncio.gather(*(
                send_request(session, router.url, model=model, chat=bool(i // groups & 1),
                             stream=bool(i // groups & 2), prompt=f"{_SMOKE_PREFIXES[i % groups]} Question {i}?",
                             max_tokens=16)
                for i in wave))
            for i, reply in zip(wave, replies, strict=True):
                if not reply.complete:
                    failures += 1
                    print(f"  request {i}: {reply.status} incomplete: {reply.text[:200]}")
                spread[i % groups].append(reply.served_by or "?")
    return spread, failures


async def smoke(names: Sequence[str], cache_dir: Path, requests: int = 20, log_dir: Path | None = None) -> int:
    """Start each router in front of 3 simulated servers, send ``requests`` requests (see ``smoke_router``),
    print which server answered each prefix group, stop it; 0 if every reply was complete."""
    from simulator.server import DEFAULT_MODEL, SimFleet, SimServerConfig, fleet_configs, loopback_hosts

    logging.getLogger("aiohttp.server").addFilter(_DropHttp2Probes())
    log_dir = log_dir or cache_dir / "logs"
    pythons = {name: ensure_installed(name, cache_dir) for name in names}
    fleet = await SimFleet(fleet_configs(SimServerConfig(time_scale=10.0), 3, hosts=loopback_hosts(3))).start()
    failures = 0
    loop = asyncio.get_running_loop()
    try:
        urls = [s.url for s in fleet.servers]
        print(f"sims: {', '.join(f'{s.name}={s.url}' for s in fleet.servers)}")
        for name, python in pythons.items():
            router = PeerRouter(name, python, urls, log_path=log_dir / f"{name}.log")
            t0 = loop.time()
            await router.start()
            try:
                print(f"\n{name}: pid {router.pid}, {router.url}, ready in {loop.time() - t0:.2f} s")
                spread, failed = await smoke_router(router, DEFAULT_MODEL, requests)
                failures += failed
                for group, servers in spread.items():
                    print(f"  prefix group {group}: {' '.join(servers)}")
                totals: dict[str, int] = {}
                for servers in spread.values():
                    for server in servers:
                        totals[server] = totals.get(server, 0) + 1
                print(f"  per server: {dict(sorted(totals.items()))}")
                if name == "vllm-router":
                    text = await router.metrics_text()
                    print(f"  prefix routing: {prefix_routing_counts(text)};"
                          f" token ids from: {token_source_counts(text)}")
            finally:
                code = await router.stop()
            print(f"  stopped pid {router.pid}, exit code {code}; log {router.log_path}")
    finally:
        await fleet.stop()
    print(f"\n{'OK' if failures == 0 else f'{failures} incomplete replies'}")
    return 0 if failures == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (("install", "create the venvs (reused when the pinned version is there)"),
                               ("smoke", "run each router against 3 simulated servers")):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
        p.add_argument("names", nargs="*", metavar="name", help=f"routers (default: all of {', '.join(PEERS)})")
    sub.choices["smoke"].add_argument("--requests", type=int, default=20)
    args = parser.parse_args(argv)
    names = args.names or list(PEERS)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        parser.error(f"unknown router(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    if args.command == "install":
        for name in names:
            ensure_installed(name, args.cache_dir)
        return 0
    return asyncio.run(smoke(names, args.cache_dir, requests=args.requests))


if __name__ == "__main__":
    sys.exit(main())
