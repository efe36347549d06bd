"""The metrics scraper on loopback: real simulated servers of each engine type (values appear and follow
the load), endpoints that come and go, and endpoints that are dead, hang, answer garbage or answer in
unusual HTTP framings -- none of which may crash the scraper, pile up work, or overwrite a good snapshot.

Waiting is event-driven: ``wait_for`` subscribes to the scraper's per-scrape notifications and returns
as soon as a condition holds (bounded by a deadline)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from endpoint_picker.datalayer import (
    ENGINE_TYPE_LABEL,
    EndpointMetrics,
    MetricsScraper,
    MetricsStore,
    ScrapeSource,
    is_stale,
)
from endpoint_picker.datastore import Datastore, Endpoint
from extproc.tls import self_signed
from simulator.engine import EngineConfig
from simulator.server import SimServer, SimServerConfig

INTERVAL = 0.02
TIMEOUT = 0.3


async def wait_for(scraper: MetricsScraper, condition: Callable[[], bool], within: float = 5.0) -> None:
    """Return once ``condition()`` holds, re-checking after every scrape the scraper reports."""
    changed = asyncio.Event()
    unsubscribe = scraper.add_listener(lambda *_: changed.set())
    try:
        async with asyncio.timeout(within):
            while not condition():
                changed.clear()
                await changed.wait()
    finally:
        unsubscribe()


@contextlib.asynccontextmanager
async def scraping(endpoints: list[Endpoint], **kwargs: object) -> AsyncIterator[tuple[MetricsScraper, Datastore]]:
    datastore = Datastore()
    datastore.replace_endpoints(endpoints)
    options: dict[str, object] = {"interval": INTERVAL, "timeout": TIMEOUT}
    options.update(kwargs)
    scraper = MetricsScraper(datastore, MetricsStore(), **options)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, object]] = []  # e.g. "Fatal error: protocol.buffer_updated() call failed"
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    task = asyncio.create_task(scraper.run())
    try:
        yield scraper, datastore
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loop.set_exception_handler(previous_handler)
    assert task.done()
    assert loop_errors == []


def endpoint(port: int, name: str = "ep", engine: str | None = None) -> Endpoint:
    return Endpoint(name, "127.0.0.1", port, {ENGINE_TYPE_LABEL: engine} if engine else {})


@contextlib.asynccontextmanager
async def raw_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                     ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A loopback TCP server running ``handler`` per connection; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            tasks.discard(task)
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, then close at once."""


