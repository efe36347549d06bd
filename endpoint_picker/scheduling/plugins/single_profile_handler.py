"""``single-profile-handler``: run the one configured profile once; its result is the primary."""

from __future__ import annotations

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CycleState, ProfileHandler, ProfileResult, SchedulingProfile
from endpoint_picker.scheduling.registry import NoParams, PluginContext, register


@register()
class SingleProfileHandler(ProfileHandler):
    type_name = "single-profile-handler"
    max_profiles = 1

    def __init__(self, name: str, params: NoParams, context: PluginContext) -> None:
        super().__init__(name)

    def pick_profiles(self, cycle: CycleState, request: InferenceRequest, profiles: dict[str, SchedulingProfile],
                      results: dict[str, ProfileResult]) -> list[SchedulingProfile]:
        return [] if results else list(profiles.values())[:1]

    def primary(self, results: dict[str, ProfileResult]) -> str:
        return next(iter(results))
