"""Publishes a simulated engine's KV-cache events over ZMQ, as vLLM's ``ZmqEventPublisher`` does.

Why it exists: precise prefix routing learns what every engine caches from these events. The server hands
over each engine step's events (``publish``: encode, stamp the next sequence number, keep the batch for
replay, queue it -- never blocks); a background task sends the queued frames on a PUB socket, and a second
task answers replay requests on a ROUTER socket from the last ``buffer_steps`` batches. Everything runs on
the event loop through ``zmq.asyncio``.

Replay protocol (vLLM >= 0.26): a REQ client sends one frame, the 8-byte big-endian first sequence it wants;
the ROUTER sees ``[identity, b"", start]`` and answers, per buffered batch with seq >= start,
``[identity, b"", topic, seq, payload]``, then ``[identity, b"", b"", END_SEQ, b""]``. A DEALER client that
sends no empty delimiter (``[identity, start]``) gets the same replies without it (a simulator leniency).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

import zmq
import zmq.asyncio

from simulator.engine.events import KVCacheEvent
from simulator.server.kv_events_config import KVEventsConfig, is_bind_endpoint
from simulator.server.kv_wire import EventEncoding, decode_seq, encode_batch, event_frames, replay_end_frames

__all__ = ["KVEventPublisher"]

log = logging.getLogger(__name__)


class KVEventPublisher:
    """One PUB socket (+ optional replay ROUTER) for one engine."""

    def __init__(self, config: KVEventsConfig, *, encoding: EventEncoding = "map", dp_rank: int = 0,
                 context: zmq.asyncio.Context | None = None) -> None:
        self.config = config
        self.encoding: EventEncoding = encoding
        self.dp_rank = dp_rank
        self._ctx = context or zmq.asyncio.Context.instance()
        self._pub: zmq.asyncio.Socket | None = None
        self._replay: zmq.asyncio.Socket | None = None
        self._seq = 0
        self._buffer: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=config.buffer_steps)
        self._queue: collections.deque[list[bytes]] = collections.deque()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped_batches = 0
        # The endpoints actually bound or connected (a ``*`` port resolved).
        self.endpoint: str | None = None
        self.replay_endpoint: str | None = None

    @property
    def next_seq(self) -> int:
        return self._seq

    def start(self) -> None:
        cfg = self.config
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, cfg.hwm)
        pub.setsockopt(zmq.LINGER, 0)
        try:
            if is_bind_endpoint(cfg.endpoint):
                pub.bind(cfg.endpoint)
                self.endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                pub.connect(cfg.endpoint)
                self.endpoint = cfg.endpoint
        except BaseException:
            pub.close(linger=0)
            raise
        self._pub = pub
        if cfg.replay_endpoint is not None:
            replay = self._ctx.socket(zmq.ROUTER)
            replay.setsockopt(zmq.SNDHWM, 2 * (cfg.buffer_steps + 1))
            replay.setsockopt(zmq.LINGER, 0)
            try:
                replay.bind(cfg.replay_endpoint)
            except BaseException:
                replay.close(linger=0)
                self.close_sockets()
                raise
            self.replay_endpoint = replay.getsockopt_string(zmq.LAST_ENDPOINT)
            self._replay = replay
            self._tasks.append(asyncio.create_task(self._serve_replay(), name="kv-events-replay"))
        self._tasks.append(asyncio.create_task(self._send_loop(), name="kv-events-pub"))

    def publish(self, events: list[KVCacheEvent], ts: float | None = None) -> None:
        """Queue one batch (one engine step's events); never blocks."""
        if not events or self._pub is None:
            return
        payload = encode_batch(time.time() if ts is None else ts, events, self.dp_rank, self.encoding)
        seq = self._seq
        self._seq += 1
        self._buffer.append((seq, payload))
        if len(self._queue) >= self.config.max_queue_size:
            self._queue.popleft()
            self.dropped_batches += 1
        self._queue.append(event_frames(self.config.topic, seq, payload))
        self._ready.set()

    async def _send_loop(self) -> None:
        pub = self._pub
        assert pub is not None
        queue = self._queue
        while True:
            await self._ready.wait()
            self._ready.clear()
            while queue:
                frames = queue.popleft()
                try:
                    await pub.send_multipart(frames, flags=zmq.NOBLOCK)
                except zmq.Again:  # HWM reached: PUB drops, as vLLM's does
                    self.dropped_batches += 1
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.ETERM or pub.closed:
                        return
                    log.warning("KV event publish failed: %s", exc)

    async def _serve_replay(self) -> None:
        sock = self._replay
        assert sock is not None
        topic = self.config.topic
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError:
                return
            if len(frames) == 3 and frames[1] == b"":
                envelope = [frames[0], b""]
            elif len(frames) == 2:
                envelope = [frames[0]]
            else:
                log.warning("KV event replay: ignoring a request of %d frames", len(frames))
                continue
            start = decode_seq(frames[-1])
            try:
                for seq, payload in list(self._buffer):
                    if seq >= start:
                        await sock.send_multipart(envelope + event_frames(topic, seq, payload))
                await sock.send_multipart(envelope + replay_end_frames())
            except zmq.ZMQError as exc:
                log.warning("KV event replay failed: %s", exc)

    def close_sockets(self) -> None:
        for sock in (self._pub, self._replay):
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        self._pub = None
        self._replay = None

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.close_sockets()
