"""Sample the picker with py-spy during load and say which Python frames the time goes to.

Why this module exists: the overhead benchmark tells *how much* the picker costs; to know *where* (gRPC
plumbing, protobuf, our session code, metrics) one samples the running picker. py-spy is not a project
dependency (``pip install py-spy`` into the venv to use ``--profile``); it attaches to the picker PID from
outside, in non-blocking mode so it does not pause the process, and writes collapsed stacks, which are
summarised here as "self" (the innermost Python frame) and "inclusive" (anywhere on the stack) shares of the
samples, and self time grouped by area (our code, gRPC, asyncio, metrics).

Sampling uses ``--gil``: only the thread holding the GIL is recorded, which is what limits a single Python
process. Only Python frames are seen (the gRPC aio machinery is Cython without Python frames): time spent in
gRPC's Cython code run as an event-loop callback appears as self time of ``Handle._run (asyncio/events.py)``,
and the receive/send coroutines of a stream as self time on the ``async for``/``yield`` lines of the
servicer. Time in gRPC's C-core threads without the GIL (TLS, HTTP/2 framing, polling) is not sampled; it
shows in the per-process CPU accounting of the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py:123)``; paths under site-packages trimmed."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    line = f":{match['line']}" if match["line"] else ""
    return f"{match['func']} ({file}{line})"


# Self time by area: the first matching marker in the innermost frame's text names the area.
_AREAS: tuple[tuple[str, str], ...] = (
    ("extproc/servicer.py", "gRPC aio stream read/write (Cython, on the servicer's async for / yield)"),
    ("extproc/", "picker: extproc (session, messages, response observer)"),
    ("endpoint_picker/", "picker: director, scheduling, request parsing, metrics glue"),
    ("prometheus_client", "prometheus_client"),
    ("grpc", "gRPC Python"),
    ("asyncio/events.py", "gRPC Cython callbacks run by the event loop (Handle._run)"),
    ("asyncio/", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
    ("google/protobuf", "protobuf"),
)


def _without_line(frame: str) -> str:
    """``func (file.py:12)`` -> ``func (file.py)``: inclusive time is per function, not per line."""
    head, sep, tail = frame.rpartition(":")
    return f"{head})" if sep and tail.rstrip(")").isdigit() else frame


def _is_ours(frame: str) -> bool:
    """A project function below the process entry points (those are on every stack)."""
    if "(extproc/" not in frame and "(endpoint_picker/" not in frame:
        return False
    return "endpoint_picker/__main__.py" not in frame and "endpoint_picker/cli/" not in frame


def _area(frame: str) -> str:
    for marker, area in _AREAS:
        if marker in frame:
            return area
    return "other"


@dataclass
class ProfileSummary:
    samples: int
    expected_samples: int
    top_self: list[tuple[str, float]] = field(default_factory=list)
    top_inclusive: list[tuple[str, float]] = field(default_factory=list)
    by_area: list[tuple[str, float]] = field(default_factory=list)
    raw_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "expected_samples": self.expected_samples,
            "top_self": [{"frame": f, "share": s} for f, s in self.top_self],
            "top_inclusive": [{"frame": f, "share": s} for f, s in self.top_inclusive],
            "self_by_area": [{"area": a, "share": s} for a, s in self.by_area],
            "raw_path": self.raw_path,
        }

    def render(self) -> str:
        busy = self.samples / self.expected_samples if self.expected_samples else 0.0
        lines = [f"  {self.samples} samples holding the GIL ({busy:.0%} of sampling instants)"]
        lines.append("  self time by area:")
        lines.extend(f"    {share:6.1%}  {area}" for area, share in self.by_area)
        lines.append("  self (innermost Python frame):")
        lines.extend(f"    {share:6.1%}  {frame}" for frame, share in self.top_self)
        lines.append("  inclusive, project functions only (anywhere on the stack):")
        lines.extend(f"    {share:6.1%}  {frame}" for frame, share in self.top_inclusive)
        return "\n".join(lines)


def summarise(raw: Path, *, expected_samples: int, top: int = 15) -> ProfileSummary:
    """Summarise py-spy ``--format raw`` output (``frame;frame;... count`` per line, outermost first)."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ") and
                  not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        areas[_area(frames[-1])] += count
        for function in {_without_line(f) for f in frames if _is_ours(f)}:
            inclusive[function] += count
    return ProfileSummary(
        samples=total,
        expected_samples=expected_samples,
        top_self=[(f, c / total) for f, c in self_counts.most_common(top)] if total else [],
        top_inclusive=[(f, c / total) for f, c in inclusive.most_common(top)] if total else [],
        by_area=[(a, c / total) for a, c in areas.most_common()] if total else [],
        raw_path=str(raw),
    )


class PySpyRecorder:
    """``py-spy record`` on one PID for a bounded time; start before the load, ``finish()`` after it."""

    def __init__(self, binary: str, pid: int, output: Path, *, duration: float, rate: int = 250) -> None:
        self.output = output
        self.rate = rate
        self.duration = max(1, round(duration))
        self._command = [
            binary, "record", "--pid", str(pid), "--duration", str(self.duration), "--rate", str(rate),
            "--format", "raw", "--output", str(output), "--nonblocking", "--gil",
        ]  # fmt: skip
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            *self._command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )

    async def finish(self) -> ProfileSummary | None:
        if self._proc is None:
            return None
        try:
            _, err = await asyncio.wait_for(self._proc.communicate(), self.duration + 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()  # our own child, by PID
            await self._proc.wait()
            return None
        if self._proc.returncode != 0 or not self.output.exists():
            print(f"[bench] py-spy failed (exit {self._proc.returncode}): {err.decode()[-1000:]}", flush=True)
            return None
        return summarise(self.output, expected_samples=self.duration * self.rate)
