"""HTTP/1.1 keep-alive load generators for the overhead benchmark: ``wrk`` when installed, else pure asyncio.

Why this module exists: on a 2-core machine that also runs the gateway Envoy, the backend Envoy and the
picker, the load generator competes for the same CPU, so it must be as cheap per request as possible or it
becomes the bottleneck it is supposed to measure. ``wrk`` (C, epoll, one thread) costs a few microseconds per
request; a Python client costs tens. The benchmark therefore uses ``wrk`` (POST body via a Lua script, its
latency histogram read back through the script's ``done`` hook) and falls back to a raw-socket asyncio
client — no HTTP library, one pre-encoded request, minimal response parsing — so that it still runs where
``wrk`` is absent. Which generator ran is part of every result.

Both generators measure the same thing: N keep-alive connections, each sending the same POST and waiting for
the whole response before the next one (closed loop); latency is from writing the request to having read the
last body byte. Runs are bounded by duration (or, for the asyncio client, by request count) and by a hard
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import shutil
import tempfile
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

# Hard bound on one run beyond its nominal duration (connection set-up, slow drain, wrk start-up).
_RUN_SLACK_S = 30.0
# The asyncio client gives up after this many socket errors in one run instead of spinning on a dead gateway.
_MAX_SOCKET_ERRORS = 100


@dataclass(frozen=True)
class LoadSpec:
    """One closed-loop run: ``concurrency`` connections posting ``body`` to ``url``."""

    url: str
    body: bytes
    concurrency: int
    duration: float = 10.0
    # Stop after this many responses (asyncio client only; wrk always runs for ``duration``).
    requests: int | None = None
    content_type: str = "application/json"


@dataclass
class LoadResult:
    """What one run measured. Latencies in milliseconds; ``cpu_s`` is the generator's own CPU time."""

    generator: str
    concurrency: int
    requests: int
    duration_s: float
    rps: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    cpu_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LoadGenerator(Protocol):
    name: str

    async def version(self) -> str: ...

    async def run(self, spec: LoadSpec) -> LoadResult: ...


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- wrk ----------------------------------------------------------------------------------------------------

# wrk's Lua: a static POST (no request() hook, so wrk keeps its fast path) and a done() hook printing the
# summary and latency percentiles (microseconds) as one JSON line.
_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = {content_type}

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"mean_us":%.3f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


def _lua_string(data: bytes) -> str:
    """A Lua string literal for arbitrary bytes (decimal escapes, safe for any content)."""
    return '"' + "".join(f"\\{b}" for b in data) + '"'


