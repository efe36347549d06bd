"""One simulated model server: an aiohttp app around one engine, its metrics and its KV-event publisher.

Why it exists: it is the object everything else starts and stops -- the ``endpoint-picker sim`` command,
the fleet launcher, the local gateway and the tests. ``await SimServer(config).start()`` binds the HTTP
listener (``config.port`` 0 = ephemeral; read ``server.port`` / ``server.address`` afterwards), starts the
engine driver and, with ``--kv-events-config``, the ZMQ publisher; ``await server.stop()`` undoes it all.
Many servers share one event loop and process: each has its own engine, registry and sockets.

Every response carries ``x-served-by: <name>`` and ``x-served-by-address: <ip:port>``. Errors are
OpenAI-style JSON. ``crash()`` (also fault ``crash``) closes the listener and resets every open connection
at once, as a dying pod would, then stops the server.

The routes live in ``generation_routes`` (completions, chat), ``info_routes`` (models, health, tokenize,
render, peers' ``/server_info`` ``/model_info`` ``/get_load``, metrics) and ``admin_routes`` (faults, prefix
cache reset, LoRA loading, state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web

from simulator.engine.engine import Engine
from simulator.engine.tokenizer import Tokenizer
from simulator.server.admin_routes import add_admin_routes
from simulator.server.config import SimServerConfig
from simulator.server.disaggregation import RemotePrefiller
from simulator.server.driver import EngineDriver, StepDelivery
from simulator.server.faults import FaultConfig
from simulator.server.generation_routes import add_generation_routes
from simulator.server.info_routes import add_info_routes
from simulator.server.kv_publisher import KVEventPublisher
from simulator.server.metrics import MetricsSource, ServerMetrics, make_metrics
from simulator.server.openai_api import ApiError

__all__ = ["SimServer"]

log = logging.getLogger(__name__)

_TOKENIZERS: dict[int, Tokenizer] = {}


def shared_tokenizer(vocab_size: int = 128256) -> Tokenizer:
    """One tokenizer per vocabulary size per process (they are immutable apart from a piece cache)."""
    tok = _TOKENIZERS.get(vocab_size)
    if tok is None:
        tok = _TOKENIZERS[vocab_size] = Tokenizer(vocab_size)
    return tok


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.Response(status=exc.status, body=exc.body(), content_type="application/json")
    except web.HTTPException as exc:
        if exc.status >= 400:
            err = ApiError(exc.status, exc.reason or "error")
            return web.Response(status=exc.status, body=err.body(), content_type="application/json")
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = ApiError(500, f"internal error: {type(exc).__name__}: {exc}")
        return web.Response(status=500, body=err.body(), content_type="application/json")


class SimServer:
    """A vLLM-like model server in the current event loop."""

    def __init__(self, config: SimServerConfig | None = None) -> None:
        self.config = config or SimServerConfig()
        cfg = self.config
        self.name = cfg.name
        self.host = cfg.host
        self.port = cfg.port
        self.tokenizer = shared_tokenizer()
        engine_cfg = cfg.engine
        if cfg.kv_events.active and not engine_cfg.enable_kv_cache_events:
            engine_cfg = replace(engine_cfg, enable_kv_cache_events=True)
        self.engine = Engine(engine_cfg)
        self.driver = EngineDriver(self.engine, cfg.time_scale)
        # Requests waiting for a remote prefiller's KV.
        self.deferred = 0
        self.metrics: ServerMetrics = make_metrics(
            cfg.engine_kind, MetricsSource(self.engine, cfg.served_model_name, lambda: self.deferred, cfg.role)
        )
        self.faults: FaultConfig = cfg.faults
        seed = engine_cfg.seed
        self.fault_rng = random.Random(f"{seed}:faults:{cfg.name}")
        self.output_rng = random.Random(f"{seed}:output:{cfg.name}")
        self.prefiller = RemotePrefiller(cfg.topology, cfg.transfer, cfg.prefill_timeout_s)
        self.loras = {m.name: m for m in cfg.lora_modules}
        self.publisher: KVEventPublisher | None = None
        self.crashed = False
        self.stopped = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._crash_timer: asyncio.TimerHandle | None = None
        self.driver.observers.append(self._on_step)

    # -- identity -------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def kv_events_endpoint(self) -> str | None:
        """The PUB endpoint actually bound (or connected), when KV events are on."""
        return None if self.publisher is None else self.publisher.endpoint

    @property
    def kv_events_replay_endpoint(self) -> str | None:
        return None if self.publisher is None else self.publisher.replay_endpoint

    def real_seconds(self, model_seconds: float) -> float:
        return model_seconds / self.config.time_scale

    # -- lifecycle ------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.client_max_size, middlewares=[_errors])
        add_generation_routes(app, self)
        add_info_routes(app, self)
        add_admin_routes(app, self)
        app.on_response_prepare.append(self._identity_headers)
        return app

    async def start(self) -> SimServer:
        if self._runner is not None or self.stopped.is_set():
            raise RuntimeError(f"{self.name} already started")
        runner = web.AppRunner(self.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            if self.port == 0:
                self.port = int(runner.addresses[0][1])
            kv_cfg = self.config.kv_events
            if kv_cfg.active:
                kv_cfg = kv_cfg.for_replica(index=self.config.index, host=self.host, port=self.port,
                                            model=self.config.served_model_name)
                publisher = KVEventPublisher(kv_cfg, encoding=self.config.kv_events_encoding)
                publisher.start()
                self.publisher = publisher
        except BaseException:
            await runner.cleanup()
            if self.publisher is not None:
                await self.publisher.stop()
                self.publisher = None
            raise
        self._runner = runner
        self.driver.start()
        self.set_faults(self.faults)
        log.info("simulated %s server %s listening on %s (model %s, time scale %g)", self.config.engine_kind,
                 self.name, self.url, self.config.served_model_name, self.config.time_scale)
        return self

    async def stop(self) -> None:
        """Stop serving: in-flight requests fail, sockets close. Safe to call twice."""
        if self.stopped.is_set():
            return
        if self._crash_timer is not None:
            self._crash_timer.cancel()
            self._crash_timer = None
        self._stopping.set()
        await self.driver.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self.publisher is not None:
            await self.publisher.stop()
        await self.prefiller.close()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.stopped.set()

    async def crash(self) -> None:
        """Die abruptly: stop listening, reset every connection, stop the engine."""
        if self.stopped.is_set() or self.crashed:
            return
        self.crashed = True
        log.warning("simulated server %s crashing (fault injection)", self.name)
        runner = self._runner
        if runner is not None:
            for site in list(runner.sites):
                await site.stop()
            server = runner.server
            if server is not None:
                for conn in server.connections:
                    transport = conn.transport
                    if transport is not None:
                        transport.abort()
        await self.stop()

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        """Run a background task owned by this server (cancelled on stop)."""
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- faults ---------------------------------------------------------------------------------------

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault set (a crash fault takes effect right away or after ``crash_after_s``)."""
        self.faults = faults
        if self._crash_timer is not None:
            self._crash_timer.cancel()
            self._crash_timer = None
        if faults.crash:
            self.spawn(self.crash(), "crash")
        elif faults.crash_after_s is not None:
            loop = asyncio.get_running_loop()
            self._crash_timer = loop.call_later(faults.crash_after_s, lambda: self.spawn(self.crash(), "crash"))

    async def hang(self) -> None:
        """Never answer (until the server stops or the client goes away)."""
        await self._stopping.wait()
        raise ApiError(503, "the server is shutting down")

    # -- plumbing -------------------------------------------------------------------------------------

    def _on_step(self, delivery: StepDelivery) -> None:
        self.metrics.observe(delivery)
        self.publish_kv_events()

    def publish_kv_events(self) -> None:
        """Hand the engine's buffered KV-event batches to the publisher (or drop them when off)."""
        if not len(self.engine.kv_events):
            return
        batches = self.engine.drain_kv_events()
        if self.publisher is not None:
            for batch in batches:
                self.publisher.publish(batch.events)

    async def _identity_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-served-by"] = self.name
        response.headers["x-served-by-address"] = self.address
