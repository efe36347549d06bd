"""One streamed OpenAI request, timed the way inference benchmarks time it.

Why this module exists: routers are compared on what a client sees — time to the first token (TTFT), the
gaps between tokens (ITL), time per output token after the first (TPOT) and end-to-end latency — and those
must be measured identically whatever sits in front of the model servers (Envoy, Envoy + this picker,
sglang-router, vllm-router). Definitions follow inference-perf and ``vllm bench serve``: TTFT is the time
from sending the request to the first chunk carrying non-empty text; ITL is every gap between such chunks;
TPOT = (e2e - TTFT) / (output tokens - 1).

Every request opens its own connection: sglang-router adds ~40 ms to streamed responses on a reused
keep-alive connection (peers.md, gotcha 1), and a fresh connection per request costs every target the same.
The usage block (``stream_options.include_usage``) supplies prompt, completion and cached token counts; the
simulator's ``x-served-by-address`` header names the server that answered, whichever router chose it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

# The simulator names the server that answered; routers pass backend headers through (peers.md §4).
SERVED_BY_HEADER = "x-served-by-address"


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What to send: a completions prompt, or chat messages (then ``/v1/chat/completions``)."""

    request_id: str
    model: str
    max_tokens: int
    prompt: str | None = None
    messages: Sequence[Mapping[str, str]] | None = None
    stage: int = 0
    label: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.messages is not None else "/v1/completions"

    def body(self) -> bytes:
        doc: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,  # run to max_tokens, as inference-perf does
            "temperature": 0.0,
        }
        if self.messages is not None:
            doc["messages"] = list(self.messages)
        else:
            doc["prompt"] = self.prompt or ""
        return orjson.dumps(doc)


@dataclass(slots=True)
class RequestResult:
    """What the client saw; times in seconds, ``sent`` on the benchmark's monotonic clock."""

    request_id: str
    stage: int
    label: str
    sent: float
    status: int = 0
    error: str | None = None
    ttft: float | None = None
    e2e: float | None = None
    itl: list[float] = field(default_factory=list)
    output_chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    served_by: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200 and self.ttft is not None

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.output_chunks

    @property
    def tpot(self) -> float | None:
        if not self.ok or self.e2e is None or self.output_tokens < 2:
            return None
        assert self.ttft is not None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "stage": self.stage, "label": self.label, "sent": self.sent,
            "status": self.status, "error": self.error, "ttft": self.ttft, "tpot": self.tpot, "e2e": self.e2e,
            "itl_count": len(self.itl), "output_tokens": self.output_tokens, "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens, "served_by": self.served_by,
        }


def _chunk_text(chunk: Mapping[str, Any]) -> str:
    choices = chunk.get("choices") or ()
    if not choices:
        return ""
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, Mapping):
        return str(delta.get("content") or "")
    return str(choice.get("text") or "")


def _take_usage(result: RequestResult, usage: Mapping[str, Any]) -> None:
    result.prompt_tokens = usage.get("prompt_tokens")
    result.completion_tokens = usage.get("completion_tokens")
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details, Mapping) and details.get("cached_tokens") is not None:
        result.cached_tokens = int(details["cached_tokens"])


async def send(session: aiohttp.ClientSession, base_url: str, request: StreamRequest, *,
               time_limit: float = 120.0) -> RequestResult:
    """Send one streamed request and time it; never raises for a failed request (the result says why)."""
    result = RequestResult(request.request_id, request.stage, request.label, time.monotonic())
    headers = {"content-type": "application/json", "x-request-id": request.request_id, **request.headers}
    last_token = 0.0
    try:
        async with asyncio.timeout(time_limit):
            async with session.post(base_url + request.path, data=request.body(), headers=headers) as resp:
                result.status = resp.status
                result.served_by = resp.headers.get(SERVED_BY_HEADER)
                if resp.status != 200:
                    text = (await resp.read())[:300].decode(errors="replace")
                    result.error = f"HTTP {resp.status}: {text}"
                    return result
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = orjson.loads(data)
                    now = time.monotonic()
                    if _chunk_text(chunk):
                        if result.ttft is None:
                            result.ttft = now - result.sent
                        else:
                            result.itl.append(now - last_token)
                        last_token = now
                        result.output_chunks += 1
                    usage = chunk.get("usage")
                    if usage:
                        _take_usage(result, usage)
                result.e2e = time.monotonic() - result.sent
                if result.ttft is None:
                    result.error = "no tokens in the stream"
    except TimeoutError:
        result.error = f"timed out after {time_limit:g} s"
    except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def new_session() -> aiohttp.ClientSession:
    """A client session that opens one connection per request (``force_close``), unbounded in number."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
