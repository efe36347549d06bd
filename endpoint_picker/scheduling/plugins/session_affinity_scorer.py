"""``session-affinity-scorer`` (llm-d): 1.0 for the endpoint named by the request's ``x-session-token``.

The token is base64 of ``namespace/podname`` (or of the pod name alone); every other endpoint scores 0.
Upstream also writes the token on responses; this picker leaves the token to the client for now.
"""

from __future__ import annotations

import base64
import binascii

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState, Scorer
from endpoint_picker.scheduling.registry import NoParams, PluginContext, register

SESSION_TOKEN_HEADER = "x-session-token"


def session_target(token: str) -> str | None:
    try:
        decoded = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded.rsplit("/", 1)[-1] or None


@register()
class SessionAffinityScorer(Scorer):
    type_name = "session-affinity-scorer"
    category = Category.AFFINITY

    def __init__(self, name: str, params: NoParams, context: PluginContext) -> None:
        super().__init__(name)

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        token = request.headers.get(SESSION_TOKEN_HEADER)
        target = session_target(token) if token else None
        if target is None:
            return [0.0] * len(endpoints)
        return [1.0 if e.endpoint.name == target or e.key == target else 0.0 for e in endpoints]
