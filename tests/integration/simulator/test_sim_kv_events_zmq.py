"""KV-cache events from a running simulated server, received on real ZMQ sockets: a SUB socket gets
BlockStored batches whose hashes are vLLM's for the prompt, sequence numbers count up, the replay
ROUTER resends buffered batches with vLLM's end marker, and a prefix-cache reset sends AllBlocksCleared."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import zmq
import zmq.asyncio

from simulator.engine import EngineConfig
from simulator.engine.hashing import compute_block_hashes
from simulator.engine.tokenizer import encode
from simulator.server import SimServer, SimServerConfig, parse_kv_events_config
from simulator.server.kv_wire import END_SEQ, decode_seq, encode_seq

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KV_CONFIG = parse_kv_events_config(
    '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://127.0.0.1:*", '
    '"replay_endpoint": "tcp://127.0.0.1:*", "topic": "kv@{host}:{port}@{model}", "buffer_steps": 100}'
)


def prompt_text(tag: str) -> str:
    """64 single-token words: exactly 4 full blocks."""
    return " ".join(f"{tag}{i}" for i in range(64))


@contextlib.asynccontextmanager
async def kv_server() -> AsyncIterator[tuple[SimServer, aiohttp.ClientSession, zmq.asyncio.Context]]:
    config = SimServerConfig(name="kv", time_scale=200.0, kv_events=KV_CONFIG,
                             engine=EngineConfig(num_gpu_blocks=1000))
    server = await SimServer(config).start()
    ctx = zmq.asyncio.Context()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            yield server, session, ctx
    finally:
        await server.stop()
        ctx.destroy(linger=0)


async def complete(session: aiohttp.ClientSession, server: SimServer, prompt: str) -> None:
    async with session.post(server.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 2}) as resp:
        assert resp.status == 200
        await resp.read()


async def recv(sock: zmq.asyncio.Socket, wait_s: float) -> list[bytes] | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            return await sock.recv_multipart()
    return None


def decode(payload: bytes) -> list[Any]:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


async def test_sub_socket_receives_block_stored_with_vllm_hashes() -> None:
    async with kv_server() as (server, session, ctx):
        assert server.kv_events_endpoint is not None and server.kv_events_endpoint.startswith("tcp://127.0.0.1:")
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"kv@")
        sub.connect(server.kv_events_endpoint)
        # PUB drops messages until the subscription has propagated: probe until one arrives.
        frames = None
        for attempt in range(50):
            await complete(session, server, prompt_text(f"probe{attempt}x"))
            frames = await recv(sub, 0.1)
            if frames is not None:
                break
        assert frames is not None, "no KV event reached the subscriber"
        while await recv(sub, 0.05) is not None:  # drain the rest of the probes
            pass

        prompt = prompt_text("live")
        await complete(session, server, prompt)
        frames = await recv(sub, 5)
        assert frames is not None and len(frames) == 3
        topic, seq, payload = frames
        assert topic == f"kv@{server.host}:{server.port}@{MODEL}".encode()
        assert len(seq) == 8
        ts, events, rank = decode(payload)
        assert isinstance(ts, float) and rank == 0
        (stored,) = events
        assert stored["type"] == "BlockStored"
        assert stored["block_hashes"] == compute_block_hashes(encode(prompt), 16)
        assert stored["parent_block_hash"] is None and stored["token_ids"] == encode(prompt)
        assert stored["block_size"] == 16 and stored["medium"] == "GPU" and stored["extra_keys"] == [None] * 4

        await complete(session, server, prompt_text("next"))
        frames2 = await recv(sub, 5)
        assert frames2 is not None and decode_seq(frames2[1]) == decode_seq(seq) + 1
        sub.close(linger=0)


async def test_replay_resends_buffered_batches_then_the_end_marker() -> None:
    async with kv_server() as (server, session, ctx):
        prompts = [prompt_text("a"), prompt_text("b")]
        for p in prompts:
            await complete(session, server, p)
        assert server.publisher is not None and server.publisher.next_seq == 2
        dealer = ctx.socket(zmq.DEALER)
        assert server.kv_events_replay_endpoint is not None
        dealer.connect(server.kv_events_replay_endpoint)
        await dealer.send_multipart([b"", encode_seq(1)])  # REQ-style envelope, start at seq 1
        reply = await recv(dealer, 5)
        assert reply is not None
        empty, topic, seq, payload = reply
        assert empty == b"" and topic.startswith(b"kv@") and decode_seq(seq) == 1
        (stored,) = decode(payload)[1]
        assert stored["block_hashes"] == compute_block_hashes(encode(prompts[1]), 16)
        end = await recv(dealer, 5)
        assert end == [b"", b"", END_SEQ, b""]
        dealer.close(linger=0)


async def test_prefix_cache_reset_publishes_all_blocks_cleared() -> None:
    async with kv_server() as (server, session, ctx):
        await complete(session, server, prompt_text("c"))
        async with session.post(server.url + "/reset_prefix_cache") as resp:
            assert resp.status == 200
        dealer = ctx.socket(zmq.DEALER)
        assert server.kv_events_replay_endpoint is not None
        dealer.connect(server.kv_events_replay_endpoint)
        await dealer.send_multipart([b"", encode_seq(0)])
        types = []
        for _ in range(10):
            reply = await recv(dealer, 5)
            assert reply is not None
            if reply[2] == END_SEQ:
                break
            types += [e["type"] for e in decode(reply[3])[1]]
        assert types == ["BlockStored", "AllBlocksCleared"]
        dealer.close(linger=0)
