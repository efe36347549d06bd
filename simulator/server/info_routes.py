"""The read-only routes of a simulated server: what clients, scrapers and peer routers ask besides
generation.

Why it exists: a backend must answer more than completions to be routable -- health checks, model lists,
Prometheus scrapes, and what peer routers need (reference/peers.md section 4): sglang-router's
``/server_info`` and ``/model_info`` (without ``model_path`` / ``tokenizer_path``, so it never tries to
download a tokenizer) and ``/get_load``; vllm-router's ``/v1/completions/render``,
``/v1/chat/completions/render`` and ``/tokenize`` (vLLM's shapes: completions render answers a list,
chat render one object, each with ``token_ids``; tokenize answers ``{count, max_model_len, tokens}``).

Routes: ``GET /health``, ``/version``, ``/v1/models``, ``/metrics``, ``/server_info``, ``/model_info``,
``/get_load``; ``POST /tokenize``, ``/detokenize``, ``/v1/completions/render``,
``/v1/chat/completions/render``.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from simulator.server.openai_api import ApiError, RequestKind, decode_json, parse_generation, prompt_of

if TYPE_CHECKING:
    from simulator.server.server import SimServer

__all__ = ["add_info_routes"]

VLLM_VERSION = "0.33.0"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class InfoRoutes:
    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.created = int(time.time())

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.StreamResponse:
        return _json({"version": VLLM_VERSION})

    async def models(self, request: web.Request) -> web.StreamResponse:
        srv = self.server
        cfg = srv.config
        max_len = srv.engine.max_model_len
        data: list[dict[str, Any]] = []
        for name in cfg.model_names:
            data.append({"id": name, "object": "model", "created": self.created, "owned_by": "vllm",
                         "root": cfg.model, "parent": None, "max_model_len": max_len})
        for lora in srv.loras.values():
            data.append({"id": lora.name, "object": "model", "created": self.created, "owned_by": "vllm",
                         "root": lora.path, "parent": lora.base_model_name or cfg.served_model_name,
                         "max_model_len": max_len})
        return _json({"object": "list", "data": data})

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.server.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def server_info(self, request: web.Request) -> web.StreamResponse:
        srv = self.server
        engine = srv.engine
        role = srv.config.role
        return _json({
            "served_model_name": srv.config.served_model_name,
            "dp_size": 1,
            "tp_size": 1,
            "page_size": engine.block_size,
            "max_total_num_tokens": engine.kv.usable_blocks * engine.block_size,
            "max_running_requests": engine.config.max_num_seqs,
            "context_length": engine.max_model_len,
            "disaggregation_mode": "null" if role == "both" else role,
            "simulator": {"name": srv.name, "engine": srv.config.engine_kind,
                          "topology": dict(srv.config.topology.labels), "time_scale": srv.config.time_scale},
        })

    async def model_info(self, request: web.Request) -> web.StreamResponse:
        return _json({
            "served_model_name": self.server.config.served_model_name,
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "is_generation": True,
        })

    async def get_load(self, request: web.Request) -> web.StreamResponse:
        engine = self.server.engine
        kv = engine.kv
        waiting = engine.num_waiting + self.server.deferred
        return _json([{
            "dp_rank": 0,
            "num_reqs": engine.num_running + waiting,
            "num_waiting_reqs": waiting,
            "num_tokens": (kv.usable_blocks - kv.num_free_blocks) * engine.block_size,
        }])

    async def tokenize(self, request: web.Request) -> web.StreamResponse:
        payload = decode_json(await request.read())
        kind: RequestKind = "chat" if "messages" in payload else "completions"
        tokens = prompt_of(kind, payload, self.server.tokenizer)
        return _json({"count": len(tokens), "max_model_len": self.server.engine.max_model_len,
                      "tokens": tokens, "token_strs": None})

    async def detokenize(self, request: web.Request) -> web.StreamResponse:
        payload = decode_json(await request.read())
        tokens = payload.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise ApiError(400, "'tokens' must be a list of integers", param="tokens")
        return _json({"prompt": self.server.tokenizer.decode(tokens)})

    def _render(self, kind: RequestKind, payload: dict[str, Any]) -> dict[str, Any]:
        srv = self.server
        gen = parse_generation(kind, payload, tokenizer=srv.tokenizer, served_models=srv.config.model_names,
                               loras=srv.loras, max_model_len=srv.engine.max_model_len)
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return {
            "request_id": f"{prefix}-{uuid.uuid4().hex}",
            "token_ids": gen.prompt_token_ids,
            "sampling_params": {"max_tokens": gen.max_tokens, "min_tokens": gen.min_tokens,
                                "ignore_eos": gen.ignore_eos, "n": 1},
            "model": gen.model,
        }

    async def completions_render(self, request: web.Request) -> web.StreamResponse:
        return _json([self._render("completions", decode_json(await request.read()))])

    async def chat_render(self, request: web.Request) -> web.StreamResponse:
        return _json(self._render("chat", decode_json(await request.read())))


def add_info_routes(app: web.Application, server: SimServer) -> None:
    routes = InfoRoutes(server)
    router = app.router
    router.add_get("/health", routes.health)
    router.add_get("/version", routes.version)
    router.add_get("/v1/models", routes.models)
    router.add_get("/metrics", routes.metrics)
    router.add_get("/server_info", routes.server_info)
    router.add_get("/model_info", routes.model_info)
    router.add_get("/get_load", routes.get_load)
    router.add_post("/tokenize", routes.tokenize)
    router.add_post("/detokenize", routes.detokenize)
    router.add_post("/v1/completions/render", routes.completions_render)
    router.add_post("/v1/chat/completions/render", routes.chat_render)
