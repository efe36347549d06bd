"""Endpoint discovery from Kubernetes: watchers for InferencePool, Pods and the pool's objectives and rewrites,
plus Lease-based leader election for active-passive replicas.

Modules: ``api`` (list/watch/get/put over the official client's asyncio flavour), ``reflector`` (list, then
watch from the resourceVersion; relist on 410; reconnect with backoff), ``pool`` and ``pods`` (the pool's
selector and ports, pods to endpoints), ``objective_resources`` (the objective/rewrite CRDs), ``source``
(everything above feeding the datastore), ``leader_election`` (the Lease).
"""

from endpoint_picker.datastore.kubernetes.api import KubeApi
from endpoint_picker.datastore.kubernetes.leader_election import LeaderElector, LeaseSettings
from endpoint_picker.datastore.kubernetes.reflector import ReflectorOptions
from endpoint_picker.datastore.kubernetes.source import KubernetesSettings, KubernetesSource

__all__ = ["KubeApi", "KubernetesSettings", "KubernetesSource", "LeaderElector", "LeaseSettings", "ReflectorOptions"]
