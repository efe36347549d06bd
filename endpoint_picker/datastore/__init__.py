"""The datastore: the pool and its endpoints as every other part of the picker sees them.

Sources (a static endpoints file now, Kubernetes watchers later) write into one :class:`Datastore`; the
director and scheduler only read immutable snapshots from it.
"""

from endpoint_picker.datastore.model import Endpoint, PoolSettings
from endpoint_picker.datastore.store import Datastore

__all__ = ["Datastore", "Endpoint", "PoolSettings"]
