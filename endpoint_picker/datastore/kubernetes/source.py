"""Endpoint discovery from Kubernetes: the InferencePool, its pods, and the pool's objectives and rewrites.

Why this module exists: it is the Kubernetes counterpart of :mod:`endpoint_picker.datastore.static_file`. It
runs one :class:`~endpoint_picker.datastore.kubernetes.reflector.Reflector` per watched collection and turns
their caches into what the request path reads:

- the InferencePool named by ``--pool-name`` (field selector ``metadata.name``), or, in the no-CRD mode, a
  fixed :class:`PoolSpec` from ``--endpoint-selector`` / ``--endpoint-target-ports``;
- the pool namespace's pods, watched with the pool's selector as ``labelSelector``. When the pool's selector
  changes the pod watch is restarted with the new one; until its first list arrives the old cache, filtered by
  the new selector, keeps serving (pods that no longer match leave at once, new ones join after the list);
- InferenceObjective, InferenceModelRewrite and legacy InferenceModel objects of the pool (optional kinds: a
  missing CRD counts as empty), into :class:`~endpoint_picker.objectives.Objectives` and
  :class:`~endpoint_picker.model_rewrite.ModelRewrites`.

Every change is applied on the event loop as soon as its watch event arrives. :attr:`synced` is true when the
pool exists and is usable, the pods for its current selector have been listed and every optional kind has
been listed (or found absent); ``on_synced`` hears every change of it (readiness follows it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from endpoint_picker.datastore.kubernetes.api import PODS, KubeApi
from endpoint_picker.datastore.kubernetes.objective_resources import (
    INFERENCE_MODEL,
    OBJECTIVE_GROUP,
    legacy_models_for_pool,
    model_rewrite_resource,
    objective_resource,
    objectives_for_pool,
    rewrites_for_pool,
)
from endpoint_picker.datastore.kubernetes.pods import endpoints_for
from endpoint_picker.datastore.kubernetes.pool import (
    APP_PROTOCOL_HTTP,
    POOL_GROUP,
    PoolSpec,
    PoolSpecError,
    parse_pool,
    pool_resource,
)
from endpoint_picker.datastore.kubernetes.reflector import Reflector, ReflectorOptions, cancel_and_wait
from endpoint_picker.datastore.model import Endpoint, PoolSettings
from endpoint_picker.datastore.store import Datastore
from endpoint_picker.model_rewrite import ModelRewrites
from endpoint_picker.objectives import Objectives

log = logging.getLogger(__name__)

# The picker parses OpenAI-style HTTP bodies; a pool of gRPC (h2c) model servers needs another parser.
SUPPORTED_APP_PROTOCOLS = frozenset({APP_PROTOCOL_HTTP})


@dataclass
class KubernetesSettings:
    """Where the pool is and what else to watch. Exactly one of ``pool_name`` and ``standalone`` is set."""

    namespace: str
    pool_name: str | None = None
    pool_group: str = POOL_GROUP
    standalone: PoolSpec | None = None
    objective_group: str | None = OBJECTIVE_GROUP  # None: do not watch objectives and rewrites
    watch_legacy_inference_models: bool = True
    reflector: ReflectorOptions = field(default_factory=ReflectorOptions)

    def __post_init__(self) -> None:
        if (self.pool_name is None) == (self.standalone is None):
            raise ValueError("exactly one of pool_name and standalone must be set")
        if self.pool_name is not None:
            pool_resource(self.pool_group)  # validates the group


def _signature(endpoints: list[Endpoint]) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    return sorted((e.key, e.name, tuple(sorted(e.labels.items()))) for e in endpoints)


class KubernetesSource:
    """Feeds a :class:`Datastore` (and the objective/rewrite tables) from the API server; ``await run()``."""

    def __init__(self, api: KubeApi, settings: KubernetesSettings, datastore: Datastore, *,
                 objectives: Objectives | None = None, rewrites: ModelRewrites | None = None,
                 on_synced: Callable[[bool], None] | None = None,
                 on_update: Callable[[], None] | None = None) -> None:
        self._api = api
        self._settings = settings
        self._datastore = datastore
        self._objectives = objectives if objectives is not None else Objectives()
        self._rewrites = rewrites if rewrites is not None else ModelRewrites()
        self._on_synced = on_synced or (lambda _synced: None)
        self._on_update = on_update or (lambda: None)  # after every applied change (tests wait on it)
        self._synced = False
        self._spec: PoolSpec | None = settings.standalone
        self._spec_error: str | None = None
        self._pool_reflector: Reflector | None = None
        self._pods: Reflector | None = None
        self._pods_task: asyncio.Task[None] | None = None
        self._stale_pods: dict[str, dict[str, Any]] = {}  # the previous selector's pods, until the new list
        # A pod watch of this pool has listed once: a selector change (a new watch) then does not make the source
        # unsynced, since the stale pods keep serving until the new list arrives.
        self._pods_warm = False
        self._optional: list[Reflector] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._signature: list[Any] | None = None
        self.endpoint_updates = 0  # how often the endpoint set changed (tests, logs)
        pool_name = settings.pool_name or (settings.standalone.name if settings.standalone else "")
        datastore.set_pool(PoolSettings(name=pool_name, namespace=settings.namespace))

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def pool(self) -> PoolSpec | None:
        return self._spec

    @property
    def objectives(self) -> Objectives:
        return self._objectives

    @property
    def rewrites(self) -> ModelRewrites:
        return self._rewrites

    @property
    def reflectors(self) -> list[Reflector]:
        found = [r for r in (self._pool_reflector, self._pods) if r is not None]
        return found + self._optional

    async def run(self) -> None:
        """Start every watch and run until cancelled (cancellation stops them all)."""
        s = self._settings
        try:
            if s.standalone is not None:
                self._start_pods(s.standalone)
            else:
                assert s.pool_name is not None
                self._pool_reflector = Reflector(self._api, pool_resource(s.pool_group), s.namespace,
                                                 self._on_pool_change, field_selector=f"metadata.name={s.pool_name}",
                                                 options=s.reflector)
                self._tasks.append(asyncio.create_task(self._pool_reflector.run(), name="watch-inferencepool"))
                self._start_optional()
            await asyncio.Event().wait()
        finally:
            await cancel_and_wait(self._pods_task)
            for task in self._tasks:
                await cancel_and_wait(task)

    def _start_optional(self) -> None:
        s = self._settings
        resources = []
        if s.objective_group:
            resources += [objective_resource(s.objective_group), model_rewrite_resource(s.objective_group)]
        if s.watch_legacy_inference_models:
            resources.append(INFERENCE_MODEL)
        for resource in resources:
            reflector = Reflector(self._api, resource, s.namespace, self._on_objectives_change, optional=True,
                                  options=s.reflector)
            self._optional.append(reflector)
            self._tasks.append(asyncio.create_task(reflector.run(), name=f"watch-{resource.plural}"))

    # --- the pool ---------------------------------------------------------------------------------------------

    def _on_pool_change(self) -> None:
        assert self._pool_reflector is not None and self._settings.pool_name is not None
        obj = self._pool_reflector.objects.get(self._settings.pool_name)
        spec: PoolSpec | None = None
        error: str | None = None
        if obj is None:
            error = "not found" if self._pool_reflector.synced else None
        else:
            try:
                spec = parse_pool(obj)
            except PoolSpecError as exc:
                error = f"invalid: {exc}"
            else:
                if spec.app_protocol not in SUPPORTED_APP_PROTOCOLS:
                    error = f"appProtocol {spec.app_protocol!r} is not supported by this picker's OpenAI parser"
                    spec = None
        if error != self._spec_error and error is not None:
            log.error("InferencePool %s/%s %s; serving no endpoints", self._settings.namespace,
                      self._settings.pool_name, error)
        self._spec_error = error
        previous = self._spec
        self._spec = spec
        if spec is None:
            self._stop_pods()
        elif previous is None or previous.selector != spec.selector:
            if previous is not None:
                log.info("InferencePool selector changed from %s to %s", previous.label_selector,
                         spec.label_selector)
            self._start_pods(spec)
        elif previous != spec:
            log.info("InferencePool changed: target ports %s", ",".join(map(str, spec.target_ports)))
        self._update_endpoints()

    # --- pods -------------------------------------------------------------------------------------------------

    def _start_pods(self, spec: PoolSpec) -> None:
        old = self._pods
        self._stale_pods = dict(old.objects) if old is not None and old.synced else dict(self._stale_pods)
        self._pods_warm = self._pods_warm or (old is not None and old.synced)
        if self._pods_task is not None:
            self._pods_task.cancel()  # stops at its next await; nothing it does after this point is used
        self._pods = Reflector(self._api, PODS, spec.namespace or self._settings.namespace, self._on_pods_change,
                               label_selector=spec.label_selector, options=self._settings.reflector)
        self._pods_task = asyncio.create_task(self._pods.run(), name="watch-pods")

    def _stop_pods(self) -> None:
        if self._pods_task is not None:
            self._pods_task.cancel()
        self._pods = None
        self._pods_task = None
        self._stale_pods = {}
        self._pods_warm = False

    def _on_pods_change(self) -> None:
        if self._pods is not None and self._pods.synced:
            self._stale_pods = {}
        self._update_endpoints()

    def _current_pods(self) -> list[dict[str, Any]]:
        if self._pods is None:
            return []
        if self._pods.synced:
            return list(self._pods.objects.values())
        return list(self._stale_pods.values())  # filtered by the new selector in endpoints_for

    def _update_endpoints(self) -> None:
        spec = self._spec
        endpoints = endpoints_for(self._current_pods(), spec) if spec is not None else []
        signature = _signature(endpoints)
        if signature != self._signature:
            self._signature = signature
            self._datastore.replace_endpoints(endpoints)
            self.endpoint_updates += 1
            log.info("pool %s: %d endpoints%s", spec.name if spec else self._settings.pool_name, len(endpoints),
                     (": " + ", ".join(e.key for e in endpoints[:8]) + (" ..." if len(endpoints) > 8 else ""))
                     if endpoints else "")
        self._update_synced()

    # --- objectives and rewrites ------------------------------------------------------------------------------

    def _on_objectives_change(self) -> None:
        pool = self._settings.pool_name
        assert pool is not None
        s = self._settings
        objectives: list[Any] = []
        rewrites: list[Any] = []
        legacy_priorities: dict[str, int] = {}
        legacy_rewrites: list[Any] = []
        for reflector in self._optional:
            objects = reflector.objects.values()
            if s.objective_group and reflector.resource == objective_resource(s.objective_group):
                objectives = objectives_for_pool(objects, pool)
            elif s.objective_group and reflector.resource == model_rewrite_resource(s.objective_group):
                rewrites = rewrites_for_pool(objects, pool)
            elif reflector.resource == INFERENCE_MODEL:
                legacy_priorities, legacy_rewrites = legacy_models_for_pool(objects, pool)
        self._objectives.replace(objectives)
        self._objectives.replace_model_priorities(legacy_priorities)
        self._rewrites.replace(rewrites, legacy_rewrites)
        self._update_synced()

    # --- readiness --------------------------------------------------------------------------------------------

    def _update_synced(self) -> None:
        synced = (
            self._spec is not None
            and self._pods is not None
            and (self._pods.synced or self._pods_warm)
            and all(r.synced for r in self._optional)
        )
        if synced != self._synced:
            self._synced = synced
            log.info("Kubernetes source %s", "synced" if synced else "not synced")
            self._on_synced(synced)
        self._on_update()
