"""Run-time control of a simulated server: faults, prefix-cache reset, LoRA adapters, a state snapshot.

Why it exists: failure and cache experiments need to change a running server without restarting it.

- ``GET /admin/faults`` shows the fault set; ``POST`` replaces it (JSON as in ``faults.py``; ``{"crash":
  true}`` answers 200, then crashes the server); ``DELETE`` clears it;
- ``POST /reset_prefix_cache`` (vLLM's dev endpoint): forget every cached block (publishes
  ``AllBlocksCleared``; 409 while requests hold blocks, where vLLM would refuse too);
- ``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter`` (vLLM's runtime LoRA API, body
  ``{"lora_name", "lora_path"}``);
- ``GET /admin/state``: engine gauges and counters, P/D counters, faults -- for tests and humans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator.server.config import LoraModule
from simulator.server.faults import FaultConfig, parse_faults
from simulator.server.openai_api import ApiError, decode_json

if TYPE_CHECKING:
    from simulator.server.server import SimServer

__all__ = ["add_admin_routes"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class AdminRoutes:
    def __init__(self, server: SimServer) -> None:
        self.server = server

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        return _json(self.server.faults.to_json())

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            faults = parse_faults(orjson.loads(raw) if raw.strip() else {})
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise ApiError(400, f"invalid faults: {exc}") from exc
        if faults.crash:
            # Answer first, then die: the 200 is on the wire before the connections are reset.
            response = _json(faults.to_json())
            await response.prepare(request)
            await response.write_eof()
            self.server.set_faults(faults)
            return response
        self.server.set_faults(faults)
        return _json(faults.to_json())

    async def clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.server.set_faults(FaultConfig())
        return _json(FaultConfig().to_json())

    async def reset_prefix_cache(self, request: web.Request) -> web.StreamResponse:
        srv = self.server
        if not srv.engine.reset_prefix_cache():
            raise ApiError(409, "cannot reset the prefix cache while requests hold KV blocks", err_type="Conflict")
        srv.publish_kv_events()
        return web.Response(status=200)

    async def load_lora(self, request: web.Request) -> web.StreamResponse:
        srv = self.server
        payload = decode_json(await request.read())
        name, path = payload.get("lora_name"), payload.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise ApiError(400, "'lora_name' and 'lora_path' must be non-empty strings")
        if not srv.engine.config.enable_lora:
            raise ApiError(400, "LoRA is not enabled (--enable-lora)")
        if name in srv.loras:
            raise ApiError(400, f"The lora adapter '{name}' has already been loaded.")
        srv.loras[name] = LoraModule(name, path)
        srv.engine.preload_lora(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(self, request: web.Request) -> web.StreamResponse:
        srv = self.server
        payload = decode_json(await request.read())
        name = payload.get("lora_name")
        if not isinstance(name, str) or name not in srv.loras:
            raise ApiError(404, f"The lora adapter '{name}' cannot be found.", err_type="NotFoundError")
        del srv.loras[name]
        srv.engine.unload_lora(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def state(self, request: web.Request) -> web.StreamResponse:
        srv = self.server
        engine = srv.engine
        c = engine.counters
        return _json({
            "name": srv.name,
            "address": srv.address,
            "role": srv.config.role,
            "engine_kind": srv.config.engine_kind,
            "model_time": engine.now,
            "num_requests_running": engine.num_running,
            "num_requests_waiting": engine.num_waiting,
            "num_requests_deferred": srv.deferred,
            "open_requests": srv.driver.num_streams,
            "driver_steps": srv.driver.steps,
            "step_lateness_mean_s": srv.driver.lateness_sum / srv.driver.steps if srv.driver.steps else 0.0,
            "step_lateness_max_s": srv.driver.lateness_max,
            "kv_cache_usage_perc": engine.kv.usage,
            "num_free_blocks": engine.kv.num_free_blocks,
            "prefix_cache_queries": c.prefix_cache_queries,
            "prefix_cache_hits": c.prefix_cache_hits,
            "generation_tokens": c.generation_tokens,
            "num_steps": c.num_steps,
            "request_success": c.request_success,
            "pd_remote_prefills": srv.prefiller.remote,
            "pd_fallbacks": srv.prefiller.fallbacks,
            "kv_events_endpoint": srv.kv_events_endpoint,
            "kv_events_replay_endpoint": srv.kv_events_replay_endpoint,
            "faults": srv.faults.to_json(),
        })


def add_admin_routes(app: web.Application, server: SimServer) -> None:
    routes = AdminRoutes(server)
    router = app.router
    router.add_get("/admin/faults", routes.get_faults)
    router.add_post("/admin/faults", routes.set_faults)
    router.add_delete("/admin/faults", routes.clear_faults)
    router.add_get("/admin/state", routes.state)
    router.add_post("/reset_prefix_cache", routes.reset_prefix_cache)
    router.add_post("/v1/load_lora_adapter", routes.load_lora)
    router.add_post("/v1/unload_lora_adapter", routes.unload_lora)
