"""Envoy bootstrap for the local gateway, built from a template and checked before Envoy starts.

Why this module exists: a wrong field in an Envoy config normally shows up only when Envoy refuses to start
(or, worse, when it starts and silently behaves differently). Here the fixed shape of the config lives in a
YAML template (``manifests/local-gateway/envoy-bootstrap.yaml``); code fills in what varies (ports,
addresses, body mode, failure mode, TLS, endpoints, the optional subset-hint listener) partly by building
typed ``envoy_data_plane`` (betterproto2) messages, and the complete document is then parsed into the typed
``Bootstrap`` message. betterproto2 rejects unknown fields, wrong enum names, bad durations and wrong value
types, and it resolves every ``google.protobuf.Any`` by its ``@type`` through a message pool, so a typo in a
``typed_config`` fails in Python with the offending type named. ``envoy --mode validate`` (see
:func:`envoy_validate`) remains the final word for rules the typed layer does not check (PGV constraints
such as "required", and cross-field rules like "FULL_DUPLEX_STREAMED needs trailer mode SEND").

Two betterproto2 facts this module relies on (both observed with envoy_data_plane 2.2 / betterproto2 0.9):

- ``Any.from_dict`` only knows message types whose Python module has been imported (import registers them
  in the message pool), so :func:`parse_bootstrap` imports the module of every ``@type`` in the document.
- Message classes that refer to a sibling defined later in their module are completed lazily by pydantic on
  first instantiation, and the forward reference is resolved in the namespace of the *calling frame* first
  (its globals at module level, its locals inside a function). A name there that equals a message name
  (e.g. ``Metadata`` imported from ``envoy.config.core.v3``, then ``set_metadata.v3.Config(metadata=[...])``
  built at module level) is picked up instead, and the class stays broken for the whole process ("Input
  should be a dictionary or an instance of Metadata"). Typed messages are therefore only built inside
  functions here, and Envoy modules are imported as modules, never by message name.
"""

from __future__ import annotations

import copy
import datetime
import enum
import importlib
import ipaddress
import subprocess
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import betterproto2
import yaml

with warnings.catch_warnings():  # the generated code trips pydantic deprecation warnings at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.bootstrap import v3 as bootstrap_v3
    from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
    from envoy_data_plane.envoy.config.core import v3 as core_v3
    from envoy_data_plane.envoy.config.endpoint import v3 as endpoint_v3
    from envoy_data_plane.envoy.config.listener import v3 as listener_v3
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as ext_proc_v3
    from envoy_data_plane.envoy.extensions.filters.http.set_metadata import v3 as set_metadata_v3
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm_v3
    from envoy_data_plane.envoy.extensions.transport_sockets.tls import v3 as tls_v3
    from envoy_data_plane.google import protobuf as pb

from stack.envoy_process import find_envoy_binary

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "manifests" / "local-gateway" / "envoy-bootstrap.yaml"

# Protocol names (protocol.md §2). Kept here rather than imported from extproc/ so the stack does not depend
# on the code it tests.
DESTINATION_HEADER = "x-gateway-destination-endpoint"
DESTINATION_SERVED_KEY = "x-gateway-destination-endpoint-served"
LB_NAMESPACE = "envoy.lb"
SUBSET_HINT_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_HINT_KEY = "x-gateway-destination-endpoint-subset"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"

# Names of the pieces the template must contain.
GATEWAY_LISTENER = "gateway"
SUBSET_HINT_LISTENER = "gateway_subset_hint"
POOL_CLUSTER = "pool"
PICKER_CLUSTER = "epp"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
SET_METADATA_FILTER = "envoy.filters.http.set_metadata"

_TYPE_URL_PREFIX = "type.googleapis.com/"
_SNAKE = betterproto2.Casing.SNAKE


class BodyMode(enum.StrEnum):
    """How the gateway hands request/response bodies to the picker."""

    FULL_DUPLEX_STREAMED = "FULL_DUPLEX_STREAMED"
    BUFFERED = "BUFFERED"


class FailureMode(enum.StrEnum):
    """InferencePool ``failureMode``: what the gateway does when the picker cannot be reached."""

    FAIL_OPEN = "FailOpen"
    FAIL_CLOSE = "FailClose"


class PoolRouting(enum.StrEnum):
    """How the pool cluster turns the picker's decision into an upstream host."""

    OVERRIDE_HOST = "override_host"  # static endpoints, metadata then header, round-robin fallback
    # GIE reference style: the header *is* the upstream address. One ip:port only — a picker that sends
    # "primary,fallback,..." gets 503 UH (observed) — and no fallback when the picker is down.
    ORIGINAL_DST = "original_dst"


