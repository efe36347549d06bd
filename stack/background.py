"""A :class:`~stack.gateway.GatewayStack` running on its own event-loop thread, driven synchronously.

Why this module exists: integration tests want one gateway per test module, but pytest-asyncio gives each
test its own event loop by default. Model servers served from a module-scoped loop would stall whenever that
loop is not the one running. Here the whole stack (the servers' aiohttp apps, process supervision) lives on a
dedicated thread with its own loop that is always running, and tests — sync or async, any loop scope — call
plain blocking methods. Envoy and the picker are separate processes either way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from simulator.server.server import SimServer
from stack.gateway import GatewayStack, StackOptions, StandinEndpoint
from stack.http_client import GatewayClient
from stack.picker_process import PickerPorts
from stack.standin_server import StandinServer

T = TypeVar("T")


class BackgroundStack:
    """``with BackgroundStack(StackOptions(...)) as stack:`` — blocking facade over a threaded GatewayStack."""

    def __init__(self, options: StackOptions | None = None, *, call_timeout: float = 120.0) -> None:
        self.stack = GatewayStack(options)
        self.call_timeout = call_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="gateway-stack-loop", daemon=True)
        self._started = False

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the stack's loop and wait for its result (bounded)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout or self.call_timeout)
        except TimeoutError:
            future.cancel()
            raise

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> BackgroundStack:
        if not self._thread.is_alive():
            self._thread.start()
        self._started = True
        try:
            self.call(self.stack.start())
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        if self._started and self._thread.is_alive():
            try:
                self.call(self.stack.stop())
            finally:
                self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> BackgroundStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- facts -------------------------------------------------------------------------------------------

    @property
    def options(self) -> StackOptions:
        return self.stack.options

    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    @property
    def subset_hint_url(self) -> str | None:
        return self.stack.subset_hint_url

    @property
    def subset_hint(self) -> list[str] | None:
        return self.stack.subset_hint

    @property
    def admin_url(self) -> str:
        return self.stack.admin_url

    @property
    def picker_ports(self) -> PickerPorts:
        return self.stack.picker_ports

    @property
    def picker_pid(self) -> int | None:
        return self.stack.picker_pid

    @property
    def endpoints(self) -> list[StandinEndpoint]:
        return self.stack.endpoints

    @property
    def standins(self) -> list[StandinServer]:
        return self.stack.standins

    def standin(self, name_or_address: str) -> StandinServer:
        return self.stack.standin(name_or_address)

    @property
    def sims(self) -> list[SimServer]:
        return self.stack.sims

    def sim(self, name_or_address: str) -> SimServer:
        return self.stack.sim(name_or_address)

    @property
    def model_name(self) -> str:
        return self.stack.model_name

    @property
    def access_log_path(self) -> Path:
        return self.stack.access_log_path

    @property
    def work_dir(self) -> Path:
        return self.stack.work_dir

    def describe(self) -> str:
        return self.stack.describe()

    def client(self, *, time_limit: float = 30.0) -> GatewayClient:
        """A blocking HTTP client for the main gateway listener."""
        return GatewayClient(self.gateway_url, time_limit=time_limit)

    def subset_hint_client(self, *, time_limit: float = 30.0) -> GatewayClient:
        """A blocking HTTP client for the subset-hint listener (needs ``StackOptions.subset_hint``)."""
        if self.subset_hint_url is None:
            raise RuntimeError("this stack has no subset-hint listener (StackOptions.subset_hint is None)")
        return GatewayClient(self.subset_hint_url, time_limit=time_limit)

    # --- actions -----------------------------------------------------------------------------------------

    def start_picker(self) -> None:
        self.call(self.stack.start_picker())

    def stop_picker(self, grace: float = 5.0) -> int | None:
        return self.call(self.stack.stop_picker(grace))

    def kill_picker(self) -> int | None:
        return self.call(self.stack.kill_picker())

    def restart_picker(self) -> None:
        self.call(self.stack.restart_picker())

    def wait_picker_in_envoy(self, *, healthy: bool, within: float = 15.0) -> None:
        self.call(self.stack.wait_picker_in_envoy(healthy=healthy, within=within))

    def picker_log_tail(self, max_bytes: int = 4000) -> str:
        return self.stack.picker.log_tail(max_bytes) if self.stack.picker else ""

    def envoy_stats(self, filter_regex: str = "") -> dict[str, int]:
        return self.call(self.stack.envoy_stats(filter_regex))

    def write_endpoints_file(self, endpoints: list[StandinEndpoint]) -> None:
        self.stack.write_endpoints_file(endpoints)
