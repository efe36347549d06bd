"""Prefill/decode disaggregation: getting a prompt's KV from a remote prefiller, as llm-d and vLLM do it.

Why it exists: P/D routing (a picker choosing a prefill and a decode endpoint) is only testable if the
servers really split the work. Three paths, all vLLM NIXL-connector semantics:

- **prefill side** -- a request whose ``kv_transfer_params.do_remote_decode`` is true is served with
  ``max_tokens = 1``; the response carries ``kv_transfer_params`` for the decoder
  (``do_remote_prefill: true``, ``remote_engine_id``, ``remote_host``, ``remote_port``,
  ``remote_block_ids``, ``remote_request_id``, ``tp_size`` and, a simulator addition, ``remote_topology``:
  the prefiller's ``--topology`` labels). Block ids are placeholders (0..n-1);
- **decode side, llm-d sidecar** (``--role decode|both``, request header ``x-prefiller-host-port``): like
  llm-d's routing sidecar, the server first sends the request to the prefiller (same path, non-streaming,
  ``max_tokens: 1``, ``kv_transfer_params {do_remote_decode: true, do_remote_prefill: false, remote_*:
  null}``), then decodes locally with the returned parameters;
- **decode side, router-driven** (body ``kv_transfer_params.do_remote_prefill`` true, as vllm-router
  sends after its own prefill call): the KV is pulled from ``remote_host:remote_port``.

Pulling costs ``TransferModel.transfer_time(prompt_tokens, tier)``, the tier from the two servers'
topology labels (the whole prompt is transferred; locally cached blocks are not subtracted). Meanwhile
the request counts as waiting ("deferred", as vLLM's WAITING_FOR_REMOTE_KVS). Then it enters the engine
with the prompt as externally computed: only the last prompt token is recomputed, and ``cached_tokens``
covers the prompt. If the prefiller fails, times out (``prefill_timeout_s``) or returns no
``kv_transfer_params``, the decode server prefills locally.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from simulator.server.topology import Topology, TransferModel, TransferTier, parse_topology

__all__ = [
    "PREFILLER_HEADER",
    "PrefillOutcome",
    "RemotePrefiller",
    "kv_params_for_decoder",
    "prefill_request_body",
    "topology_of_params",
]

log = logging.getLogger(__name__)

PREFILLER_HEADER = "x-prefiller-host-port"


def prefill_request_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The body llm-d's sidecar sends to the prefiller for a client request ``payload``."""
    body = dict(payload)
    body["max_tokens"] = 1
    body.pop("max_completion_tokens", None)
    body.pop("min_tokens", None)
    body["stream"] = False
    body.pop("stream_options", None)
    body["kv_transfer_params"] = {
        "do_remote_decode": True,
        "do_remote_prefill": False,
        "remote_engine_id": None,
        "remote_block_ids": None,
        "remote_host": None,
        "remote_port": None,
    }
    return body


def kv_params_for_decoder(*, engine_id: str, host: str, port: int, request_id: str, prompt_tokens: int,
                          block_size: int, topology: Topology) -> dict[str, Any]:
    """The ``kv_transfer_params`` a prefiller returns."""
    n_blocks = -(-prompt_tokens // block_size)
    return {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_block_ids": list(range(n_blocks)),
        "remote_engine_id": engine_id,
        "remote_request_id": request_id,
        "remote_host": host,
        "remote_port": port,
        "tp_size": 1,
        "remote_topology": dict(topology.labels),
    }


def topology_of_params(params: Mapping[str, Any]) -> Topology:
    """The prefiller's topology from ``kv_transfer_params`` (no labels when absent)."""
    raw = params.get("remote_topology")
    if isinstance(raw, dict):
        return Topology({str(k): str(v) for k, v in raw.items()})
    if isinstance(raw, str):
        return parse_topology(raw)
    return Topology()


@dataclass(frozen=True, slots=True)
class PrefillOutcome:
    """How the decode side got (or did not get) the prompt's KV."""

    source: Literal["remote", "local-fallback"]
    tier: TransferTier | None = None
    # Model seconds spent moving KV.
    transfer_time: float = 0.0
    kv_transfer_params: dict[str, Any] | None = None
    error: str | None = None


class RemotePrefiller:
    """The decode server's HTTP client to prefillers (one shared session per server)."""

    def __init__(self, topology: Topology, transfer: TransferModel, timeout_s: float) -> None:
        self.topology = topology
        self.transfer = transfer
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.remote = 0
        self.fallbacks = 0

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    def plan_pull(self, params: Mapping[str, Any], prompt_tokens: int) -> PrefillOutcome:
        """The transfer a decode server pays for KV described by ``params``."""
        tier = self.topology.tier_to(topology_of_params(params))
        return PrefillOutcome("remote", tier, self.transfer.transfer_time(prompt_tokens, tier), dict(params))

    async def prefill(self, host_port: str, path: str, payload: Mapping[str, Any], prompt_tokens: int,
                      headers: Mapping[str, str]) -> PrefillOutcome:
        """Ask the prefiller at ``host_port`` to prefill; the outcome says how to continue."""
        base = host_port if host_port.startswith(("http://", "https://")) else f"http://{host_port}"
        url = f"{base.rstrip('/')}{path}"
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._client().post(url, data=orjson.dumps(prefill_request_body(payload)),
                                               headers={"content-type": "application/json", **headers}) as resp:
                    raw = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"prefiller answered {resp.status}: {raw[:200]!r}")
            body = orjson.loads(raw)
            params = body.get("kv_transfer_params") if isinstance(body, dict) else None
            if not isinstance(params, dict):
                raise RuntimeError("prefiller response has no kv_transfer_params")
        except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError, ValueError) as exc:
            self.fallbacks += 1
            reason = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            log.info("remote prefill at %s failed (%s); prefilling locally", host_port, reason)
            return PrefillOutcome("local-fallback", error=reason)
        self.remote += 1
        return self.plan_pull(params, prompt_tokens)
