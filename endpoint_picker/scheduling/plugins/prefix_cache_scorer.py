"""``prefix-cache-scorer``: the share of the prompt's leading blocks an endpoint already holds.

score = w * min(1, matchedTokens / S)^2 + (1 - w) * matchedBlocks / totalBlocks, with llm-d's
``matchLengthWeight`` w (default 0, i.e. upstream's plain ratio) and ``matchLengthScaleTokens`` S (8192).
Reads :class:`PrefixMatchInfo` from the producer (auto-created when not configured).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, truediv

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import CandidateDelta, Category, CycleState, EndpointState, Scorer
from endpoint_picker.scheduling.plugins._delta import ScoreMemo
from endpoint_picker.scheduling.plugins.approx_prefix_cache_producer import PREFIX_MATCH_KEY, PrefixMatchInfo
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register

_KEY = attrgetter("key")


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
        # The previous cycle's scores and the positions where they were not 0, for score_delta.
        self._memo = ScoreMemo()
        self._nonzero: list[int] = []

    @staticmethod
    def _info(cycle: CycleState) -> PrefixMatchInfo | None:
        info = cycle.get(PREFIX_MATCH_KEY)
        if not isinstance(info, PrefixMatchInfo) or not info.total_blocks or not info.matches:
            return None
        return info

    def _one(self, blocks: int, info: PrefixMatchInfo) -> float:
        """The score of an endpoint holding ``blocks`` leading blocks (0 gives 0.0)."""
        ratio = blocks / info.total_blocks
        w = self.params.match_length_weight
        if not w:
            return ratio
        length = min(1.0, blocks * info.block_size_tokens / self.params.match_length_scale_tokens)
        return w * length * length + (1.0 - w) * ratio

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        info = self._info(cycle)
        if info is None:
            return [0.0] * len(endpoints)
        matched = list(map(info.matches.get, map(_KEY, endpoints), repeat(0)))
        if not self.params.match_length_weight:
            return list(map(truediv, matched, repeat(info.total_blocks)))  # blocks / total, without a Python loop
        one = self._one
        return [one(blocks, info) for blocks in matched]

    def score_delta(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState],
                    delta: CandidateDelta | None) -> tuple[list[float], list[int] | None]:
        # Scores are 0 except where the request's prefix matched: reset the previous matches, set the new.
        memo = self._memo
        info = self._info(cycle)
        index = None if delta is None else delta.index
        if index is None:
            return memo.keep(None, self.score(cycle, request, endpoints)), None
        if memo.follows(delta, len(endpoints)):
            scores = memo.scores
            changed = self._nonzero
            for i in changed:
                scores[i] = 0.0
        else:
            scores = [0.0] * len(endpoints)
            changed = None
        nonzero = []
        if info is not None:
            one = self._one
            for key, blocks in info.matches.items():
                i = index.get(key)
                if i is not None:
                    scores[i] = one(blocks, info)
                    nonzero.append(i)
        self._nonzero = nonzero
        if changed is not None:
            changed = changed + nonzero
        return memo.keep(delta, scores), changed