class BootstrapError(ValueError):
    """The generated Envoy bootstrap is not a valid config."""


@dataclass(frozen=True)
class HostPort:
    """One ``ip:port`` of a model server or the picker."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"expected ip:port, got {text!r}")
        return cls(host.strip("[]"), int(port))


@dataclass
class GatewayConfig:
    """Everything that varies between local gateways. Times are in seconds."""

    endpoints: Sequence[HostPort] = field(default_factory=lambda: [HostPort("127.0.0.1", 8000)])
    listener_address: str = "127.0.0.1"
    listener_port: int = 8081
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    picker_address: str = "127.0.0.1"
    picker_port: int = 9002
    picker_tls: bool = True
    body_mode: BodyMode = BodyMode.FULL_DUPLEX_STREAMED
    failure_mode: FailureMode = FailureMode.FAIL_CLOSE
    # Per-message timeout; Envoy applies it only in BUFFERED (FDS has none), so it is only written there.
    message_timeout: float = 10.0
    # The only guard against a hung picker in FDS; must exceed the longest inter-token gap.
    stream_idle_timeout: float = 60.0
    pool_connect_timeout: float = 1.0
    picker_connect_timeout: float = 0.25
    access_log_path: str = "/dev/stdout"
    # When set, a second listener injects this list as the subset hint (an empty list is a valid hint).
    subset_hint: list[str] | None = None
    subset_hint_port: int | None = None
    pool_routing: PoolRouting = PoolRouting.OVERRIDE_HOST
    # Active gRPC health checks of the picker (service envoy.service.ext_proc.v3.ExternalProcessor on the
    # ext_proc port); only useful if the picker registers health there.
    picker_health_check: bool = False
    template: Path = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        self.body_mode = BodyMode(self.body_mode)
        self.failure_mode = FailureMode(self.failure_mode)
        self.pool_routing = PoolRouting(self.pool_routing)
        self.endpoints = [e if isinstance(e, HostPort) else HostPort.parse(str(e)) for e in self.endpoints]
        if self.pool_routing is PoolRouting.OVERRIDE_HOST and not self.endpoints:
            raise BootstrapError("the pool needs at least one endpoint")
        if self.subset_hint is not None and not self.subset_hint_port:
            raise BootstrapError("subset_hint needs subset_hint_port (the second listener's port)")
        for name in ("message_timeout", "stream_idle_timeout", "pool_connect_timeout", "picker_connect_timeout"):
            if getattr(self, name) <= 0:
                raise BootstrapError(f"{name} must be positive")


# --- typed pieces -------------------------------------------------------------------------------------------


def _as_dict(message: betterproto2.Message) -> dict[str, Any]:
    """A typed message as the snake_case dict Envoy's YAML loader expects."""
    return message.to_dict(casing=_SNAKE)


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def _duration(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def processing_mode(body_mode: BodyMode) -> ext_proc_v3.ProcessingMode:
    """The ext_proc processing mode for a body mode (protocol.md §5, envoy.md §3-§4).

    FULL_DUPLEX_STREAMED: everything SEND, both bodies FDS; Envoy 1.40 requires trailer SEND with FDS.
    BUFFERED: request body BUFFERED (one message, 1 MiB limit), trailers SKIP, response headers SEND so the
    picker learns the served endpoint and the status, response body NONE (a buffered response body would hold
    back SSE streams and cap responses at the buffer limit).
    """
    header = ext_proc_v3.ProcessingModeHeaderSendMode
    body = ext_proc_v3.ProcessingModeBodySendMode
    if body_mode is BodyMode.FULL_DUPLEX_STREAMED:
        return ext_proc_v3.ProcessingMode(
            request_header_mode=header.SEND,
            request_body_mode=body.FULL_DUPLEX_STREAMED,
            request_trailer_mode=header.SEND,
            response_header_mode=header.SEND,
            response_body_mode=body.FULL_DUPLEX_STREAMED,
            response_trailer_mode=header.SEND,
        )
    return ext_proc_v3.ProcessingMode(
        request_header_mode=header.SEND,
        request_body_mode=body.BUFFERED,
        request_trailer_mode=header.SKIP,
        response_header_mode=header.SEND,
        response_body_mode=body.NONE,
        response_trailer_mode=header.SKIP,
    )


def _socket_address(host: str, port: int) -> core_v3.Address:
    return core_v3.Address(socket_address=core_v3.SocketAddress(address=host, port_value=port))


def _load_assignment(cluster_name: str, hosts: Iterable[HostPort]) -> endpoint_v3.ClusterLoadAssignment:
    return endpoint_v3.ClusterLoadAssignment(
        cluster_name=cluster_name,
        endpoints=[
            endpoint_v3.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_v3.LbEndpoint(endpoint=endpoint_v3.Endpoint(address=_socket_address(h.host, h.port)))
                    for h in hosts
                ]
            )
        ],
    )