def answering(*responses: bytes, close: bool = False) -> Callable[..., Awaitable[None]]:
    """A handler that answers each request with the next response (the last one repeats)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = 0
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(responses[min(i, len(responses) - 1)])
            await writer.drain()
            i += 1
            if close:
                return

    return handle


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


PAGE = b'# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine="0"} 3.0\n' \
       b'vllm:num_requests_running{engine="0"} 5.0\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n'


# -- real simulated servers ----------------------------------------------------------------------------


async def test_values_from_each_engine_type_appear_and_follow_the_load() -> None:
    config = EngineConfig(num_gpu_blocks=1000, max_num_seqs=1)
    servers = [await SimServer(SimServerConfig(name=kind, engine_kind=kind, engine=config)).start()
               for kind in ("vllm", "sglang", "trtllm-serve")]
    try:
        endpoints = [endpoint(s.port, s.name, s.config.engine_kind) for s in servers]
        async with scraping(endpoints) as (scraper, _ds), aiohttp.ClientSession() as session:
            store = scraper.store
            keys = [ep.key for ep in endpoints]
            await wait_for(scraper, lambda: all(store.get(k) is not None for k in keys))
            for key in keys:
                m = store.get(key)
                assert m is not None
                assert (m.block_size, m.num_gpu_blocks, m.running_requests, m.waiting_queue_size) == (16, 1000, 0, 0)

            # Load the vLLM server: one request runs (max_num_seqs 1), two queue.
            body = {"prompt": "hello " * 20, "max_tokens": 400, "ignore_eos": True, "stream": True}

            async def request() -> None:
                async with session.post(servers[0].url + "/v1/completions", json=body) as resp:
                    async for _chunk in resp.content.iter_any():
                        pass

            load = [asyncio.create_task(request()) for _ in range(3)]
            try:
                def loaded() -> bool:
                    m = store.get(keys[0])
                    return m is not None and (m.running_requests, m.waiting_queue_size) == (1, 2)

                await wait_for(scraper, loaded)
                m = store.get(keys[0])
                assert m is not None and m.kv_cache_usage > 0
            finally:
                for t in load:
                    t.cancel()
                await asyncio.gather(*load, return_exceptions=True)
            assert scraper.stats.errors == {}
            assert all(scraper.stats.scrapes[k] >= 1 for k in keys)
    finally:
        for s in servers:
            await s.stop()


async def test_endpoints_that_come_and_go() -> None:
    a = await SimServer(SimServerConfig(name="a")).start()
    b = await SimServer(SimServerConfig(name="b")).start()
    try:
        ep_a, ep_b = endpoint(a.port, "a"), endpoint(b.port, "b")
        async with scraping([ep_a]) as (scraper, datastore):
            store = scraper.store
            await wait_for(scraper, lambda: store.get(ep_a.key) is not None)
            # Added while running: picked up from the datastore's next snapshot.
            datastore.replace_endpoints([ep_a, ep_b])
            await wait_for(scraper, lambda: store.get(ep_b.key) is not None)
            assert scraper.keys == {ep_a.key, ep_b.key}
            # Removed: no longer scraped, forgotten by the store and the stats.
            renders = 0
            render = a.metrics.render

            def counting_render() -> bytes:
                nonlocal renders
                renders += 1
                return render()

            a.metrics.render = counting_render  # type: ignore[method-assign]
            datastore.replace_endpoints([ep_b])
            scraper.sync()
            assert scraper.keys == {ep_b.key}
            assert store.get(ep_a.key) is None and ep_a.key not in scraper.stats.scrapes
            # b keeps being scraped; a, removed, sees no more scrapes.
            before = scraper.stats.scrapes[ep_b.key]
            await wait_for(scraper, lambda: scraper.stats.scrapes[ep_b.key] >= before + 3)
            assert renders == 0 and store.get(ep_a.key) is None
    finally:
        await a.stop()
        await b.stop()


async def test_a_server_that_dies_leaves_its_snapshot_to_age() -> None:
    server = await SimServer(SimServerConfig(name="dying")).start()
    ep = endpoint(server.port, "dying")
    async with scraping([ep]) as (scraper, _ds):
        store = scraper.store
        await wait_for(scraper, lambda: store.get(ep.key) is not None)
        await server.stop()
        await wait_for(scraper, lambda: scraper.stats.errors_of(ep.key) >= 3)
        last = store.get(ep.key)
        assert last is not None
        await wait_for(scraper, lambda: scraper.stats.errors_of(ep.key) >= 5)
        assert store.get(ep.key) is last  # failed scrapes write nothing
        assert set(r for (_k, r) in scraper.stats.errors) <= {"connect", "closed"}
        assert is_stale(last, last.scraped_at + 0.5, 0.2)


# -- misbehaving endpoints -----------------------------------------------------------------------------


async def test_nothing_listening_is_counted_and_backed_off() -> None:
    async with raw_server(answering(ok(PAGE))) as port:
        pass  # the port is free again: connection refused
    ep = endpoint(port)
    async with scraping([ep], max_backoff=0.2) as (scraper, _ds):
        await wait_for(scraper, lambda: scraper.stats.errors_of(ep.key, "connect") >= 5)
        assert scraper.store.get(ep.key) is None
        assert "ConnectionRefusedError" in scraper.stats.last_error[ep.key]


async def test_a_hanging_endpoint_times_out_without_piling_up() -> None:
    open_now = 0
    most_open = 0

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        try:
            await reader.read()  # until the scraper gives up and closes
        finally:
            open_now -= 1

    async with raw_server(hang) as port, raw_server(answering(ok(PAGE))) as good_port:
        slow, good = endpoint(port, "slow"), endpoint(good_port, "good")
        async with scraping([slow, good], max_backoff=TIMEOUT) as (scraper, _ds):
            loop = asyncio.get_running_loop()
            started = loop.time()
            await wait_for(scraper, lambda: scraper.stats.errors_of(slow.key, "timeout") >= 1)
            first = loop.time() - started
            assert TIMEOUT <= first + INTERVAL and first < TIMEOUT + 0.5  # bounded by the timeout
            tasks_then = len(asyncio.all_tasks())
            await wait_for(scraper, lambda: scraper.stats.errors_of(slow.key, "timeout") >= 3)
            assert len(asyncio.all_tasks()) <= tasks_then + 1
            assert most_open <= 2  # one scrape at a time (a closing one may overlap the next)
            # The healthy endpoint kept being scraped at its pace meanwhile.
            assert scraper.stats.scrapes[good.key] >= 3 * TIMEOUT / INTERVAL / 2
            assert scraper.store.get(slow.key) is None


@pytest.mark.parametrize(("responses", "reason"), [
    ((b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy!",), "status"),
    ((b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",), "status"),
    ((ok(b"<html><body>hello</body></html>"),), "parse"),
    ((ok(b'vllm:num_requests_running{engine="0"} lots\n'),), "parse"),
    ((b"SSH-2.0-OpenSSH_9.6\r\n\r\n",), "protocol"),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",), "protocol"),
    ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",), "protocol"),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",), "too_large"),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",), "timeout"),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\npartial answer, then the server goes away",), "closed"),
])
async def test_garbage_answers_are_counted_and_never_stored(responses: tuple[bytes, ...], reason: str) -> None:
    async with raw_server(answering(*responses, close=reason == "closed")) as port:
        ep = endpoint(port)
        async with scraping([ep], max_body_bytes=50_000) as (scraper, _ds):
            await wait_for(scraper, lambda: scraper.stats.errors_of(ep.key, reason) >= 2)
            assert scraper.store.get(ep.key) is None
            assert scraper.stats.errors_of(ep.key) == scraper.stats.errors_of(ep.key, reason)


async def test_a_server_that_hangs_up_at_once() -> None:
    async with raw_server(hang_up) as port:
        ep = endpoint(port)
        async with scraping([ep], max_backoff=0.1) as (scraper, _ds):
            await wait_for(scraper, lambda: scraper.stats.errors_of(ep.key, "closed") >= 3)
            assert scraper.store.get(ep.key) is None
            assert scraper.stats.errors_of(ep.key) == scraper.stats.errors_of(ep.key, "closed")


async def test_a_bad_answer_leaves_the_last_good_snapshot() -> None:
    good = ok(PAGE)
    async with raw_server(answering(good, good, ok(b"<html>maintenance</html>"))) as port:
        ep = endpoint(port)
        async with scraping([ep]) as (scraper, _ds):
            await wait_for(scraper, lambda: scraper.stats.errors_of(ep.key, "parse") >= 2)
            m = scraper.store.get(ep.key)
            assert m is not None and (m.waiting_queue_size, m.running_requests, m.kv_cache_usage) == (3, 5, 0.25)


def chunked(body: bytes, size: int) -> bytes:
    parts = [b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + b"0\r\nX-Trailer: 1\r\n\r\n"


@pytest.mark.parametrize("framing", ["chunked", "connection-close", "http10-until-eof", "split-writes"])
async def test_http_framings(framing: str) -> None:
    if framing == "chunked":
        handler = answering(chunked(PAGE, 7))
    elif framing == "connection-close":
        handler = answering(ok(PAGE).replace(b"200 OK\r\n", b"200 OK\r\nConnection: close\r\n"), close=True)
    elif framing == "http10-until-eof":
        handler = answering(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + PAGE, close=True)
    else:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                response = ok(PAGE)
                for i in range(0, len(response), 17):
                    writer.write(response[i:i + 17])
                    await writer.drain()
                    await asyncio.sleep(0)
    async with raw_server(handler) as port:
        ep = endpoint(port)
        async with scraping([ep]) as (scraper, _ds):
            await wait_for(scraper, lambda: scraper.stats.scrapes.get(ep.key, 0) >= 3)
            m = scraper.store.get(ep.key)
            assert m is not None and (m.waiting_queue_size, m.running_requests, m.kv_cache_usage) == (3, 5, 0.25)
            assert scraper.stats.errors == {}


def server_tls_context() -> ssl.SSLContext:
    key_pem, cert_pem = self_signed("metrics")
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp, "tls.key"), Path(tmp, "tls.crt")
        key.write_bytes(key_pem)
        cert.write_bytes(cert_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    return context


async def test_https_with_insecure_skip_verify() -> None:
    context = server_tls_context()
    async with raw_server(answering(ok(PAGE)), ssl_context=context) as port:
        ep = endpoint(port)
        async with scraping([ep], source=ScrapeSource(scheme="https")) as (scraper, _ds):
            await wait_for(scraper, lambda: scraper.store.get(ep.key) is not None)
            m = scraper.store.get(ep.key)
            assert isinstance(m, EndpointMetrics) and m.running_requests == 5


async def test_listeners_see_every_outcome_and_can_unsubscribe() -> None:
    async with raw_server(answering(ok(PAGE))) as port:
        ep = endpoint(port)
        seen: list[tuple[str, bool, str | None]] = []
        async with scraping([ep]) as (scraper, _ds):
            unsubscribe = scraper.add_listener(lambda key, m, reason: seen.append((key, m is not None, reason)))
            await wait_for(scraper, lambda: len(seen) >= 2)
            unsubscribe()
            count = len(seen)
            before = scraper.stats.scrapes[ep.key]
            await wait_for(scraper, lambda: scraper.stats.scrapes[ep.key] >= before + 2)
            assert len(seen) == count and seen[0] == (ep.key, True, None)
