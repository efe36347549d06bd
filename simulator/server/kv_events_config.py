"""vLLM's ``--kv-events-config``: where and how a model server publishes KV-cache events.

Why it exists: consumers (our precise prefix index, llm-d, Dynamo, vllm-router ``kv_aware``) are
configured against vLLM's JSON, so the simulator accepts the very same object (``vllm/config/kv_events.py``)
and applies vLLM's rules: ``publisher`` defaults to ``"zmq"`` when events are enabled, else ``"null"``;
an endpoint is *bound* when it contains ``*`` or ``::`` or is ``ipc://`` / ``inproc://``, otherwise the
publisher *connects* to it; the replay endpoint is always bound.

Simulator additions, for many servers in one process:

- ``endpoint``, ``replay_endpoint`` and ``topic`` may contain ``{host}``, ``{port}``, ``{model}`` and
  ``{index}`` placeholders (the server's HTTP host and port, its served model name, its replica index),
  e.g. ``"topic": "kv@{host}:{port}@{model}"`` -- llm-d's convention;
- for replica ``index`` > 0, an explicit TCP port without placeholders is offset by the index, as vLLM
  offsets it by the data-parallel rank;
- ``tcp://127.0.0.1:*`` binds an ephemeral loopback port (ZMQ's wildcard port); the server reports the
  endpoint it actually bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

import orjson

__all__ = ["KVEventsConfig", "is_bind_endpoint", "parse_kv_events_config"]

_TCP_PORT = re.compile(r"^(tcp://.+:)(\d+)$")


def is_bind_endpoint(endpoint: str) -> bool:
    """vLLM's rule: bind when the endpoint has a wildcard or is ipc/inproc, else connect."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def _offset_port(endpoint: str, offset: int) -> str:
    if offset == 0:
        return endpoint
    if endpoint.startswith("inproc://") or endpoint.startswith("ipc://"):
        return f"{endpoint}_dp{offset}"
    match = _TCP_PORT.match(endpoint)
    if match is None or int(match.group(2)) == 0:
        return endpoint
    return f"{match.group(1)}{int(match.group(2)) + offset}"


@dataclass(frozen=True, slots=True)
class KVEventsConfig:
    """The fields of vLLM's ``KVEventsConfig`` (defaults as in vLLM 0.33)."""

    enable_kv_cache_events: bool = False
    publisher: str | None = None
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = 10_000
    hwm: int = 100_000
    max_queue_size: int = 100_000
    topic: str = ""

    def __post_init__(self) -> None:
        if self.publisher is None:
            object.__setattr__(self, "publisher", "zmq" if self.enable_kv_cache_events else "null")
        if self.publisher not in ("zmq", "null"):
            raise ValueError(f"unsupported KV events publisher {self.publisher!r} (supported: zmq, null)")
        for name in ("buffer_steps", "hwm", "max_queue_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"kv-events-config {name} must be >= 1")

    @property
    def active(self) -> bool:
        """Whether a ZMQ publisher should run."""
        return self.enable_kv_cache_events and self.publisher == "zmq"

    def for_replica(self, *, index: int, host: str, port: int, model: str) -> KVEventsConfig:
        """This config with placeholders filled and ports offset for one server of a fleet."""

        def fill(text: str) -> str:
            if "{" not in text:
                return text
            return text.format(host=host, port=port, model=model, index=index)

        def endpoint(text: str) -> str:
            return fill(text) if "{" in text else _offset_port(text, index)

        return replace(
            self,
            endpoint=endpoint(self.endpoint),
            replay_endpoint=None if self.replay_endpoint is None else endpoint(self.replay_endpoint),
            topic=fill(self.topic),
        )


_FIELDS = {f.name for f in fields(KVEventsConfig)}


def parse_kv_events_config(text: str | dict[str, Any]) -> KVEventsConfig:
    """A ``KVEventsConfig`` from vLLM's JSON (or an already-decoded mapping); unknown keys are an error."""
    data = orjson.loads(text) if isinstance(text, str) else text
    if not isinstance(data, dict):
        raise ValueError("--kv-events-config must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown --kv-events-config keys: {', '.join(unknown)}")
    return KVEventsConfig(**data)
