"""``lora-affinity-scorer``: 1.0 adapter active; 0.8 room to load it; 0.6 already waiting; 0 otherwise.

The requested model is the adapter name. Stale or missing metrics score 0.
"""

from __future__ import annotations

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState, Scorer
from endpoint_picker.scheduling.registry import NoParams, PluginContext, register


@register()
class LoraAffinityScorer(Scorer):
    type_name = "lora-affinity-scorer"
    category = Category.AFFINITY

    def __init__(self, name: str, params: NoParams, context: PluginContext) -> None:
        super().__init__(name)

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        model = request.served_model  # the adapter the model server will run, after any rewrite
        out = []
        for e in endpoints:
            m = e.metrics
            if e.stale or m is None:
                out.append(0.0)
            elif model in m.active_models:
                out.append(1.0)
            elif len(m.active_models) < m.max_active_models:
                out.append(0.8)
            elif model in m.waiting_models:
                out.append(0.6)
            else:
                out.append(0.0)
        return out
