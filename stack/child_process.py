"""A child process we started, its log file, and a bounded stop by PID.

Why this module exists: Envoy and the picker both run as child processes of the stack (and of the tests).
Both need the same care: output to a log file (no pipe to fill up and block the child), a readable tail of
that log when something fails, and a stop that signals only the PID we started — SIGTERM, then SIGKILL after
a bound — never a process found by name.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path


def log_tail(path: Path, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a log file, for error messages."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


_live: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Safety net if the owner never called stop() (e.g. a test run aborted): SIGKILL our own children.

    ``waitpid(WNOHANG)`` succeeds only for a child of this process that has not been reaped, so a PID that
    was already reaped (and possibly reused by someone else) is never signalled.
    """
    for managed in list(_live):
        pid = managed.pid
        if pid is None:
            continue
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done == 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


class ManagedProcess:
    """One child process: ``await start()``, ``await stop()``, ``kill()``; output appended to ``log_path``."""

    def __init__(
        self,
        command: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = [str(part) for part in command]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_tail(self, max_bytes: int = 4000) -> str:
        return log_tail(self.log_path, max_bytes)

    async def start(self) -> None:
        if self.running():
            raise RuntimeError(f"already running as PID {self.pid}: {self.command[0]}")
        log_fd = _open_log(self.log_path)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop children in order
            )
        finally:
            os.close(log_fd)
        _live.add(self)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to our PID if it is still running (e.g. SIGKILL to simulate a crash)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    async def wait(self, within: float) -> int | None:
        """Wait up to ``within`` seconds for the exit; the exit code, or None if still running."""
        if self.proc is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), within)
        return self.proc.returncode

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Safe to call twice; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            if await self.wait(grace) is None:
                self.kill()
                await self.wait(5.0)
        return self.proc.returncode
