"""Learns what a response says about its request: token usage, time to first token, time per output token.

Works on the bytes the proxy streams back, without holding the whole response when it is an SSE stream:
SSE lines are scanned as they arrive and only events that carry a non-null ``usage`` are JSON-decoded.
Plain JSON responses are buffered (bounded) and decoded once at the end.
"""

from __future__ import annotations

from typing import Any

import orjson

from endpoint_picker.lifecycle import ResponseSummary, Usage

_MAX_JSON_BUFFER = 8 * 1024 * 1024
_MAX_LINE = 1024 * 1024


def usage_from_object(obj: Any) -> Usage | None:
    """Read ``usage`` from a decoded OpenAI (completions, chat, responses) object, or None."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict) and obj.get("type") == "response.completed":
        response = obj.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"), usage.get("input_tokens"))
    completion = _int(usage.get("completion_tokens"), usage.get("output_tokens"))
    cached = None
    # Servers say prompt_tokens_details; the reference parser once read prompt_token_details; Responses API
    # says input_tokens_details. Read all three.
    for details_key in ("prompt_tokens_details", "prompt_token_details", "input_tokens_details"):
        details = usage.get(details_key)
        if isinstance(details, dict):
            cached = _int(details.get("cached_tokens"))
            if cached is not None:
                break
    if prompt is None and completion is None:
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)


def _int(*values: Any) -> int | None:
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


class ResponseObserver:
    """Feed it response body chunks in order; :meth:`summary` tells what was learned."""

    __slots__ = ("_first", "_json_chunks", "_json_overflow", "_json_size", "_last", "_partial", "_usage",
                 "events", "response_bytes", "streaming")

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.response_bytes = 0
        self.events = 0  # SSE data events that carried content (an output-token estimate without usage)
        self._first: float | None = None
        self._last: float | None = None
        self._usage: Usage | None = None
        self._partial = b""
        self._json_chunks: list[bytes] = []
        self._json_size = 0
        self._json_overflow = False

    def feed(self, chunk: bytes, now: float) -> None:
        if not chunk:
            return
        self.response_bytes += len(chunk)
        if self.streaming:
            self._feed_sse(chunk, now)
            return
        if self._first is None:
            self._first = now
        self._last = now
        if self._json_overflow:
            return
        self._json_size += len(chunk)
        if self._json_size > _MAX_JSON_BUFFER:
            self._json_overflow = True
            self._json_chunks.clear()
        else:
            self._json_chunks.append(chunk)

    def _feed_sse(self, chunk: bytes, now: float) -> None:
        data = self._partial + chunk if self._partial else chunk
        lines = data.split(b"\n")
        tail = lines.pop()
        self._partial = tail if len(tail) <= _MAX_LINE else b""
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == b"[DONE]":
                continue
            if b'"usage"' in payload and b'"usage":null' not in payload and b'"usage": null' not in payload:
                try:
                    usage = usage_from_object(orjson.loads(payload))
                except orjson.JSONDecodeError:
                    usage = None
                if usage is not None:
                    self._usage = usage
                    continue  # the usage-only final chunk is not a token
            self.events += 1
            if self._first is None:
                self._first = now
            self._last = now

    def summary(self) -> ResponseSummary:
        if not self.streaming and self._json_chunks and self._usage is None:
            try:
                self._usage = usage_from_object(orjson.loads(b"".join(self._json_chunks)))
            except orjson.JSONDecodeError:
                self._usage = None
            self._json_chunks.clear()
        return ResponseSummary(usage=self._usage, first_token_at=self._first, last_token_at=self._last,
                               response_bytes=self.response_bytes, stream_events=self.events)
