"""The data layer: what the picker knows about each endpoint beyond its address.

Background tasks (metric scrapes, KV-cache event subscribers) publish immutable snapshots here; the request
path only reads them.
"""

from endpoint_picker.datalayer.model import EndpointMetrics, MetricsStore

__all__ = ["EndpointMetrics", "MetricsStore"]
