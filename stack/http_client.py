"""Minimal HTTP client for talking to the local gateway: status, headers and the whole body, nothing hidden.

Why this module exists: the demo of ``endpoint-picker stack`` and the integration tests want the raw outcome
of one request through Envoy (status, every header such as ``x-served-by``, the exact body bytes including
SSE framing) without a client library retrying, decompressing or raising on 5xx. There is a blocking
variant on ``http.client`` (usable from any test, sync or async, and from any thread) and an ``aiohttp`` one
for code that already runs an event loop.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class HttpResult:
    """One HTTP exchange. Header names are lower-case; repeated headers are joined with ``", "``."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    @property
    def served_by(self) -> str | None:
        """Name of the stand-in that answered (``x-served-by``), None if no model server answered."""
        return self.headers.get("x-served-by")

    @property
    def served_by_address(self) -> str | None:
        return self.headers.get("x-served-by-address")

    def sse_events(self) -> list[str]:
        return sse_data(self.body)


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body in order (``[DONE]`` included as the string ``"[DONE]"``)."""
    events: list[str] = []
    for block in body.decode(errors="replace").replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append("\n".join(data))
    return events


def _encode(json_body: Any, body: bytes | None) -> tuple[bytes | None, dict[str, str]]:
    if json_body is not None and body is not None:
        raise ValueError("pass either json_body or body")
    if json_body is not None:
        return json.dumps(json_body).encode(), {"content-type": "application/json"}
    return body, {}


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def request(
    url: str,
    method: str = "GET",
    *,
    json_body: Any = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    time_limit: float = 30.0,
    chunk_size: int | None = None,
) -> HttpResult:
    """Blocking request with ``http.client``; a new connection per call; ``time_limit`` bounds each socket
    operation. ``chunk_size`` sends the body with ``Transfer-Encoding: chunked`` in chunks of that size
    instead of with ``Content-Length``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname is None:
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    payload, extra = _encode(json_body, body)
    all_headers = {**extra, **(headers or {})}
    path = parsed.path or "/"
    if parsed.query:
        path += "?" + parsed.query
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=time_limit)
    try:
        send: bytes | Iterable[bytes] | None = payload
        if payload is not None and chunk_size:
            send = _chunks(payload, chunk_size)
            conn.request(method, path, body=send, headers=all_headers, encode_chunked=True)
        else:
            conn.request(method, path, body=send, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        merged: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return HttpResult(resp.status, merged, data)
    finally:
        conn.close()


async def async_request(
    url: str,
    method: str = "GET",
    *,
    json_body: Any = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    time_limit: float = 30.0,
    session: aiohttp.ClientSession | None = None,
) -> HttpResult:
    """The same with ``aiohttp`` (pass ``session`` to reuse connections)."""
    payload, extra = _encode(json_body, body)
    all_headers = {**extra, **(headers or {})}
    own = session is None
    client = session or aiohttp.ClientSession(auto_decompress=False)
    try:
        async with client.request(
            method, url, data=payload, headers=all_headers, timeout=aiohttp.ClientTimeout(total=time_limit)
        ) as resp:
            data = await resp.read()
            merged: dict[str, str] = {}
            for name, value in resp.headers.items():
                key = name.lower()
                merged[key] = f"{merged[key]}, {value}" if key in merged else value
            return HttpResult(resp.status, merged, data)
    finally:
        if own:
            await client.close()


class GatewayClient:
    """Blocking client bound to one gateway URL, with OpenAI-shaped shortcuts for tests."""

    def __init__(self, base_url: str, *, time_limit: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.time_limit = time_limit

    def request(self, method: str, path: str, **kwargs: Any) -> HttpResult:
        kwargs.setdefault("time_limit", self.time_limit)
        return request(self.base_url + path, method, **kwargs)

    def get(self, path: str, **kwargs: Any) -> HttpResult:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> HttpResult:
        return self.request("POST", path, json_body=json_body, **kwargs)

    def completion(
        self,
        prompt: str = "hello gateway",
        *,
        max_tokens: int = 4,
        stream: bool = False,
        include_usage: bool = True,
        model: str = "standin-model",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> HttpResult:
        body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens, **extra}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": include_usage}
        return self.post("/v1/completions", body, headers=headers)

    def chat(
        self,
        content: str = "hello gateway",
        *,
        max_tokens: int = 4,
        stream: bool = False,
        include_usage: bool = True,
        model: str = "standin-model",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> HttpResult:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            **extra,
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": include_usage}
        return self.post("/v1/chat/completions", body, headers=headers)
