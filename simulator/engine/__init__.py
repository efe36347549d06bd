"""The simulator's engine core: a vLLM v1 model server reduced to its scheduling, caching and timing.

Why it exists: to reproduce, without GPUs or sockets, the behaviour a router is judged by -- continuous
batching with chunked prefill, finite paged KV with an LRU prefix cache and preemption, LoRA slots,
calibrated step times, and the KV-cache events and metrics a real vLLM publishes. Everything here is pure
and deterministic on a virtual clock; the HTTP server and the fleet simulator wrap it.
"""

from simulator.engine.chat_template import ChatTemplateError, render_chat
from simulator.engine.config import EngineConfig
from simulator.engine.engine import Engine, StepResult, TokenOutput
from simulator.engine.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVCacheEvent,
    KVEventBatch,
    KVEventBuffer,
)
from simulator.engine.hashing import (
    DEFAULT_NONE_HASH_SEED,
    BlockHasher,
    HashAlgo,
    PromptHashCache,
    RequestKeys,
    compute_block_hashes,
    to_event_hash,
)
from simulator.engine.metrics import EngineMetrics
from simulator.engine.profile import (
    BUILTIN_PROFILES,
    LLAMA_3_1_8B_H100,
    LatencyProfile,
    get_profile,
    load_profile,
    profile_from_mapping,
)
from simulator.engine.request import EngineRequest, FinishReason, RequestResult
from simulator.engine.tokenizer import Tokenizer

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_NONE_HASH_SEED",
    "LLAMA_3_1_8B_H100",
    "AllBlocksCleared",
    "BlockHasher",
    "BlockRemoved",
    "BlockStored",
    "ChatTemplateError",
    "Engine",
    "EngineConfig",
    "EngineMetrics",
    "EngineRequest",
    "FinishReason",
    "HashAlgo",
    "KVCacheEvent",
    "KVEventBatch",
    "KVEventBuffer",
    "LatencyProfile",
    "PromptHashCache",
    "RequestKeys",
    "RequestResult",
    "StepResult",
    "TokenOutput",
    "Tokenizer",
    "compute_block_hashes",
    "get_profile",
    "load_profile",
    "profile_from_mapping",
    "render_chat",
    "to_event_hash",
]
