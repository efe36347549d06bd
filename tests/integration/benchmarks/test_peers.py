"""The peer routers (sglang-router, vllm-router) really run in front of simulated vLLM servers.

Uses the installs in ``benchmarks.peers.DEFAULT_CACHE_DIR`` (``.bench/peers``), installing a router there on
first use (~30 s and ~140 MB each, from PyPI), as ``endpoint-picker bench`` does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

import benchmarks.peers as peers
from benchmarks.peers import (
    DEFAULT_CACHE_DIR,
    PEERS,
    PeerRouter,
    PeerStartError,
    ensure_installed,
    installed_python,
    parse_workers,
    prefix_routing_counts,
    send_request,
    smoke_router,
    token_source_counts,
)
from simulator.server import DEFAULT_MODEL, SimFleet, SimServerConfig, fleet_configs, loopback_hosts
from stack.ports import free_port, port_is_free

PROMPT = "Summarise the plot of a long novel about a lighthouse keeper and the sea. " * 8


def python_for(name: str) -> Path:
    python = installed_python(name, DEFAULT_CACHE_DIR)
    if python is None:  # first run on this checkout: install it (blocking is fine, nothing is in flight yet)
        python = ensure_installed(name, DEFAULT_CACHE_DIR, progress=lambda _message: None)
    return python


@pytest.fixture
async def sims() -> AsyncIterator[SimFleet]:
    # sglang-router's one-off gRPC probe reaches the sims as an HTTP/2 preface; aiohttp logs it as an error.
    drop_probes = peers._DropHttp2Probes()
    logging.getLogger("aiohttp.server").addFilter(drop_probes)
    fleet = await SimFleet(fleet_configs(SimServerConfig(time_scale=20.0), 3, hosts=loopback_hosts(3))).start()
    try:
        yield fleet
    finally:
        await fleet.stop()
        logging.getLogger("aiohttp.server").removeFilter(drop_probes)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("name", list(PEERS))
async def test_router_serves_completions_and_chat_and_keeps_a_prefix_on_one_server(
        name: str, sims: SimFleet, tmp_path: Path) -> None:
    python = python_for(name)
    names = {s.name for s in sims.servers}
    router = PeerRouter(name, python, [s.url for s in sims.servers], log_path=tmp_path / "router.log")
    await router.start(ready_within=30)
    try:
        assert router.pid is not None and process_exists(router.pid)
        assert router.url == f"http://127.0.0.1:{router.port}" and router.metrics_port != router.port
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async with session.get(router.url + "/workers") as resp:
                workers = parse_workers(orjson.loads(await resp.read()))
            assert workers == {s.url: True for s in sims.servers}
            served: list[str | None] = []
            for chat in (False, True):
                for stream in (False, True, False):
                    reply = await send_request(session, router.url, model=DEFAULT_MODEL, prompt=PROMPT,
                                               chat=chat, stream=stream)
                    assert reply.complete, reply
                    assert reply.text and reply.events >= (4 if stream else 1)
                    served.append(reply.served_by)
        assert set(served) <= names
        # The same prompt again matches the router's prefix tree fully: same server each time.
        assert len(set(served[:3])) == 1 and len(set(served[3:])) == 1, served
        metrics = await router.metrics_text()
        if name == "vllm-router":
            outcomes = prefix_routing_counts(metrics)
            assert outcomes.get("missing_tokens", 0) == 0 and outcomes.get("prefix_hit", 0) >= 4, outcomes
            # Token ids came from the sims' render endpoints, asked of all 3 workers per request.
            assert token_source_counts(metrics).get("render", 0) == 3 * len(served)
        else:
            assert "smg_router_requests_total" in metrics
    finally:
        code = await router.stop()
    assert code == 0
    assert not router.running and not process_exists(router.pid)
    assert port_is_free("127.0.0.1", router.port) and port_is_free("127.0.0.1", router.metrics_port)


@pytest.mark.parametrize("name", list(PEERS))
async def test_concurrent_fresh_prefixes_spread_and_then_stick(name: str, sims: SimFleet, tmp_path: Path) -> None:
    python = python_for(name)
    async with PeerRouter(name, python, [s.url for s in sims.servers], log_path=tmp_path / "router.log") as router:
        spread, failures = await smoke_router(router, DEFAULT_MODEL, requests=12)
    assert failures == 0
    assert all(servers and servers[0] != "?" for servers in spread.values()), spread
    # Later waves hit the prefix tree (completions after completions) and keep the group's server.
    assert all(servers[2] == servers[0] for servers in spread.values()), spread


@pytest.mark.parametrize("name", list(PEERS))
async def test_early_exit_is_reported_with_the_log_tail(name: str, sims: SimFleet, tmp_path: Path) -> None:
    python = python_for(name)
    router = PeerRouter(name, python, [sims.servers[0].url], extra_args=["--no-such-flag"],
                        log_path=tmp_path / "router.log")
    with pytest.raises(PeerStartError, match=r"exited with code 2 before it was ready[\s\S]*--no-such-flag"):
        await router.start(ready_within=30)
    assert not router.running


@pytest.mark.parametrize("name", list(PEERS))
async def test_a_dead_worker_keeps_the_router_from_being_ready(name: str, sims: SimFleet, tmp_path: Path) -> None:
    python = python_for(name)
    dead = f"http://127.0.0.1:{free_port()}"
    router = PeerRouter(name, python, [sims.servers[0].url, dead], log_path=tmp_path / "router.log")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(PeerStartError, match=r"did not report every worker healthy within 3\.0 s") as error:
        await router.start(ready_within=3.0)
    assert dead in str(error.value)
    assert loop.time() - t0 < 3.0 + 5.0 + 2.0  # deadline + stop grace + slack
    assert router.pid is not None and not router.running and not process_exists(router.pid)


async def test_a_taken_port_is_retried_on_new_ports(sims: SimFleet, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    python = python_for("sglang-router")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        handed = [taken_port]  # the first port handed out (the API port) is already in use

        def racy_free_port(host: str = "127.0.0.1") -> int:
            return handed.pop() if handed else free_port(host)

        monkeypatch.setattr(peers, "free_port", racy_free_port)
        async with PeerRouter("sglang-router", python, [s.url for s in sims.servers],
                              log_path=tmp_path / "router.log") as router:
            assert router.port != taken_port
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                reply = await send_request(session, router.url, model=DEFAULT_MODEL, prompt="hi", chat=False,
                                           stream=False)
            assert reply.complete
    log = (tmp_path / "router.log").read_text()
    assert "Address already in use" in log and f"ports {taken_port}/" in log and log.count("$ ") == 2
