"""Where the pool comes from, chosen by ``serve`` flags: an endpoints file, an InferencePool, or a pod selector.

Why this module exists: ``serve`` needs exactly one endpoint source, plus — for the Kubernetes sources — the
objective and rewrite tables, optional Lease-based leader election and readiness that combines them. The
flags (upstream names: ``--pool-name``, ``--pool-namespace``, ``--pool-group``, ``--endpoint-selector``,
``--endpoint-target-ports``, ``--ha-enable-leader-election``) are validated here and turned into one
:class:`Discovery` that ``serve`` starts, publishes readiness from, and stops.

Readiness (gRPC ``readiness`` SERVING) is: the source has synced (file loaded; or pool, pods and optional kinds
listed) and, with leader election, this replica holds the Lease. A standby keeps every watch running, so when
it wins the Lease it serves at once from a warm datastore.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from endpoint_picker.config_error import ConfigError
from endpoint_picker.datastore import Datastore
from endpoint_picker.datastore.static_file import StaticFileSource
from endpoint_picker.model_rewrite import ModelRewrites
from endpoint_picker.objectives import Objectives
from endpoint_picker.readiness import Readiness

if TYPE_CHECKING:  # the Kubernetes modules are imported only when a Kubernetes source is chosen
    from endpoint_picker.datastore.kubernetes import KubeApi, KubernetesSource, LeaderElector
    from endpoint_picker.datastore.kubernetes.leader_election import LeaseSettings
    from endpoint_picker.datastore.kubernetes.source import KubernetesSettings

log = logging.getLogger(__name__)

SYNCED = "synced"
LEADER = "leader"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoint discovery (exactly one of --endpoints-file, --pool-name, --endpoint-selector)")
    g.add_argument("--endpoints-file", type=Path, default=None,
                   help="YAML file listing the pool's endpoints (re-read when it changes); no Kubernetes")
    g.add_argument("--pool-name", default=None, help="the InferencePool to serve (watched in --pool-namespace)")
    g.add_argument("--pool-namespace", default=os.environ.get("NAMESPACE") or "default",
                   help="namespace of the pool and its pods (default $NAMESPACE, else 'default')")
    g.add_argument("--pool-group", default="inference.networking.k8s.io",
                   help="InferencePool API group: inference.networking.k8s.io (v1, default) or "
                   "inference.networking.x-k8s.io (v1alpha2)")
    g.add_argument("--endpoint-selector", default=None,
                   help="no-CRD mode: pods labelled k=v,k2=v2 in --pool-namespace form the pool")
    g.add_argument("--endpoint-target-ports", action="append", default=None, metavar="PORTS",
                   help="no-CRD mode: the model-server ports of each pod (comma list or repeated; 1 to 8)")
    g.add_argument("--objective-group", default="inference.networking.x-k8s.io",
                   help="API group of InferenceObjective and InferenceModelRewrite (v1alpha2): "
                   "inference.networking.x-k8s.io (default) or llm-d.ai; 'none' to not watch them")
    g.add_argument("--kubeconfig", type=Path, default=None,
                   help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config)")
    ha = p.add_argument_group("high availability (active-passive on a coordination.k8s.io Lease)")
    ha.add_argument("--ha-enable-leader-election", type=_bool, nargs="?", const=True, default=False,
                    help="only the replica holding the Lease is Ready; standbys keep their datastore warm")
    ha.add_argument("--ha-lease-name", default=None,
                    help="Lease name (default: epp-<namespace>-<pool>.gateway-api-inference-extension.sigs.k8s.io)")
    ha.add_argument("--ha-identity", default=None, help="this replica's holder identity (default $POD_NAME)")
    ha.add_argument("--ha-lease-duration", type=float, default=15.0, help="seconds (default 15)")
    ha.add_argument("--ha-renew-deadline", type=float, default=10.0, help="seconds (default 10)")
    ha.add_argument("--ha-retry-period", type=float, default=2.0, help="seconds (default 2)")
    ha.add_argument("--ha-handover-grace", type=float, default=2.0,
                    help="on shutdown the leader releases the Lease and, once a standby holds it, stays Ready for "
                    "half this time (the gateway's health checks find the new leader) and accepts streams while "
                    "NOT_SERVING for the other half (they stop sending here), then drains (default 2 s; set it "
                    "above the gateway's health-check interval)")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class Discovery:
    """The chosen source with its tables and readiness; ``start`` -> ``run_background`` -> ``shutdown``."""

    def __init__(self, args: argparse.Namespace, datastore: Datastore) -> None:
        self._args = args
        self._datastore = datastore
        self.objectives = Objectives()
        self.rewrites = ModelRewrites()
        self.ha = bool(args.ha_enable_leader_election)
        self.readiness = Readiness(SYNCED, LEADER) if self.ha else Readiness(SYNCED)
        self._file_source: StaticFileSource | None = None
        self._api: KubeApi | None = None
        self._source: KubernetesSource | None = None
        self._elector: LeaderElector | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._set_ready: Callable[[bool], Awaitable[None]] | None = None
        _validate(args)

    @property
    def kubernetes(self) -> bool:
        return self._args.endpoints_file is None

    async def start(self) -> None:
        """Load the endpoints file, or connect to the API server; raises :class:`ConfigError` on bad input."""
        args = self._args
        if not self.kubernetes:
            self._file_source = StaticFileSource(args.endpoints_file, self._datastore)
            try:
                self._file_source.load()
            except OSError as exc:
                raise ConfigError("--endpoints-file", f"cannot read {args.endpoints_file}: {exc.strerror}") from None
            self.readiness.set(SYNCED, self._datastore.synced)
            return
        from endpoint_picker.datastore.kubernetes import KubeApi, KubernetesSource

        try:
            self._api = await KubeApi.connect(args.kubeconfig)
        except Exception as exc:  # the client raises several unrelated types for a bad or missing config
            raise ConfigError("--kubeconfig", f"cannot configure the Kubernetes client: {exc}") from None
        settings = _kubernetes_settings(args)
        self._source = KubernetesSource(self._api, settings, self._datastore, objectives=self.objectives,
                                        rewrites=self.rewrites,
                                        on_synced=lambda synced: self.readiness.set(SYNCED, synced))
        if self.ha:
            from endpoint_picker.datastore.kubernetes import LeaderElector

            pool_name = settings.pool_name or (settings.standalone.name if settings.standalone else "")
            lease = _lease_settings(args, pool_name)
            self._elector = LeaderElector(self._api, lease, lambda leader: self.readiness.set(LEADER, leader))
        log.info("discovering %s from the API server at %s%s", _describe(args), self._api.host,
                 " with leader election" if self.ha else "")

    def run_background(self, set_ready: Callable[[bool], Awaitable[None]]) -> None:
        """Start the watch, election and readiness tasks (call once the gRPC server is up)."""
        self._set_ready = set_ready
        if self._file_source is not None:
            self._tasks.append(asyncio.create_task(self._file_source.run(), name="endpoints-file-watch"))
        if self._source is not None:
            self._tasks.append(asyncio.create_task(self._source.run(), name="kubernetes-source"))
        if self._elector is not None:
            self._tasks.append(asyncio.create_task(self._elector.run(), name="leader-election"))
        self._tasks.append(asyncio.create_task(self.readiness.publish(set_ready), name="readiness"))

    async def stop_readiness(self) -> None:
        """Stop publishing readiness and go NOT_SERVING for good (a drain follows).

        A leader first hands over, so that there is no moment without a Ready replica: it releases the Lease and
        stays SERVING until a standby holds it (bounded by 2.5 retry periods) and for half of
        ``--ha-handover-grace`` more (both are Ready: harmless, since a standby's datastore is warm), then goes
        NOT_SERVING and keeps accepting streams for the other half while the gateway stops sending here.
        """
        for task in [t for t in self._tasks if t.get_name() in ("readiness", "leader-election")]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elector = self._elector
        if elector is not None and elector.is_leader:
            await elector.release()
            # A live standby polls every retry period (jittered by up to 20 %): if none took the Lease after
            # two and a half periods there is none (e.g. all replicas are being replaced at once).
            successor = await elector.wait_for_successor(max(1.0, 2.5 * elector.settings.retry_period))
            log.info("handed the Lease over to %s", successor or "nobody (no standby took it in time)")
            half = max(0.0, self._args.ha_handover_grace) / 2 if successor else 0.0
            await asyncio.sleep(half)  # still SERVING: the gateway's health checks find the new leader
            if self._set_ready is not None:
                await self._set_ready(False)
            await asyncio.sleep(half)  # NOT_SERVING, still accepting streams, while the gateway moves away
        elif self._set_ready is not None:
            await self._set_ready(False)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._api is not None:
            await self._api.close()


def _validate(args: argparse.Namespace) -> None:
    chosen = [flag for flag, value in (("--endpoints-file", args.endpoints_file), ("--pool-name", args.pool_name),
                                       ("--endpoint-selector", args.endpoint_selector)) if value]
    if len(chosen) != 1:
        raise ConfigError("--endpoints-file", "exactly one of --endpoints-file, --pool-name and --endpoint-selector "
                          f"is required (given: {', '.join(chosen) or 'none'})")
    if args.endpoint_selector and not args.endpoint_target_ports:
        raise ConfigError("--endpoint-target-ports", "required with --endpoint-selector")
    if args.endpoint_target_ports and not args.endpoint_selector:
        raise ConfigError("--endpoint-target-ports", "only valid with --endpoint-selector")
    if args.ha_enable_leader_election and args.endpoints_file:
        raise ConfigError("--ha-enable-leader-election", "needs Kubernetes (a Lease); not valid with --endpoints-file")


def _kubernetes_settings(args: argparse.Namespace) -> KubernetesSettings:
    from endpoint_picker.datastore.kubernetes.pool import (
        PoolSpecError,
        parse_ports_flag,
        parse_selector_flag,
        pool_resource,
        standalone_pool,
    )
    from endpoint_picker.datastore.kubernetes.source import KubernetesSettings

    namespace = args.pool_namespace
    objective_group = None if str(args.objective_group).lower() == "none" else args.objective_group
    if args.pool_name:
        try:
            pool_resource(args.pool_group)
        except PoolSpecError as exc:
            raise ConfigError("--pool-group", str(exc)) from None
        return KubernetesSettings(namespace=namespace, pool_name=args.pool_name, pool_group=args.pool_group,
                                  objective_group=objective_group)
    try:
        selector = parse_selector_flag(args.endpoint_selector)
        ports = parse_ports_flag(args.endpoint_target_ports)
    except PoolSpecError as exc:
        flag = "--endpoint-target-ports" if "ports" in str(exc) else "--endpoint-selector"
        raise ConfigError(flag, str(exc)) from None
    digest = hashlib.sha256(",".join(f"{k}={v}" for k, v in sorted(selector.items())).encode()).hexdigest()[:10]
    pool = standalone_pool(f"selector-{digest}", namespace, selector, ports)
    return KubernetesSettings(namespace=namespace, standalone=pool, objective_group=None,
                              watch_legacy_inference_models=False)


def _lease_settings(args: argparse.Namespace, pool_name: str) -> LeaseSettings:
    from endpoint_picker.datastore.kubernetes.leader_election import (
        LeaseSettings,
        default_identity,
        default_lease_name,
    )

    try:
        return LeaseSettings(
            name=args.ha_lease_name or default_lease_name(args.pool_namespace, pool_name),
            namespace=args.pool_namespace,
            identity=args.ha_identity or default_identity(),
            lease_duration=args.ha_lease_duration,
            renew_deadline=args.ha_renew_deadline,
            retry_period=args.ha_retry_period,
        )
    except ValueError as exc:
        raise ConfigError("--ha-lease-duration", str(exc)) from None


def _describe(args: argparse.Namespace) -> str:
    if args.pool_name:
        return f"InferencePool {args.pool_namespace}/{args.pool_name} ({args.pool_group})"
    return f"pods {args.endpoint_selector} in {args.pool_namespace}, ports {','.join(args.endpoint_target_ports)}"
