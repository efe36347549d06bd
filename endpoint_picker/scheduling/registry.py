"""The plugin registry: upstream type strings -> plugin classes, with typed, validated parameters.

A plugin class declares ``type_name`` and a frozen ``Params`` dataclass; parameters arrive in upstream
camelCase (``maxNumOfEndpoints``) and map to snake_case fields. Unknown keys and wrong types are refused with
the dotted path of the offending field, so a bad config stops the picker at start with a clear message.
"""

from __future__ import annotations

import dataclasses
import random
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from endpoint_picker.config_error import ConfigError
from endpoint_picker.scheduling.framework import Plugin

P = TypeVar("P", bound=type[Plugin])

_REGISTRY: dict[str, type[Plugin]] = {}
_ALIASES: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class NoParams:
    pass


@dataclass(slots=True)
class PluginContext:
    """Services a plugin may need besides its parameters; shared by all plugins of one picker."""

    rng: random.Random


class ParamError(ValueError):
    """Raised by a ``Params.check()``: ``field`` is the camelCase parameter name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def register(*aliases: str) -> Callable[[P], P]:
    """Class decorator: register under ``cls.type_name`` (and deprecated aliases)."""

    def wrap(cls: P) -> P:
        if not cls.type_name:
            raise TypeError(f"{cls.__name__} has no type_name")
        if cls.type_name in _REGISTRY:
            raise TypeError(f"plugin type {cls.type_name!r} registered twice")
        _REGISTRY[cls.type_name] = cls
        for alias in aliases:
            _ALIASES[alias] = cls.type_name
        return cls

    return wrap


def known_types() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def plugin_class(type_name: str) -> type[Plugin] | None:
    _load_builtins()
    return _REGISTRY.get(_ALIASES.get(type_name, type_name))


def create(type_name: str, name: str, parameters: Any, where: str, context: PluginContext) -> Plugin:
    """Instantiate a plugin from config; ``where`` is the config path of the entry (``plugins[2]``)."""
    cls = plugin_class(type_name)
    if cls is None:
        raise ConfigError(f"{where}.type", f"unknown plugin type {type_name!r} (known: {', '.join(known_types())})")
    params_type = getattr(cls, "Params", NoParams)
    params = parse_params(params_type, parameters, f"{where}.parameters")
    return cls(name, params, context)  # type: ignore[call-arg]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def parse_params(params_type: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(params_type)}
    hints = typing.get_type_hints(params_type)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        field_name = key if key in fields else _snake(str(key))
        if field_name not in fields:
            known = ", ".join(_camel(f) for f in fields) or "none"
            raise ConfigError(f"{where}.{key}", f"unknown parameter (known: {known})")
        values[field_name] = _coerce(value, hints[field_name], f"{where}.{key}")
    try:
        params = params_type(**values)
        check = getattr(params, "check", None)
        if check is not None:
            check()
    except ParamError as exc:
        raise ConfigError(f"{where}.{exc.field}", str(exc)) from None
    return params


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(where, f"expected {hint}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(where, f"expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(where, f"expected a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(where, f"expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return parse_params(hint, value, where)
    return value


def _load_builtins() -> None:
    # Importing the package registers every built-in plugin (one module each).
    import endpoint_picker.scheduling.plugins  # noqa: F401
