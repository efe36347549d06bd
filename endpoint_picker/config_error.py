"""A configuration error that names the offending field, so the picker can refuse to start with a clear message."""

from __future__ import annotations


class ConfigError(Exception):
    """Invalid configuration; ``field`` is a dotted path such as ``endpoints[2].port``."""

    def __init__(self, field: str, message: str, source: str | None = None) -> None:
        self.field = field
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}")
