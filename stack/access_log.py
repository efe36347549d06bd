"""Read the local gateway's Envoy access log as structured entries.

Why this module exists: the access log is where Envoy says what it did with a request — status, response
flags (``UH``, ``UF``, ``SI``), response-code details (``ext_proc_error_gRPC_error_14``, ImmediateResponse
details), the upstream host actually used and the ``envoy.lb`` metadata the picker set. Tests assert on those
fields, so the line format in ``manifests/local-gateway/envoy-bootstrap.yaml`` and this parser belong
together:

``%RESPONSE_CODE% flags=… details=… route=… upstream=… md=… dur=…ms method=… path=… local=… rid=…``
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_KEYS = ("flags", "details", "route", "upstream", "md", "dur", "method", "path", "local", "rid")
_SPLIT = re.compile(r" (?=(?:" + "|".join(_KEYS) + r")=)")


@dataclass(frozen=True)
class AccessLogEntry:
    """One request as Envoy logged it. ``"-"`` in the log becomes ``""`` (or ``None`` for numbers)."""

    status: int
    flags: str
    details: str
    route: str
    upstream: str
    metadata: dict[str, Any]
    duration_ms: int | None
    method: str
    path: str
    local: str
    request_id: str
    raw: str

    @property
    def destination(self) -> str | None:
        """The picker's ``x-gateway-destination-endpoint`` from ``envoy.lb`` metadata, if any."""
        value = self.metadata.get("x-gateway-destination-endpoint")
        return value if isinstance(value, str) else None

    @property
    def served(self) -> str | None:
        """The host override_host reported as actually used (``x-gateway-destination-endpoint-served``)."""
        value = self.metadata.get("x-gateway-destination-endpoint-served")
        return value if isinstance(value, str) else None


def _dash(value: str) -> str:
    return "" if value == "-" else value


def parse_line(line: str) -> AccessLogEntry | None:
    """Parse one access-log line; None for lines in another format."""
    line = line.rstrip("\n")
    head, *rest = _SPLIT.split(line)
    if not head.strip().isdigit():
        return None
    fields = {}
    for part in rest:
        key, _, value = part.partition("=")
        fields[key] = value.strip()
    metadata: dict[str, Any] = {}
    raw_md = _dash(fields.get("md", "-"))
    if raw_md:
        try:
            parsed = json.loads(raw_md)
            if isinstance(parsed, dict):
                metadata = parsed
        except json.JSONDecodeError:
            metadata = {"_unparsed": raw_md}
    duration = fields.get("dur", "-").removesuffix("ms")
    return AccessLogEntry(
        status=int(head.strip()),
        flags=_dash(fields.get("flags", "-")),
        details=_dash(fields.get("details", "-")),
        route=_dash(fields.get("route", "-")),
        upstream=_dash(fields.get("upstream", "-")),
        metadata=metadata,
        duration_ms=int(duration) if duration.isdigit() else None,
        method=_dash(fields.get("method", "-")),
        path=_dash(fields.get("path", "-")),
        local=_dash(fields.get("local", "-")),
        request_id=_dash(fields.get("rid", "-")),
        raw=line,
    )


def read_access_log(path: Path) -> list[AccessLogEntry]:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [entry for line in text.splitlines() if (entry := parse_line(line)) is not None]


def wait_for_entry(
    path: Path,
    predicate: Callable[[AccessLogEntry], bool],
    *,
    within: float = 5.0,
    poll: float = 0.02,
) -> AccessLogEntry:
    """Poll the log until an entry matches (Envoy flushes every 50 ms with the stack's flags); bounded."""
    deadline = time.monotonic() + within
    while True:
        for entry in reversed(read_access_log(path)):
            if predicate(entry):
                return entry
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no matching access-log entry in {path} within {within}s")
        time.sleep(poll)


def entry_for_request(path: Path, request_id: str, *, within: float = 5.0) -> AccessLogEntry:
    """The entry of the request with this ``x-request-id`` (send one to make requests traceable)."""
    return wait_for_entry(path, lambda e: e.request_id == request_id, within=within)