def _upstream_tls_socket() -> core_v3.TransportSocket:
    """TLS to the picker without verification (self-signed certificate), ALPN h2 for gRPC."""
    context = tls_v3.UpstreamTlsContext(
        common_tls_context=tls_v3.CommonTlsContext(
            validation_context=tls_v3.CertificateValidationContext(), alpn_protocols=["h2"]
        )
    )
    return core_v3.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pb.Any.pack(context))


def _picker_health_check(tls: bool) -> core_v3.HealthCheck:
    """Active gRPC health checks of the picker (served on its ext_proc port with ``--health-checking``).

    With ``healthy_panic_threshold: 0`` an unhealthy picker makes the ext_proc stream fail *synchronously*
    ("no healthy upstream") while the request headers are processed, before any body chunk is handed to the
    filter: that is what lets FailOpen actually bypass a dead picker in FULL_DUPLEX_STREAMED (without it the
    connect failure arrives after the body was handed over and Envoy answers 500 even with
    failure_mode_allow). ``no_traffic_interval`` matters: its default (60 s) applies until the cluster has
    carried traffic, so a picker started after Envoy would otherwise stay "unhealthy" for up to a minute.
    """
    return core_v3.HealthCheck(
        timeout=_seconds(1.0),
        interval=_seconds(0.5),
        no_traffic_interval=_seconds(0.5),
        no_traffic_healthy_interval=_seconds(0.5),
        unhealthy_threshold=2,
        healthy_threshold=1,
        grpc_health_check=core_v3.HealthCheckGrpcHealthCheck(service_name=EXT_PROC_SERVICE),
        tls_options=core_v3.HealthCheckTlsOptions(alpn_protocols=["h2"]) if tls else None,
    )


def _subset_hint_filter(hint: Sequence[str]) -> hcm_v3.HttpFilter:
    """``set_metadata`` filter putting the subset hint where Envoy forwards it to the picker."""
    value = pb.Struct.from_dict({SUBSET_HINT_KEY: list(hint)})
    config = set_metadata_v3.Config(
        metadata=[set_metadata_v3.Metadata(metadata_namespace=SUBSET_HINT_NAMESPACE, value=value)]
    )
    return hcm_v3.HttpFilter(name=SET_METADATA_FILTER, typed_config=pb.Any.pack(config))


def _original_dst_config() -> cluster_v3.ClusterOriginalDstLbConfig:
    return cluster_v3.ClusterOriginalDstLbConfig(use_http_header=True, http_header_name=DESTINATION_HEADER)


# --- template plumbing --------------------------------------------------------------------------------------


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise BootstrapError(f"template has no {what} named {name!r}")


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    for chain in listener.get("filter_chains", []):
        for network_filter in chain.get("filters", []):
            if network_filter.get("name") == HCM_FILTER:
                return network_filter["typed_config"]
    raise BootstrapError(f"listener {listener.get('name')!r} has no {HCM_FILTER}")


