"""llm-d's role filters on the ``llm-d.ai/role`` label, for prefill/decode disaggregation profiles.

``decode-filter`` keeps decode-capable and unlabelled endpoints; ``prefill-filter`` keeps prefill-capable ones
(unlabelled excluded); ``encode-filter`` keeps encode-capable ones. ``both`` is a deprecated alias of
``prefill-decode``.
"""

from __future__ import annotations

from typing import ClassVar

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, EndpointState, Filter
from endpoint_picker.scheduling.registry import NoParams, PluginContext, register

ROLE_LABEL = "llm-d.ai/role"


class _RoleFilter(Filter):
    roles: ClassVar[frozenset[str]] = frozenset()
    keep_unlabelled: ClassVar[bool] = False

    def __init__(self, name: str, params: NoParams, context: PluginContext) -> None:
        super().__init__(name)

    def filter(self, cycle: CycleState, request: InferenceRequest,
               endpoints: list[EndpointState]) -> list[EndpointState]:
        out = []
        for e in endpoints:
            role = e.endpoint.labels.get(ROLE_LABEL)
            if (role is None and self.keep_unlabelled) or role in self.roles:
                out.append(e)
        return out


@register()
class DecodeFilter(_RoleFilter):
    type_name = "decode-filter"
    roles = frozenset({"decode", "prefill-decode", "both", "encode-prefill-decode"})
    keep_unlabelled = True


@register()
class PrefillFilter(_RoleFilter):
    type_name = "prefill-filter"
    roles = frozenset({"prefill", "encode-prefill", "prefill-decode", "both", "encode-prefill-decode"})


@register()
class EncodeFilter(_RoleFilter):
    type_name = "encode-filter"
    roles = frozenset({"encode", "encode-prefill", "encode-prefill-decode"})
