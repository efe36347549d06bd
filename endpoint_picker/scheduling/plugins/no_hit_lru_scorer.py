"""``no-hit-lru-scorer`` (llm-d): spread requests that hit no endpoint's prefix cache.

A cold request (no candidate holds any of its prefix) ranks endpoints by how long ago they last received a
cold request: never-used first (1.0) down to the most recently used (0.0), and the pick is remembered. A warm
request scores 0.5 everywhere, leaving the decision to the prefix scorer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from endpoint_picker.request import InferenceRequest
from endpoint_picker.scheduling.framework import Category, CycleState, EndpointState, PreRequest, ProfileResult, Scorer
from endpoint_picker.scheduling.plugins.approx_prefix_cache_producer import PREFIX_MATCH_KEY, PrefixMatchInfo
from endpoint_picker.scheduling.registry import ParamError, PluginContext, register

_COLD = "no-hit-lru-scorer/cold"


@dataclass(frozen=True, slots=True)
class NoHitLRUParams:
    prefix_plugin_type: str = "prefix-cache-scorer"
    prefix_plugin_name: str = "prefix-cache-scorer"
    lru_size: int = 1024

    def check(self) -> None:
        if self.lru_size <= 0:
            raise ParamError("lruSize", "must be positive")


@register()
class NoHitLRUScorer(Scorer, PreRequest):
    type_name = "no-hit-lru-scorer"
    category = Category.BALANCE
    Params = NoHitLRUParams
    consumes = PREFIX_MATCH_KEY

    def __init__(self, name: str, params: NoHitLRUParams, context: PluginContext) -> None:
        super().__init__(name)
        self._size = params.lru_size
        self._lru: OrderedDict[str, None] = OrderedDict()  # oldest cold assignment first

    def score(self, cycle: CycleState, request: InferenceRequest, endpoints: list[EndpointState]) -> list[float]:
        info = cycle.get(PREFIX_MATCH_KEY)
        cold = not (isinstance(info, PrefixMatchInfo) and info.matches)
        cycle[_COLD] = cold
        if not cold:
            return [0.5] * len(endpoints)
        order = {key: i for i, key in enumerate(self._lru)}

        def rank_key(i: int) -> tuple[int, int]:
            # Never-used first (in candidate order), then least recently used ... most recently used.
            used = order.get(endpoints[i].key)
            return (0, i) if used is None else (1, used)

        ranked = sorted(range(len(endpoints)), key=rank_key)
        n = len(endpoints)
        scores = [0.0] * n
        for rank, i in enumerate(ranked):
            scores[i] = 1.0 if n == 1 else 1.0 - rank / (n - 1)
        return scores

    def pre_request(self, cycle: CycleState, request: InferenceRequest, results: dict[str, ProfileResult],
                    primary: str) -> None:
        if not cycle.get(_COLD):
            return
        result = results.get(primary)
        if result and result.targets:
            key = result.targets[0].key
            self._lru.pop(key, None)
            self._lru[key] = None
            while len(self._lru) > self._size:
                self._lru.popitem(last=False)
