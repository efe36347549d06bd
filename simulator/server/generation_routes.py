"""``POST /v1/completions`` and ``/v1/chat/completions``: a request's whole life on a simulated server.

Why it exists: this is the path a routed request takes -- parse and tokenize, apply injected faults, get
the prompt's KV from a remote prefiller when P/D asks for it, hand the request to the engine driver, and
answer as JSON or as SSE (one chunk per token as the engine steps, the final chunk carrying
``finish_reason``, an optional usage chunk, ``data: [DONE]``). If the client goes away (aiohttp cancels
the handler, or a write fails) the request is aborted in the engine, so its slot and KV blocks are freed.

Output length: ``ignore_eos`` (or a P/D prefill, which always produces one token) runs to ``max_tokens``;
otherwise EOS is "sampled" after ``max(min_tokens, round(gauss(mean, mean / 2)))`` tokens (seeded per
server, ``--output-len-mean``), capped by ``max_tokens`` (finish reason ``length`` when capped, else
``stop``).

Response headers besides the identity ones: ``x-request-id`` (the client's, else the response id) and,
when P/D was attempted, ``x-sim-prefill: remote|local-fallback``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from simulator.engine.request import EngineRequest
from simulator.server.disaggregation import PREFILLER_HEADER, PrefillOutcome, kv_params_for_decoder
from simulator.server.driver import EngineStopped, RequestStream
from simulator.server.faults import decide
from simulator.server.openai_api import ApiError, GenerationRequest, RequestKind, decode_json, parse_generation
from simulator.server.responses import SSE_DONE, ResponseWriter, usage_json

if TYPE_CHECKING:
    from simulator.server.server import SimServer

__all__ = ["add_generation_routes"]

_FORWARDED_HEADERS = ("x-request-id", "authorization")


class GenerationRoutes:
    def __init__(self, server: SimServer) -> None:
        self.server = server

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    def _output_len(self, gen: GenerationRequest) -> int | None:
        """Tokens after which EOS is sampled; None = run to max_tokens."""
        if gen.ignore_eos or gen.remote_decode:
            return None
        mean = self.server.config.output_len_mean
        n = max(1, round(self.server.output_rng.gauss(mean, mean / 2)), gen.min_tokens)
        return None if n >= gen.max_tokens else n

    async def _handle(self, request: web.Request, kind: RequestKind) -> web.StreamResponse:
        srv = self.server
        cfg = srv.config
        payload = decode_json(await request.read())
        gen = parse_generation(kind, payload, tokenizer=srv.tokenizer, served_models=cfg.model_names,
                               loras=srv.loras, max_model_len=srv.engine.max_model_len)
        decision = decide(srv.faults, srv.fault_rng)
        if decision.delay_s > 0:
            await asyncio.sleep(srv.real_seconds(decision.delay_s))
        if decision.action == "error":
            raise ApiError(decision.status, f"injected fault: HTTP {decision.status}")
        if decision.action == "hang":
            await srv.hang()

        writer = ResponseWriter(kind, gen.model, srv.tokenizer)
        headers = {"x-request-id": request.headers.get("x-request-id", writer.id)}
        n_prompt = len(gen.prompt_token_ids)
        outcome: PrefillOutcome | None = None
        if gen.remote_prefill and not gen.remote_decode:
            assert gen.kv_transfer_params is not None
            outcome = srv.prefiller.plan_pull(gen.kv_transfer_params, n_prompt)
        elif cfg.role != "prefill" and not gen.remote_decode and PREFILLER_HEADER in request.headers:
            forwarded = {k: v for k in _FORWARDED_HEADERS if (v := request.headers.get(k)) is not None}
            outcome = await srv.prefiller.prefill(request.headers[PREFILLER_HEADER], request.path, payload,
                                                  n_prompt, forwarded)
        arrival: float | None = None
        external = 0
        if outcome is not None:
            headers["x-sim-prefill"] = outcome.source
            if outcome.source == "remote":
                # The request reaches this engine now and waits for its KV (vLLM: WAITING_FOR_REMOTE_KVS).
                arrival = srv.driver.clock.now()
                external = n_prompt
                srv.deferred += 1
                try:
                    await asyncio.sleep(srv.real_seconds(outcome.transfer_time))
                finally:
                    srv.deferred -= 1

        lora = gen.lora
        engine_request = EngineRequest(
            request_id=writer.id,
            prompt_token_ids=gen.prompt_token_ids,
            max_tokens=1 if gen.remote_decode else gen.max_tokens,
            arrival_time=arrival,
            output_len=self._output_len(gen),
            lora_name=None if lora is None else lora.name,
            lora_path=None if lora is None else lora.path,
            cache_salt=gen.cache_salt,
            num_external_computed_tokens=external,
        )
        try:
            stream = srv.driver.submit(engine_request, streaming=gen.stream)
        except EngineStopped as exc:
            raise ApiError(503, str(exc)) from exc
        except ValueError as exc:  # the engine refused it (e.g. LoRA not enabled)
            raise ApiError(400, str(exc)) from exc
        try:
            if gen.stream:
                return await self._sse(request, gen, writer, stream, headers)
            return await self._json(gen, writer, stream, headers)
        finally:
            if not stream.done:
                srv.driver.abort(writer.id)

    async def _json(self, gen: GenerationRequest, writer: ResponseWriter, stream: RequestStream,
                    headers: dict[str, str]) -> web.StreamResponse:
        while not stream.done:
            await stream.wait()
        result = stream.result
        if result is None:
            raise ApiError(503, str(stream.error or "request failed"))
        usage = usage_json(result.prompt_tokens, result.output_tokens, result.cached_tokens)
        kvp = None
        if gen.remote_decode:
            srv = self.server
            kvp = kv_params_for_decoder(engine_id=srv.name, host=srv.host, port=srv.port, request_id=writer.id,
                                        prompt_tokens=result.prompt_tokens, block_size=srv.engine.block_size,
                                        topology=srv.config.topology)
        body = writer.body(writer.text(result.output_token_ids), result.finish_reason, usage, kvp)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _sse(self, request: web.Request, gen: GenerationRequest, writer: ResponseWriter,
                   stream: RequestStream, headers: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               **headers})
        await response.prepare(request)
        first = writer.role_chunk()
        if first:
            await response.write(first)
        while True:
            await stream.wait()
            new = stream.take()
            result = stream.result
            if result is None and stream.error is not None:
                err = ApiError(503, str(stream.error))
                await response.write(b"data: " + err.body() + b"\n\n" + SSE_DONE)
                break
            out: list[bytes] = []
            last = len(new) - 1
            for i, token in enumerate(new):
                finish = result.finish_reason if result is not None and i == last else None
                out.append(writer.token_chunk(writer.text([token]), finish))
            if result is not None:
                if not new:
                    out.append(writer.token_chunk("", result.finish_reason))
                if gen.include_usage:
                    out.append(writer.usage_chunk(usage_json(result.prompt_tokens, result.output_tokens,
                                                             result.cached_tokens)))
                out.append(SSE_DONE)
            if out:
                await response.write(b"".join(out))
            if result is not None:
                break
        await response.write_eof()
        return response


def add_generation_routes(app: web.Application, server: SimServer) -> None:
    routes = GenerationRoutes(server)
    app.router.add_post("/v1/completions", routes.completions)
    app.router.add_post("/v1/chat/completions", routes.chat)
