"""Endpoint discovery from a YAML file, for running without Kubernetes.

The file holds a top-level ``endpoints:`` list (``address``, ``port``, optional ``name`` and ``labels``) and
an optional ``pool:`` mapping. It is read once at start (an invalid file stops the picker with a message
naming the field) and re-read whenever it changes; a later invalid version is logged and ignored, so a bad
edit never empties a serving pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from endpoint_picker.config_error import ConfigError
from endpoint_picker.datastore.model import Endpoint, PoolSettings
from endpoint_picker.datastore.store import Datastore

log = logging.getLogger(__name__)

_ENDPOINT_KEYS = {"address", "port", "name", "labels"}
_POOL_KEYS = {"name", "namespace"}


@dataclass(frozen=True, slots=True)
class EndpointsFile:
    pool: PoolSettings
    endpoints: tuple[Endpoint, ...]


def parse_endpoints_file(text: str, source: str = "endpoints file") -> EndpointsFile:
    """Parse and validate the file's text; raises :class:`ConfigError` naming the first bad field."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("(document)", f"not valid YAML: {exc}", source) from None
    if not isinstance(doc, dict):
        raise ConfigError("(document)", "must be a mapping with an 'endpoints' list", source)
    unknown = set(doc) - {"endpoints", "pool"}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown top-level key (expected 'endpoints' and 'pool')", source)
    pool = _parse_pool(doc.get("pool"), source)
    items = doc.get("endpoints")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ConfigError("endpoints", "must be a list", source)
    endpoints: list[Endpoint] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        ep = _parse_endpoint(item, f"endpoints[{i}]", source)
        if ep.key in seen:
            raise ConfigError(f"endpoints[{i}]", f"duplicates endpoints[{seen[ep.key]}] ({ep.key})", source)
        seen[ep.key] = i
        endpoints.append(ep)
    return EndpointsFile(pool=pool, endpoints=tuple(endpoints))


def _parse_pool(raw: Any, source: str) -> PoolSettings:
    if raw is None:
        return PoolSettings()
    if not isinstance(raw, dict):
        raise ConfigError("pool", "must be a mapping", source)
    for key in raw:
        if key not in _POOL_KEYS:
            raise ConfigError(f"pool.{key}", f"unknown key (expected one of {sorted(_POOL_KEYS)})", source)
    for key in _POOL_KEYS:
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise ConfigError(f"pool.{key}", "must be a non-empty string", source)
    return PoolSettings(**raw)


def _parse_endpoint(raw: Any, where: str, source: str) -> Endpoint:
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a mapping with 'address' and 'port'", source)
    for key in raw:
        if key not in _ENDPOINT_KEYS:
            raise ConfigError(f"{where}.{key}", f"unknown key (expected one of {sorted(_ENDPOINT_KEYS)})", source)
    address = raw.get("address")
    if not isinstance(address, str) or not address:
        raise ConfigError(f"{where}.address", "required: an IP address", source)
    port = raw.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}.port", "required: an integer in 1..65535", source)
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) for k in labels):
        raise ConfigError(f"{where}.labels", "must be a mapping of strings to strings", source)
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"{where}.name", "must be a non-empty string", source)
    try:
        return Endpoint(
            name=name or f"{address}:{port}",
            address=address,
            port=port,
            labels={k: str(v) for k, v in labels.items()},
        )
    except ValueError as exc:
        raise ConfigError(f"{where}.address", f"{exc} (an IP address is required, not a hostname)", source) from None


class StaticFileSource:
    """Feeds a :class:`Datastore` from an endpoints file and follows changes to it."""

    def __init__(self, path: Path, datastore: Datastore, poll_interval: float = 0.25) -> None:
        self._path = path
        self._datastore = datastore
        self._poll_interval = poll_interval
        self._signature: tuple[int, int, int] | None = None

    def load(self) -> None:
        """First load; raises :class:`ConfigError` (or OSError) so the caller can refuse to start."""
        self._signature = self._stat()
        self._apply(parse_endpoints_file(self._path.read_text(), str(self._path)))

    async def run(self) -> None:
        """Poll the file's identity (mtime, size, inode) and reload when it changes. Runs until cancelled."""
        while True:
            await asyncio.sleep(self._poll_interval)
            with contextlib.suppress(OSError):
                signature = self._stat()
                if signature != self._signature:
                    self._signature = signature
                    await self._reload()

    async def _reload(self) -> None:
        try:
            text = await asyncio.to_thread(self._path.read_text)
            parsed = parse_endpoints_file(text, str(self._path))
        except (OSError, ConfigError) as exc:
            log.error("keeping the previous endpoints: cannot reload %s: %s", self._path, exc)
            return
        self._apply(parsed)
        log.info("reloaded %s: %d endpoints", self._path, len(parsed.endpoints))

    def _apply(self, parsed: EndpointsFile) -> None:
        self._datastore.set_pool(parsed.pool)
        self._datastore.replace_endpoints(parsed.endpoints)

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)
