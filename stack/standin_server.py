"""A small OpenAI-compatible stand-in model server for the local gateway and the integration tests.

Why this module exists: to see and test routing through a real Envoy we need upstreams that speak the
OpenAI API well enough for the picker (JSON and SSE responses with ``usage``, a ``/metrics`` page in vLLM
names) and that tell the client who served the request and exactly which body bytes arrived. Every response
carries ``x-served-by`` (server name), ``x-served-by-address`` (``ip:port``), ``x-request-body-sha256`` and
``x-request-body-length`` (of the body as received, after Envoy and the picker re-chunked it). It is not a
performance model (that is ``simulator/``): tokens are whitespace-separated words, generation is a fixed
delay per token, and the prefix cache is a hash chain of 16-word blocks so ``cached_tokens`` behaves
plausibly for affinity tests.

Per-request test controls (request headers): ``x-standin-token-delay-ms``, ``x-standin-first-token-delay-ms``
and ``x-standin-status`` (answer with that HTTP status and an OpenAI-style error body).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

_VOCABULARY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
_MAX_TOKENS_LIMIT = 65536
_BODY = web.RequestKey("body", bytes)
_BODY_SHA256 = web.RequestKey("body_sha256", str)
_EMBEDDING_DIM = 8


@dataclass
class StandinOptions:
    """How a stand-in behaves. Times in seconds."""

    token_delay: float = 0.002
    first_token_delay: float = 0.0
    default_max_tokens: int = 16
    models: Sequence[str] = ("standin-model",)
    block_size: int = 16
    cache_blocks: int = 4096
    client_max_size: int = 256 * 1024 * 1024
    keep_received: int = 1000


@dataclass(frozen=True)
class ReceivedRequest:
    """What one request looked like when it reached the stand-in (for test assertions)."""

    method: str
    path: str
    headers: dict[str, str]
    body_sha256: str
    body_length: int
    chunked: bool
    at: float
    sent: bytearray = field(default_factory=bytearray)  # the response body bytes, as written


_RECORD = web.RequestKey("record", ReceivedRequest)


class BadRequest(Exception):
    """The request body is not a valid OpenAI request; answered with 400."""


@dataclass
class _Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass
class _PrefixCache:
    """Hash chains of fixed-size word blocks, LRU-bounded; answers "how many leading tokens are cached"."""

    block_size: int
    capacity: int
    blocks: collections.OrderedDict[bytes, None] = field(default_factory=collections.OrderedDict)

    def lookup_and_insert(self, words: Sequence[str]) -> int:
        parent = b""
        hashes: list[bytes] = []
        for start in range(0, len(words) - len(words) % self.block_size, self.block_size):
            block = "\x1f".join(words[start : start + self.block_size]).encode()
            parent = hashlib.blake2b(parent + block, digest_size=16).digest()
            hashes.append(parent)
        hit = 0
        for digest in hashes:
            if digest not in self.blocks:
                break
            hit += 1
        for digest in hashes:
            self.blocks[digest] = None
            self.blocks.move_to_end(digest)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        # vLLM always recomputes the last prompt token.
        return min(hit * self.block_size, max(len(words) - 1, 0))


def _text_of_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _prompt_words(kind: str, payload: dict[str, Any]) -> list[str]:
    if kind == "chat":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        words: list[str] = []
        for message in messages:
            if not isinstance(message, dict):
                raise BadRequest("each message must be an object")
            words.append(f"<{message.get('role', 'user')}>")
            words.extend(_text_of_content(message.get("content")).split())
        return words
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        return prompt.split()
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return [str(p) for p in prompt]
        return " ".join(p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt).split()
    raise BadRequest("'prompt' must be a string or a non-empty list")


def _max_tokens(payload: dict[str, Any], default: int) -> int:
    value = payload.get("max_completion_tokens", payload.get("max_tokens", default))
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value > _MAX_TOKENS_LIMIT:
        raise BadRequest(f"'max_tokens' must be an integer in 1..{_MAX_TOKENS_LIMIT}")
    return value


def _error_body(status: int, message: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "code": status}, "object": "error"})


def _ms_header(request: web.Request, name: str, default: float) -> float:
    raw = request.headers.get(name)
    if raw is None:
        return default
    try:
        return max(0.0, float(raw) / 1000.0)
    except ValueError:
        return default


class StandinServer:
    """One stand-in model server: ``await start()``, ``await stop()``; many can share one event loop."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0, options: StandinOptions | None = None):
        self.name = name
        self.host = host
        self.port = port
        self.options = options or StandinOptions()
        self.received: collections.deque[ReceivedRequest] = collections.deque(maxlen=self.options.keep_received)
        self.served: collections.Counter[str] = collections.Counter()
        self.running_requests = 0
        self._cache = _PrefixCache(self.options.block_size, self.options.cache_blocks)
        self._prompt_tokens_total = 0
        self._generation_tokens_total = 0
        self._cache_queries_total = 0
        self._cache_hits_total = 0
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.client_max_size, middlewares=[self._middleware])
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.on_response_prepare.append(self._add_identity_headers)
        return app

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"{self.name} already started")
        runner = web.AppRunner(self.build_app(), shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- plumbing ----------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        digest = hashlib.sha256(body).hexdigest()
        request[_BODY] = body
        request[_BODY_SHA256] = digest
        record = ReceivedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body_sha256=digest,
            body_length=len(body),
            chunked="chunked" in request.headers.get("Transfer-Encoding", "").lower(),
            at=time.time(),
        )
        request[_RECORD] = record
        self.received.append(record)
        forced = request.headers.get("x-standin-status")
        if forced and forced.isdigit() and int(forced) >= 400:
            status = int(forced)
            return web.Response(status=status, body=_error_body(status, "forced by x-standin-status"),
                                content_type="application/json")
        counted = request.method == "POST"
        self.running_requests += counted
        try:
            return await handler(request)
        except BadRequest as exc:
            return web.Response(status=400, body=_error_body(400, str(exc)), content_type="application/json")
        finally:
            self.running_requests -= counted
            self.served[request.path] += 1

    async def _add_identity_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-served-by"] = self.name
        response.headers["x-served-by-address"] = self.address
        body = request.get(_BODY, b"")
        response.headers["x-request-body-sha256"] = request.get(_BODY_SHA256, hashlib.sha256(body).hexdigest())
        response.headers["x-request-body-length"] = str(len(body))

    def _payload(self, request: web.Request) -> dict[str, Any]:
        try:
            payload = orjson.loads(request[_BODY])
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from exc
        if not isinstance(payload, dict):
            raise BadRequest("the JSON body must be an object")
        return payload

    def _model(self, payload: dict[str, Any]) -> str:
        model = payload.get("model")
        return model if isinstance(model, str) and model else self.options.models[0]

    def _account(self, words: Sequence[str], completion_tokens: int) -> _Usage:
        prompt_tokens = max(len(words), 1)
        cached = self._cache.lookup_and_insert(words)
        self._prompt_tokens_total += prompt_tokens
        self._generation_tokens_total += completion_tokens
        self._cache_queries_total += prompt_tokens
        self._cache_hits_total += cached
        return _Usage(prompt_tokens, completion_tokens, cached)

    @staticmethod
    def _tokens(count: int) -> list[str]:
        return [f" {_VOCABULARY[i % len(_VOCABULARY)]}" for i in range(count)]

    async def _generate(self, request: web.Request, count: int) -> AsyncIterator[tuple[int, str]]:
        first = _ms_header(request, "x-standin-first-token-delay-ms", self.options.first_token_delay)
        between = _ms_header(request, "x-standin-token-delay-ms", self.options.token_delay)
        for index, token in enumerate(self._tokens(count)):
            delay = first if index == 0 else between
            if delay > 0:
                await asyncio.sleep(delay)
            yield index, token

    # --- OpenAI endpoints --------------------------------------------------------------------------------

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "completions")

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "chat")

    async def _complete(self, request: web.Request, kind: str) -> web.StreamResponse:
        payload = self._payload(request)
        words = _prompt_words(kind, payload)
        count = _max_tokens(payload, self.options.default_max_tokens)
        model = self._model(payload)
        usage = self._account(words, count)
        ident = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        if payload.get("stream") is True:
            options = payload.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(request, kind, ident, created, model, count, usage, include_usage)
        text = "".join([token async for _, token in self._generate(request, count)])
        choice: dict[str, Any]
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": "length"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        body = {
            "id": ident,
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage.to_json(),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        kind: str,
        ident: str,
        created: int,
        model: str,
        count: int,
        usage: _Usage,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        sent = request[_RECORD].sent

        async def write(data: bytes) -> None:
            sent.extend(data)
            await response.write(data)

        def event(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
            chunk: dict[str, Any] = {"id": ident, "object": obj, "created": created, "model": model,
                                     "choices": choices}
            if extra:
                chunk.update(extra)
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        if kind == "chat":
            await write(event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                               "logprobs": None, "finish_reason": None}]))
        async for index, token in self._generate(request, count):
            finish = "length" if index == count - 1 else None
            if kind == "chat":
                choice = {"index": 0, "delta": {"content": token}, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": token, "logprobs": None, "finish_reason": finish}
            await write(event([choice]))
        if include_usage:
            await write(event([], {"usage": usage.to_json()}))
        await write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        payload = self._payload(request)
        items = payload.get("input")
        if isinstance(items, str) or (isinstance(items, list) and items and all(isinstance(i, int) for i in items)):
            items = [items]
        if not isinstance(items, list) or not items:
            raise BadRequest("'input' must be a string or a non-empty list")
        data = []
        tokens = 0
        for index, item in enumerate(items):
            words = item.split() if isinstance(item, str) else [str(t) for t in item]
            tokens += max(len(words), 1)
            digest = hashlib.sha256(orjson.dumps(item)).digest()
            vector = [round(b / 255.0, 6) for b in digest[:_EMBEDDING_DIM]]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        self._prompt_tokens_total += tokens
        body = {"object": "list", "data": data, "model": self._model(payload),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "standin", "root": m, "parent": None}
                for m in self.options.models]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        model = self.options.models[0]
        used = min(len(self._cache.blocks), self.options.cache_blocks)
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="{model}"}} {self.running_requests}',
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="{model}"}} 0',
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{model_name="{model}"}} {used / self.options.cache_blocks:.6f}',
            "# TYPE vllm:cache_config_info gauge",
            f'vllm:cache_config_info{{block_size="{self.options.block_size}",'
            f'num_gpu_blocks="{self.options.cache_blocks}"}} 1',
            "# TYPE vllm:prefix_cache_queries counter",
            f'vllm:prefix_cache_queries_total{{model_name="{model}"}} {self._cache_queries_total}',
            "# TYPE vllm:prefix_cache_hits counter",
            f'vllm:prefix_cache_hits_total{{model_name="{model}"}} {self._cache_hits_total}',
            "# TYPE vllm:prompt_tokens counter",
            f'vllm:prompt_tokens_total{{model_name="{model}"}} {self._prompt_tokens_total}',
            "# TYPE vllm:generation_tokens counter",
            f'vllm:generation_tokens_total{{model_name="{model}"}} {self._generation_tokens_total}',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def loopback_hosts(count: int, first: str = "127.0.0.2") -> list[str]:
    """``count`` distinct loopback addresses from ``first`` on (Linux routes all of 127.0.0.0/8 to lo)."""
    hosts: list[str] = []
    address = ipaddress.IPv4Address(first)
    network = ipaddress.IPv4Network("127.0.0.0/8")
    while len(hosts) < count:
        if address not in network:
            raise ValueError(f"ran out of loopback addresses after {len(hosts)}")
        if address.packed[-1] not in (0, 255):
            hosts.append(str(address))
        address += 1
    return hosts


async def start_standins(
    count: int,
    *,
    hosts: Sequence[str] | None = None,
    name_prefix: str = "standin-",
    options: StandinOptions | None = None,
) -> list[StandinServer]:
    """Start ``count`` stand-ins on one event loop, each on its own loopback IP and a free port."""
    hosts = list(hosts) if hosts is not None else loopback_hosts(count)
    if len(hosts) < count:
        raise ValueError(f"{count} stand-ins need {count} hosts, got {len(hosts)}")
    servers = [StandinServer(f"{name_prefix}{i}", hosts[i], 0, options) for i in range(count)]
    try:
        for server in servers:
            await server.start()
    except BaseException:
        await stop_standins(servers)
        raise
    return servers


async def stop_standins(servers: Sequence[StandinServer]) -> None:
    await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
