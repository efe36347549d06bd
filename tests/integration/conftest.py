"""Fixtures for integration tests: a real Envoy, the picker process and stand-in model servers on loopback.

Why this file exists: every integration test module gets the same harness, built on
:class:`stack.background.BackgroundStack` — the stack runs on its own event-loop thread, so tests can be
plain functions or async functions with any loop scope and still share one gateway per module.

- ``gateway``: module-scoped, parametrised over body mode (FULL_DUPLEX_STREAMED, BUFFERED), picker TLS on,
  FailClose, 3 stand-ins. A module can change defaults with a module attribute, e.g.
  ``GATEWAY_OPTIONS = {"failure_mode": "FailOpen", "subset_hint": lambda eps: [eps[1].address]}`` or
  ``GATEWAY_OPTIONS = {"model_servers": "sim"}`` for simulated vLLM servers instead of stand-ins.
- ``gateway_factory``: module-scoped; ``gateway_factory(body_mode=..., start_picker=False, ...)`` starts an
  extra stack with any :class:`stack.gateway.StackOptions` fields; all are stopped at module end.
- ``fresh_gateway``: the same, function-scoped (stacks stopped when the test ends) for one-off setups.
- ``client``: a blocking :class:`stack.http_client.GatewayClient` for ``gateway``.

A failing test's report gets a section per stack it used: where every piece runs and the picker's log tail.
Every test collected under ``tests/integration`` is marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.background import BackgroundStack
from stack.envoy_bootstrap import BodyMode, FailureMode
from stack.gateway import StackOptions
from stack.http_client import GatewayClient

BODY_MODES = [BodyMode.FULL_DUPLEX_STREAMED, BodyMode.BUFFERED]
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _stacks_of(item: pytest.Item) -> list[BackgroundStack]:
    stacks: list[BackgroundStack] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, BackgroundStack):
            stacks.append(value)
        stacks.extend(getattr(value, "stacks", []))
    return stacks


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure, attach where every gateway piece runs and the picker's log tail to the report."""
    report = yield
    if report.failed and call.when == "call":
        for i, stack in enumerate(_stacks_of(item)):
            text = f"{stack.describe()}\n--- picker log tail ---\n{stack.picker_log_tail()}"
            report.sections.append((f"gateway stack {i}", text))
    return report


def _options(work_dir: Path, overrides: dict[str, Any]) -> StackOptions:
    settings: dict[str, Any] = {
        "replicas": 3,
        # Tests assert on the stand-ins' controls and records; a module asks for simulated vLLM servers with
        # GATEWAY_OPTIONS = {"model_servers": "sim", ...} (or gateway_factory(model_servers="sim")).
        "model_servers": "standin",
        "body_mode": BodyMode.FULL_DUPLEX_STREAMED,
        "failure_mode": FailureMode.FAIL_CLOSE,
        "picker_tls": True,
        "work_dir": work_dir,
    }
    settings.update(overrides)
    return StackOptions(**settings)


def _start(options: StackOptions) -> BackgroundStack:
    stack = BackgroundStack(options)
    stack.start()
    return stack


class _Factory:
    """``factory(**StackOptions fields) -> BackgroundStack``; remembers what it started."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.stacks: list[BackgroundStack] = []

    def __call__(self, **overrides: Any) -> BackgroundStack:
        stack = _start(_options(self._tmp.mktemp("gateway"), overrides))
        self.stacks.append(stack)
        return stack

    def stop_all(self) -> None:
        while self.stacks:
            self.stacks.pop().stop()


@pytest.fixture(scope="module", params=BODY_MODES, ids=lambda mode: str(mode))
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundStack]:
    overrides = dict(getattr(request.module, "GATEWAY_OPTIONS", {}))
    overrides["body_mode"] = request.param
    stack = _start(_options(tmp_path_factory.mktemp(f"gateway-{request.param}"), overrides))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def gateway_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., BackgroundStack]]:
    factory = _Factory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def fresh_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., BackgroundStack]]:
    factory = _Factory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def client(gateway: BackgroundStack) -> GatewayClient:
    return gateway.client()