class WrkGenerator:
    """``wrk`` with one thread per 16 connections at most (default 1: it is fast enough and leaves CPU)."""

    name = "wrk"

    def __init__(self, binary: str, *, threads: int = 1, work_dir: Path | None = None) -> None:
        self.binary = binary
        self.threads = max(1, threads)
        self._work_dir = work_dir or Path(tempfile.mkdtemp(prefix="bench-wrk-"))
        self.last_pid: int | None = None

    @classmethod
    def find(cls, **kwargs: Any) -> WrkGenerator | None:
        binary = shutil.which("wrk")
        return cls(binary, **kwargs) if binary else None

    async def version(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.binary, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 10.0)
        return out.decode(errors="replace").splitlines()[0].strip() if out else "wrk"

    def _script(self, spec: LoadSpec) -> Path:
        path = self._work_dir / "post.lua"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            _WRK_SCRIPT.format(body=_lua_string(spec.body), content_type=_lua_string(spec.content_type.encode()))
        )
        return path

    async def run(self, spec: LoadSpec) -> LoadResult:
        threads = min(self.threads, spec.concurrency)
        duration = max(1, round(spec.duration))
        command = [
            self.binary, "-t", str(threads), "-c", str(spec.concurrency), "-d", f"{duration}s",
            "--timeout", "5s", "-s", str(self._script(spec)), spec.url,
        ]  # fmt: skip
        cpu_before = _children_cpu()
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self.last_pid = proc.pid
        try:
            out, err = await asyncio.wait_for(proc.communicate(), duration + _RUN_SLACK_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # our own child, by PID
            await proc.wait()
            raise RuntimeError(f"wrk did not finish within {duration + _RUN_SLACK_S:.0f}s") from None
        cpu = _children_cpu() - cpu_before
        text = out.decode(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed (exit {proc.returncode}): {text[-2000:]} {err.decode()[-2000:]}")
        data = json.loads(line.removeprefix("BENCH_JSON "))
        seconds = data["duration_us"] / 1e6
        return LoadResult(
            generator=self.name,
            concurrency=spec.concurrency,
            requests=data["requests"],
            duration_s=seconds,
            rps=data["requests"] / seconds if seconds else 0.0,
            non_2xx=data["status"],
            socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            p999_ms=data["p999_us"] / 1000,
            mean_ms=data["mean_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            cpu_s=cpu,
        )


# --- asyncio fallback ---------------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response (content-length or chunked body); (status, server closes connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    close = b"\r\nconnection: close" in lower
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        length = int(lower[at + 17 : end])
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        for _ in range(1_000_000):  # bounded: a response of a million chunks is not what we send
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF; for the last chunk just the CRLF
            if size == 0:
                break
    else:
        await reader.read()  # no length: the body runs until the server closes
        close = True
    return status, close


def _percentile(sorted_ns: list[int], pct: float) -> float:
    """Nearest-rank percentile of sorted nanosecond samples, in milliseconds."""
    if not sorted_ns:
        return 0.0
    rank = max(1, min(len(sorted_ns), round(pct / 100 * len(sorted_ns) + 0.5)))
    return sorted_ns[rank - 1] / 1e6


class AsyncioGenerator:
    """Raw asyncio sockets, one pre-encoded request, keep-alive; in this process (its CPU counts as ours)."""

    name = "python-asyncio"

    async def version(self) -> str:
        return "asyncio raw-socket client (benchmarks/loadgen.py)"

    async def run(self, spec: LoadSpec) -> LoadResult:
        url = urllib.parse.urlsplit(spec.url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        request = (
            f"POST {url.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {spec.content_type}\r\n"
            f"Content-Length: {len(spec.body)}\r\n\r\n"
        ).encode() + spec.body
        latencies: list[int] = []
        counters = {"non_2xx": 0, "errors": 0, "budget": spec.requests if spec.requests is not None else -1}
        started = time.monotonic()
        deadline = started + spec.duration if spec.requests is None else started + spec.duration + _RUN_SLACK_S

        async def worker() -> None:
            reader: asyncio.StreamReader | None = None
            writer: asyncio.StreamWriter | None = None
            try:
                while time.monotonic() < deadline and counters["errors"] < _MAX_SOCKET_ERRORS:
                    if counters["budget"] == 0:
                        return
                    if counters["budget"] > 0:
                        counters["budget"] -= 1
                    try:
                        if writer is None:
                            reader, writer = await asyncio.open_connection(host, port)
                        assert reader is not None
                        t0 = time.perf_counter_ns()
                        writer.write(request)
                        status, close = await _read_response(reader)
                        latencies.append(time.perf_counter_ns() - t0)
                    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                        counters["errors"] += 1
                        close, status = True, 200
                    if not 200 <= status < 400:
                        counters["non_2xx"] += 1
                    if close and writer is not None:
                        writer.close()
                        reader = writer = None
            finally:
                if writer is not None:
                    writer.close()

        cpu_before = _self_cpu()
        tasks = [asyncio.ensure_future(worker()) for _ in range(spec.concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), (deadline - started) + _RUN_SLACK_S)
        except TimeoutError:
            raise RuntimeError("asyncio load generator did not finish in time") from None
        finally:
            for task in tasks:
                task.cancel()
        seconds = time.monotonic() - started
        cpu = _self_cpu() - cpu_before
        latencies.sort()
        n = len(latencies)
        return LoadResult(
            generator=self.name,
            concurrency=spec.concurrency,
            requests=n,
            duration_s=seconds,
            rps=n / seconds if seconds else 0.0,
            non_2xx=counters["non_2xx"],
            socket_errors=counters["errors"],
            p50_ms=_percentile(latencies, 50),
            p90_ms=_percentile(latencies, 90),
            p99_ms=_percentile(latencies, 99),
            p999_ms=_percentile(latencies, 99.9),
            mean_ms=(sum(latencies) / n / 1e6) if n else 0.0,
            max_ms=latencies[-1] / 1e6 if n else 0.0,
            cpu_s=cpu,
        )


def choose_generator(preference: str, *, wrk_threads: int = 1, work_dir: Path | None = None) -> LoadGenerator:
    """``auto``: wrk if on PATH, else the asyncio client. ``wrk`` fails if wrk is missing."""
    if preference in ("auto", "wrk"):
        wrk = WrkGenerator.find(threads=wrk_threads, work_dir=work_dir)
        if wrk is not None:
            return wrk
        if preference == "wrk":
            raise RuntimeError("wrk is not installed (apt-get install wrk), use --generator python")
    return AsyncioGenerator()