def load_template(path: Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BootstrapError(f"cannot read bootstrap template {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise BootstrapError(f"bootstrap template {path} is not a mapping")
    return doc


def build_bootstrap(config: GatewayConfig) -> dict[str, Any]:
    """The complete bootstrap document for ``config``; raises :class:`BootstrapError` if it is invalid."""
    doc = load_template(config.template)
    doc["admin"]["address"] = _as_dict(_socket_address(config.admin_address, config.admin_port))

    resources = doc["static_resources"]
    listener = _named(resources["listeners"], GATEWAY_LISTENER, "listener")
    listener["address"] = _as_dict(_socket_address(config.listener_address, config.listener_port))
    hcm = _hcm(listener)
    hcm["stream_idle_timeout"] = _duration(config.stream_idle_timeout)
    for log in hcm.get("access_log", []):
        if log.get("name") == "envoy.access_loggers.file":
            log["typed_config"]["path"] = config.access_log_path

    ext_proc = _named(hcm["http_filters"], EXT_PROC_FILTER, "HTTP filter")["typed_config"]
    ext_proc["failure_mode_allow"] = config.failure_mode is FailureMode.FAIL_OPEN
    ext_proc["processing_mode"] = _as_dict(processing_mode(config.body_mode))
    if config.body_mode is BodyMode.BUFFERED:
        ext_proc["message_timeout"] = _duration(config.message_timeout)
    else:
        ext_proc.pop("message_timeout", None)

    _configure_pool(_named(resources["clusters"], POOL_CLUSTER, "cluster"), config)
    _configure_picker(_named(resources["clusters"], PICKER_CLUSTER, "cluster"), config)

    if config.subset_hint is not None:
        assert config.subset_hint_port is not None  # checked in GatewayConfig
        resources["listeners"].append(_subset_hint_listener(listener, config.subset_hint, config))

    parse_bootstrap(doc)
    return doc


def _configure_pool(cluster: dict[str, Any], config: GatewayConfig) -> None:
    cluster["connect_timeout"] = _duration(config.pool_connect_timeout)
    if config.pool_routing is PoolRouting.OVERRIDE_HOST:
        cluster["load_assignment"] = _as_dict(_load_assignment(POOL_CLUSTER, config.endpoints))
        return
    # ORIGINAL_DST: the destination header *is* the upstream address; no endpoints, no fallback (envoy.md G5).
    for key in ("load_assignment", "load_balancing_policy"):
        cluster.pop(key, None)
    cluster["type"] = cluster_v3.ClusterDiscoveryType.ORIGINAL_DST.name
    cluster["lb_policy"] = cluster_v3.ClusterLbPolicy.CLUSTER_PROVIDED.name
    cluster["original_dst_lb_config"] = _as_dict(_original_dst_config())


def _configure_picker(cluster: dict[str, Any], config: GatewayConfig) -> None:
    cluster["connect_timeout"] = _duration(config.picker_connect_timeout)
    try:
        ipaddress.ip_address(config.picker_address)
        cluster["type"] = "STATIC"
    except ValueError:
        cluster["type"] = "STRICT_DNS"
    cluster["load_assignment"] = _as_dict(
        _load_assignment(PICKER_CLUSTER, [HostPort(config.picker_address, config.picker_port)])
    )
    if config.picker_tls:
        cluster["transport_socket"] = _as_dict(_upstream_tls_socket())
    else:
        cluster.pop("transport_socket", None)
    if config.picker_health_check:
        cluster["health_checks"] = [_as_dict(_picker_health_check(config.picker_tls))]
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}


def _subset_hint_listener(
    gateway: dict[str, Any], hint: Sequence[str], config: GatewayConfig
) -> dict[str, Any]:
    """A copy of the gateway listener that injects the subset hint before ext_proc runs."""
    listener = copy.deepcopy(gateway)
    listener["name"] = SUBSET_HINT_LISTENER
    assert config.subset_hint_port is not None
    listener["address"] = _as_dict(_socket_address(config.listener_address, config.subset_hint_port))
    hcm = _hcm(listener)
    hcm["stat_prefix"] = SUBSET_HINT_LISTENER
    filters: list[dict[str, Any]] = hcm["http_filters"]
    position = filters.index(_named(filters, EXT_PROC_FILTER, "HTTP filter"))
    filters.insert(position, _as_dict(_subset_hint_filter(hint)))
    return listener


# --- typed validation ---------------------------------------------------------------------------------------


def _type_urls(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        url = node.get("@type")
        if isinstance(url, str):
            yield url
        for value in node.values():
            yield from _type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from _type_urls(value)


def _import_message_modules(doc: dict[str, Any]) -> None:
    """Import the Python module of every ``@type`` so betterproto2's message pool can resolve it."""
    for url in set(_type_urls(doc)):
        if not url.startswith(_TYPE_URL_PREFIX):
            raise BootstrapError(f"unsupported type URL {url!r}")
        package = url.removeprefix(_TYPE_URL_PREFIX).rpartition(".")[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                importlib.import_module(f"envoy_data_plane.{package}")
        except ImportError as exc:
            raise BootstrapError(f"unknown message type {url!r}: no module envoy_data_plane.{package}") from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _locate(node: Any, path: str) -> tuple[str, Exception] | None:
    """The innermost ``typed_config``-like object (``@type``) under ``node`` that fails to parse alone."""
    children: Iterable[tuple[str, Any]]
    if isinstance(node, dict):
        children = ((f"{path}.{key}", value) for key, value in node.items())
    elif isinstance(node, list):
        children = (
            (f"{path}[{item.get('name', i) if isinstance(item, dict) else i}]", item)
            for i, item in enumerate(node)
        )
    else:
        return None
    for child_path, child in children:
        found = _locate(child, child_path)
        if found:
            return found
    if isinstance(node, dict) and "@type" in node:
        try:
            pb.Any.from_dict(node)
        except (KeyError, ValueError, TypeError) as exc:
            return path, exc
    return None


def _locate_resource(doc: dict[str, Any]) -> tuple[str, Exception] | None:
    """The first listener or cluster that fails to parse alone (errors outside any ``@type``)."""
    resources = doc.get("static_resources") or {}
    kinds: list[tuple[str, type[betterproto2.Message]]] = [
        ("listeners", listener_v3.Listener),
        ("clusters", cluster_v3.Cluster),
    ]
    for key, message_type in kinds:
        for item in resources.get(key) or []:
            try:
                message_type.from_dict(item)
            except (KeyError, ValueError, TypeError) as exc:
                name = item.get("name", "?") if isinstance(item, dict) else "?"
                return f"$.static_resources.{key}[{name}]", exc
    return None


def parse_bootstrap(doc: dict[str, Any]) -> bootstrap_v3.Bootstrap:
    """Parse ``doc`` into the typed ``Bootstrap``; unknown fields, bad enums and bad types raise here."""
    _import_message_modules(doc)
    try:
        bootstrap = bootstrap_v3.Bootstrap.from_dict(doc)
    except (KeyError, ValueError, TypeError) as exc:
        found = _locate(doc, "$") or _locate_resource(doc)
        where, cause = found if found else ("$", exc)
        raise BootstrapError(f"invalid Envoy bootstrap at {where}: {_describe(cause)}") from exc
    _check_rules(bootstrap)
    return bootstrap


def _check_rules(bootstrap: bootstrap_v3.Bootstrap) -> None:
    """Cross-field rules Envoy enforces at startup that the typed layer cannot see."""
    header = ext_proc_v3.ProcessingModeHeaderSendMode
    fds = ext_proc_v3.ProcessingModeBodySendMode.FULL_DUPLEX_STREAMED
    assert bootstrap.static_resources is not None
    for listener in bootstrap.static_resources.listeners:
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                if network_filter.typed_config is None:
                    continue
                hcm = network_filter.typed_config.unpack()
                if not isinstance(hcm, hcm_v3.HttpConnectionManager):
                    continue
                for http_filter in hcm.http_filters:
                    config = http_filter.typed_config.unpack() if http_filter.typed_config else None
                    if not isinstance(config, ext_proc_v3.ExternalProcessor) or config.processing_mode is None:
                        continue
                    mode = config.processing_mode
                    if mode.request_body_mode == fds and mode.request_trailer_mode != header.SEND:
                        raise BootstrapError(f"{listener.name}: request body FDS needs request_trailer_mode SEND")
                    if mode.response_body_mode == fds and mode.response_trailer_mode != header.SEND:
                        raise BootstrapError(
                            f"{listener.name}: response body FDS needs response_trailer_mode SEND"
                        )


# --- output and Envoy's own check ---------------------------------------------------------------------------


def write_bootstrap(config: GatewayConfig, path: Path) -> Path:
    """Build, validate and write the bootstrap as YAML (Envoy picks the parser by file extension)."""
    doc = build_bootstrap(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
    return path


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    returncode: int
    output: str


def envoy_validate(path: Path, *, envoy: Path | None = None, timeout: float = 60.0) -> ValidationResult:
    """Run ``envoy --mode validate -c path``: Envoy's own full check, without opening any port."""
    binary = envoy or find_envoy_binary()
    proc = subprocess.run(
        [str(binary), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return ValidationResult(ok=proc.returncode == 0, returncode=proc.returncode, output=proc.stdout + proc.stderr)


# Typed helpers re-exported for tests that want to inspect a parsed bootstrap.
__all__ = [
    "DEFAULT_TEMPLATE",
    "BodyMode",
    "BootstrapError",
    "FailureMode",
    "GatewayConfig",
    "HostPort",
    "PoolRouting",
    "ValidationResult",
    "build_bootstrap",
    "envoy_validate",
    "load_template",
    "parse_bootstrap",
    "processing_mode",
    "write_bootstrap",
]
