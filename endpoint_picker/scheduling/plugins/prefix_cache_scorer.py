"""``prefix-cache-scorer``: the share of the prompt's leading blocks an endpoint already holds.

score = w * min(1, matchedTokens / S)^2 + (1 - w) * matchedBlocks / totalBlocks, with llm-d's
``matchLengthWeight`` w (default 0, i.e. upstream's plain ratio) and ``matchLengthScaleTokens`` S (8192).
Reads :class:`PrefixMatchInfo` from the producer (auto-created when not configured).
"""

from __future__ import annotations

from dataclasses import dataclass

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState, Scorer
from endpoint_picker.scheduling.plugins.approx_prefix_cache_producer import PREFIX_MATCH_KEY, PrefixMatchInfo
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register


@dataclass(frozen=True, slots=True)
class PrefixScorerParams:
    match_length_weight: float = 0.0
    match_length_scale_tokens: int = 8192
    prefix_match_info_producer_name: str = ""
    # Accepted for configs written for older releases, where the scorer carried the producer's settings.
    auto_tune: bool | None = None
    block_size: int | None = None
    block_size_tokens: int | None = None
    max_prefix_blocks_to_match: int | None = None
    lru_capacity_per_server: int | None = None

    def check(self) -> None:
        if not 0.0 <= self.match_length_weight <= 1.0:
            raise ParamError("matchLengthWeight", "must be within [0, 1]")
        if self.match_length_scale_tokens <= 0:
            raise ParamError("matchLengthScaleTokens", "must be positive")


@register()
class PrefixCacheScorer(Scorer):
    type_name = "prefix-cache-scorer"
    category = Category.AFFINITY
    Params = PrefixScorerParams
    consumes = PREFIX_MATCH_KEY

    def __init__(self, name: str, params: PrefixScorerParams, context: PluginContext) -> None:
        super().__init__(name)
        self.params = params

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        info = cycle.get(PREFIX_MATCH_KEY)
        if not isinstance(info, PrefixMatchInfo) or not info.total_blocks or not info.matches:
            return [0.0] * len(endpoints)
        total = info.total_blocks
        w = self.params.match_length_weight
        scale = self.params.match_length_scale_tokens
        out = []
        for e in endpoints:
            blocks = info.matches.get(e.key, 0)
            ratio = blocks / total
            if w:
                length = min(1.0, blocks * info.block_size_tokens / scale)
                out.append(w * length * length + (1.0 - w) * ratio)
            else:
                out.append(ratio)
        return out
