"""``approx-prefix-cache-producer``: computes each request's prefix match on every candidate.

Produces :class:`PrefixMatchInfo` for ``prefix-cache-scorer`` (and ``no-hit-lru-scorer``) and, after
scheduling, records the chosen endpoint's blocks in the index (as upstream: the primary profile's pick, and a
``prefill`` profile's pick when present). With ``autoTune`` the block size and per-endpoint capacity come
from the endpoints' ``vllm:cache_config_info`` (block_size, num_gpu_blocks) once scraped.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import (
    CANDIDATES_KEY,
    CandidateDelta,
    CycleState,
    DataProducer,
    EndpointState,
    PreRequest,
    ProfileResult,
)
from endpoint_picker.scheduling.prefix_index import ApproxPrefixIndex, block_hashes
from endpoint_picker.scheduling.prompt import prompt_bytes
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register

PREFIX_MATCH_KEY = "PrefixCacheMatchInfo"
CHARS_PER_TOKEN = 4
_KEY = attrgetter("key")


@dataclass(slots=True)
class PrefixMatchInfo:
    total_blocks: int
    block_size_tokens: int
    matches: dict[str, int]  # endpoint key -> leading blocks held
    hashes: list[int]

    def matched_tokens(self, key: str) -> int:
        return self.matches.get(key, 0) * self.block_size_tokens


@dataclass(frozen=True, slots=True)
class ApproxPrefixParams:
    auto_tune: bool = True
    block_size_tokens: int = 16
    max_prefix_blocks_to_match: int = 256
    max_prefix_tokens_to_match: int = 0
    lru_capacity_per_server: int = 31_250
    block_size: int = 0  # deprecated upstream: block size in characters

    def check(self) -> None:
        if self.block_size_tokens <= 0:
            raise ParamError("blockSizeTokens", "must be positive")
        if self.max_prefix_blocks_to_match < 0:
            raise ParamError("maxPrefixBlocksToMatch", "must not be negative")
        if self.max_prefix_tokens_to_match < 0:
            raise ParamError("maxPrefixTokensToMatch", "must not be negative")
        if self.lru_capacity_per_server <= 0:
            raise ParamError("lruCapacityPerServer", "must be positive")
        if self.block_size < 0:
            raise ParamError("blockSize", "must not be negative")


@register()
class ApproxPrefixCacheProducer(DataProducer, PreRequest):
    type_name = "approx-prefix-cache-producer"
    Params = ApproxPrefixParams

    def __init__(self, name: str, params: ApproxPrefixParams, context: PluginContext) -> None:
        super().__init__(name)
        self._params = params
        self.index = ApproxPrefixIndex()

    def _block_size_tokens(self, endpoints: list[EndpointState]) -> int:
        p = self._params
        if p.block_size:
            return max(1, p.block_size // CHARS_PER_TOKEN)
        if p.auto_tune:
            for e in endpoints:
                if e.metrics is not None and e.metrics.block_size:
                    return e.metrics.block_size
        return p.block_size_tokens

    async def produce(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> None:
        p = self._params
        block_tokens = self._block_size_tokens(endpoints)
        max_blocks = (p.max_prefix_tokens_to_match // block_tokens if p.max_prefix_tokens_to_match
                      else p.max_prefix_blocks_to_match)
        seed = (request.served_model, (request.body or {}).get("cache_salt"))
        hashes = block_hashes(prompt_bytes(request), seed, block_tokens * CHARS_PER_TOKEN, max_blocks)
        delta = cycle.get(CANDIDATES_KEY)
        known = delta.index if isinstance(delta, CandidateDelta) else None  # the candidates' keys, when at hand
        matches = self.index.match(hashes, map(_KEY, endpoints) if known is None else known) if hashes else {}
        cycle[PREFIX_MATCH_KEY] = PrefixMatchInfo(len(hashes), block_tokens, matches, hashes)

    def pre_request(self, cycle: CycleState, request: InferenceRequest, results: dict[str, ProfileResult],
                    primary: str) -> None:
        info = cycle.get(PREFIX_MATCH_KEY)
        if not isinstance(info, PrefixMatchInfo) or not info.hashes:
            return
        for name, result in results.items():
            if (name == primary or name == "prefill") and result.targets:
                target = result.targets[0]
                self.index.add(target.key, info.hashes, self._capacity(target))

    def _capacity(self, target: EndpointState) -> int:
        if self._params.auto_tune and target.metrics is not None and target.metrics.num_gpu_blocks:
            return target.metrics.num_gpu_blocks
        return self._params.lru_capacity_per_server

    def forget(self, keys: frozenset[str]) -> None:
        self.index.forget(keys)
