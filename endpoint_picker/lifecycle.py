"""The life of one routed request after its endpoint was chosen: response observation and release.

A :class:`RoutedRequest` is created by the director when it picks an endpoint and is told what the protocol
layer sees of the response (headers, first token, usage, end). It releases its in-flight lease exactly once,
whether the response completed, failed, or the client went away.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from endpoint_picker.inflight import InFlightTracker, Lease
from endpoint_picker.metrics import ModelMetrics
from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling import SchedulingResult


@dataclass(slots=True)
class Usage:
    """Token counts reported by the model server in the response's ``usage`` object."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(slots=True)
class ResponseSummary:
    """What the protocol layer observed of a finished response."""

    usage: Usage | None = None
    first_token_at: float | None = None  # time.monotonic() of the first token (or first body byte)
    last_token_at: float | None = None
    response_bytes: int = 0
    stream_events: int = 0  # SSE events with content: the output-token count when usage is absent


class RoutedRequest:
    """A request with its pick; collects response observations and releases the lease once."""

    __slots__ = ("_inflight", "_metrics", "_on_done", "_result", "lease", "request", "result", "scores", "served",
                 "started_at", "status")

    def __init__(self, request: InferenceRequest, result: SchedulingResult, lease: Lease,
                 inflight: InFlightTracker, metrics: ModelMetrics, started_at: float,
                 on_done: Callable[[InferenceRequest, str | None], None] | None = None) -> None:
        self.request = request
        self.result = result
        self.lease = lease
        self.started_at = started_at
        self.served: str | None = None
        self.status: int | None = None
        self._inflight = inflight
        self._metrics = metrics
        self._result: str | None = None  # "complete" | "aborted" once finished
        self._on_done = on_done  # the scheduler's response-complete hooks
        self.scores: str | None = None  # JSON of the primary profile's total scores, when emitted to the proxy

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def destination(self) -> str:
        """The value of the destination header and ``envoy.lb`` metadata: primary, then fallbacks."""
        return ",".join(ep.key for ep in self.result.targets)

    def on_response_headers(self, status: int | None, served: str | None) -> None:
        """The model server answered; ``served`` is the endpoint the proxy actually used, if it reported it."""
        self.status = status
        if served and served != self.lease.key and not self.lease.released:
            # The proxy retried onto a fallback: move our accounting to where the request really runs.
            tokens = self.lease.tokens
            self.lease.release()
            self.lease = self._inflight.acquire(served, tokens)
        if served:
            self.served = served

    def complete(self, summary: ResponseSummary) -> None:
        if self._result is not None:
            return
        self._result = "complete"
        self.lease.release()
        self._record(summary)
        if self._on_done is not None:
            self._on_done(self.request, self.served or self.lease.key)

    def abort(self, reason: str) -> None:
        """The stream ended before the response did (client disconnect, proxy error): release and count."""
        if self._result is not None:
            return
        self._result = "aborted"
        self.lease.release()
        if self._on_done is not None:
            self._on_done(self.request, self.served or self.lease.key)
        self._metrics.running.dec()
        self._metrics.error("Unknown")

    def _record(self, summary: ResponseSummary) -> None:
        m = self._metrics
        m.running.dec()
        if self.status is not None and self.status >= 500:
            m.error("ModelServerError")
        elapsed = time.monotonic() - self.started_at
        m.duration.observe(elapsed)
        m.response_sizes.observe(summary.response_bytes)
        usage = summary.usage
        output_tokens = 0
        if usage is not None:
            if usage.prompt_tokens is not None:
                m.input_tokens.observe(usage.prompt_tokens)
            if usage.completion_tokens is not None:
                output_tokens = usage.completion_tokens
                m.output_tokens.observe(output_tokens)
                if output_tokens > 0:
                    m.ntpot.observe(elapsed / output_tokens)
            if usage.cached_tokens is not None:
                m.cached_tokens.observe(usage.cached_tokens)
        if summary.first_token_at is not None:
            m.ttft.observe(max(0.0, summary.first_token_at - self.started_at))
            output_tokens = output_tokens or summary.stream_events
            if output_tokens > 1 and summary.last_token_at is not None:
                m.tpot.observe(max(0.0, summary.last_token_at - summary.first_token_at) / (output_tokens - 1))
