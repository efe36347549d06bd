"""Runs one engine core in (scaled) real time and hands its tokens to the HTTP handlers.

Why it exists: the engine core is a pure step function on a virtual clock; a model server must instead
produce tokens as real time passes. The driver is the one task that owns the engine:

- the model clock is ``model = (loop.time() - t0) * time_scale`` (``--time-scale 10``: ten model seconds
  per real second);
- requests arrive with ``arrival_time = model now`` and wake the driver;
- while the engine has work, it runs ``engine.step()`` (instantaneous to compute), then sleeps until the
  step's *end* on the model clock, then delivers the step's tokens. Deadlines are absolute, so timer
  overshoot does not accumulate; if the process falls behind (CPU-bound) steps run back to back, yielding
  to the event loop between them, until the engine catches up with the model clock;
- an idle engine's clock jumps to the model clock; requests still in the frontend (HTTP + tokenization
  delay) are waited for in real time.

Each request is a ``RequestStream``: generated token ids appear on it as steps end, then its
``RequestResult``. Observers (metrics, the KV-event publisher) get one ``StepDelivery`` per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from simulator.engine.engine import Engine, StepResult
from simulator.engine.request import EngineRequest, RequestResult

__all__ = ["EngineDriver", "EngineStopped", "ModelClock", "RequestStream", "StepDelivery"]

log = logging.getLogger(__name__)


class EngineStopped(RuntimeError):
    """The server stopped (or its engine failed) before the request finished."""


class ModelClock:
    """Model (virtual) seconds since start, from the event loop's monotonic clock."""

    __slots__ = ("_loop", "_t0", "scale")

    def __init__(self, scale: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if scale <= 0:
            raise ValueError("time scale must be > 0")
        self.scale = scale
        self._loop = loop or asyncio.get_running_loop()
        self._t0 = self._loop.time()

    def now(self) -> float:
        return (self._loop.time() - self._t0) * self.scale

    def real_delay(self, model_time: float) -> float:
        """Real seconds from now until the model clock reads ``model_time`` (negative if past)."""
        return model_time / self.scale + self._t0 - self._loop.time()

    def real_seconds(self, model_seconds: float) -> float:
        return model_seconds / self.scale


@dataclass(eq=False, slots=True)
class RequestStream:
    """One request's output as the engine produces it."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    arrival_time: float
    # Wake the reader on every token (a streaming response) or only when done (a JSON one).
    streaming: bool = True
    tokens: list[int] = field(default_factory=list)
    result: RequestResult | None = None
    error: BaseException | None = None
    last_token_time: float | None = None
    _read: int = 0
    _waiter: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def take(self) -> list[int]:
        """Tokens produced since the last call."""
        new = self.tokens[self._read :]
        self._read = len(self.tokens)
        return new

    async def wait(self) -> None:
        """Until the request is done or, when streaming, there are unread tokens."""
        if self.done or (self.streaming and self._read < len(self.tokens)):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass(slots=True)
class StepDelivery:
    """One engine step as observers see it, when it ends on the model clock."""

    step: StepResult
    # Time to first token (model seconds) of each request that produced its first token in this step.
    ttfts: list[float]
    # Gap since the previous token of each request that produced a later token.
    itls: list[float]
    finished: list[tuple[RequestResult, RequestStream]]


StepObserver = Callable[[StepDelivery], None]


class EngineDriver:
    """The task that steps one engine on the model clock."""

    def __init__(self, engine: Engine, time_scale: float = 1.0) -> None:
        self.engine = engine
        self.time_scale = time_scale
        self.observers: list[StepObserver] = []
        self._streams: dict[str, RequestStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._clock: ModelClock | None = None
        self.steps = 0
        # Real seconds by which step ends were delivered late (event-loop lag; ~0 unless CPU-bound).
        self.lateness_sum = 0.0
        self.lateness_max = 0.0

    @property
    def clock(self) -> ModelClock:
        if self._clock is None:
            raise RuntimeError("the driver is not started")
        return self._clock

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("driver already started")
        self._clock = ModelClock(self.time_scale)
        self.engine.advance_to(0.0)
        self._task = asyncio.create_task(self._run(), name="engine-driver")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(EngineStopped("the model server stopped"))

    def submit(self, request: EngineRequest, *, streaming: bool = True) -> RequestStream:
        """Add a request arriving now (unless it carries its own model-time arrival)."""
        if self._task is None or self._task.done():
            raise EngineStopped("the engine is not running")
        if request.arrival_time is None:
            request.arrival_time = self.clock.now()
        self.engine.add_request(request)
        stream = RequestStream(request.request_id, len(request.prompt_token_ids), request.max_tokens,
                               request.arrival_time, streaming)
        self._streams[request.request_id] = stream
        self._wake.set()
        return stream

    def abort(self, request_id: str) -> RequestResult | None:
        """Drop a request (client gone); its blocks are freed. None if it already finished."""
        stream = self._streams.pop(request_id, None)
        if stream is None:
            return None
        result = self.engine.abort(request_id)
        stream.error = EngineStopped("aborted")
        stream.wake()
        return result

    # -- the loop -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        engine = self.engine
        clock = self.clock
        try:
            while True:
                if engine.next_event_time() is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if engine.num_running == 0 and engine.num_waiting == 0:
                    # Only requests in the frontend: catch the clock up, then wait for the next one.
                    now = clock.now()
                    if engine.now < now:
                        engine.advance_to(now)
                    if engine.num_waiting == 0:
                        ready = engine.next_event_time()
                        if ready is not None and ready > engine.now:
                            self._wake.clear()
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(self._wake.wait(), clock.real_delay(ready))
                        continue
                step = engine.step()
                self.steps += 1
                delay = clock.real_delay(step.end_time)
                await asyncio.sleep(delay if delay > 0 else 0)
                late = -clock.real_delay(step.end_time)
                if late > 0:
                    self.lateness_sum += late
                    if late > self.lateness_max:
                        self.lateness_max = late
                self._deliver(step)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("engine driver failed")
            self._fail_all(EngineStopped(f"engine failure: {exc}"))
            raise

    def _deliver(self, step: StepResult) -> None:
        streams = self._streams
        end = step.end_time
        ttfts: list[float] = []
        itls: list[float] = []
        touched: dict[str, RequestStream] = {}
        for rid, token in step.tokens:
            stream = streams.get(rid)
            if stream is None:
                continue
            last = stream.last_token_time
            if last is None:
                ttfts.append(end - stream.arrival_time)
            else:
                itls.append(end - last)
            stream.last_token_time = end
            stream.tokens.append(token)
            if stream.streaming:
                touched[rid] = stream
        finished: list[tuple[RequestResult, RequestStream]] = []
        for result in step.finished:
            stream = streams.pop(result.request_id, None)
            if stream is None:
                continue
            stream.result = result
            touched[result.request_id] = stream
            finished.append((result, stream))
        delivery = StepDelivery(step, ttfts, itls, finished)
        for observer in self.observers:
            try:
                observer(delivery)
            except Exception:
                log.exception("step observer failed")
        for stream in touched.values():
            stream.wake()

    def _fail_all(self, error: BaseException) -> None:
        streams, self._streams = self._streams, {}
        for rid, stream in streams.items():
            with contextlib.suppress(Exception):
                self.engine.abort(rid)
            stream.error = error
            stream.wake()
