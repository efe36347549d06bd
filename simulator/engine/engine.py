"""The simulated engine: vLLM v1's continuous-batching scheduler on a virtual clock.

Why it exists: routing quality shows up as queueing, prefill/decode interference, KV pressure and cache
hits -- all products of how a vLLM engine batches work step by step. This class reproduces that loop
without a GPU or sockets, so the HTTP simulator and the fleet simulator can run it in real or virtual time.

One ``step()`` is one engine iteration, as in ``vllm/v1/core/sched/scheduler.py`` (FCFS policy):

1. Running requests first, in order: each gets ``num_tokens - num_computed_tokens`` tokens (1 for a
   decode, the rest of its prompt -- capped by the budget -- for a chunked prefill) out of the step's
   ``max_num_batched_tokens`` budget. If KV blocks run out, the newest running request is preempted
   (blocks freed, progress dropped, put back at the head of the waiting queue: recompute), until the
   allocation fits or the request itself was the one preempted.
2. If nothing was preempted, waiting requests are admitted in order while the budget lasts and fewer than
   ``max_num_seqs`` run: the prefix cache is looked up (whole blocks, at most ``num_tokens - 1`` tokens),
   the whole uncached prompt must fit in free-or-evictable blocks, and the first chunk is allocated
   (prompt tokens a KV connector provides -- ``num_external_computed_tokens``, the decode side of P/D --
   are admitted as computed, like cache hits, and counted as external prefix-cache hits). A
   request whose LoRA adapter would exceed ``max_loras`` adapters in the batch is skipped (it keeps its
   place). The first request that does not fit stops admission (FCFS, no overtaking).
3. The step lasts ``LatencyProfile.step_time`` of its composition (plus adapter loading); the clock moves.
4. Every request whose tokens are now all computed samples one token at the step's end time; requests
   reaching their stop condition finish and free their blocks (which stay cached for reuse).

Requests arrive through a frontend delay (HTTP + tokenization) before the scheduler sees them. Driving
loop: add every request whose arrival is <= ``next_event_time()``, then ``step()``; an idle engine's
``step()`` jumps its clock to the next ready request. The only randomness (generated token ids, optional
step jitter) comes from ``random.Random(config.seed)``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field

from simulator.engine.config import EngineConfig
from simulator.engine.events import KVCacheEvent, KVEventBatch, KVEventBuffer
from simulator.engine.hashing import NO_KEYS, BlockHasher, PromptHashCache, RequestKeys
from simulator.engine.kv_cache import KVCacheManager
from simulator.engine.lora import LoraSlots
from simulator.engine.metrics import EngineCounters, EngineMetrics
from simulator.engine.request import EngineRequest, FinishReason, RequestResult
from simulator.engine.sequence import SeqStatus, Sequence
from simulator.engine.tokenizer import OUTPUT_TOKEN_IDS

__all__ = ["Engine", "StepResult", "TokenOutput"]

# (request_id, token_id) of one generated token.
TokenOutput = tuple[str, int]


@dataclass(slots=True)
class StepResult:
    """What one engine step did. Tokens and finishes happen at ``end_time``."""

    start_time: float
    end_time: float
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    num_scheduled_requests: int = 0
    tokens: list[TokenOutput] = field(default_factory=list)
    finished: list[RequestResult] = field(default_factory=list)
    kv_events: list[KVCacheEvent] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    # Part of the duration spent loading LoRA adapters.
    lora_load_time: float = 0.0

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time

    @property
    def num_scheduled_tokens(self) -> int:
        """Tokens processed by the forward (vllm:iteration_tokens_total)."""
        return self.num_prefill_tokens + self.num_decode_tokens

    @property
    def idle(self) -> bool:
        return self.num_scheduled_requests == 0


class Engine:
    """One simulated vLLM engine (one data-parallel rank)."""

    def __init__(self, config: EngineConfig | None = None, *, prompt_hashes: PromptHashCache | None = None) -> None:
        """``prompt_hashes``: digests of prompts other engines (or this one) hashed before, looked up by the
        identity of the request's token list (see :class:`PromptHashCache` for when that is safe)."""
        cfg = config or EngineConfig()
        self._prompt_hashes = prompt_hashes
        self.config = cfg
        self.profile = cfg.profile
        self.block_size = cfg.block_size
        self.max_model_len = cfg.model_len
        self.now = 0.0
        self._rng = random.Random(cfg.seed)
        self._caching = cfg.enable_prefix_caching
        self._hasher = BlockHasher(cfg.prefix_caching_hash_algo, cfg.hash_seed)
        self._step_events: list[KVCacheEvent] = []
        self.kv_events = KVEventBuffer(max_batches=cfg.kv_events_max_queue)
        publish = cfg.enable_kv_cache_events and cfg.enable_prefix_caching
        self.kv = KVCacheManager(
            cfg.gpu_blocks,
            cfg.block_size,
            enable_caching=cfg.enable_prefix_caching,
            emit=self._step_events.append if publish else None,
            int_hashes=cfg.kv_events_int_hashes,
        )
        self.lora = LoraSlots(cfg.max_loras, cfg.cpu_loras, cfg.profile.lora_load_s, cfg.profile.lora_activate_s)
        self._lora_ids: dict[str, int] = {}
        self._out_vocab: tuple[int, ...] = cfg.output_token_ids or OUTPUT_TOKEN_IDS
        # (ready_time, arrival order, sequence) of requests still in the frontend.
        self._pending: list[tuple[float, int, Sequence]] = []
        self._order = itertools.count()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._seqs: dict[str, Sequence] = {}
        self.counters = EngineCounters()

    # -- requests -------------------------------------------------------------------------------------

    def add_request(self, request: EngineRequest) -> None:
        """Queue a request; it reaches the scheduler after the frontend delay from its arrival."""
        cfg = self.config
        if request.request_id in self._seqs:
            raise ValueError(f"request id {request.request_id!r} is already in the engine")
        n_prompt = len(request.prompt_token_ids)
        if n_prompt > self.max_model_len:
            raise ValueError(
                f"request {request.request_id}: prompt of {n_prompt} tokens exceeds max_model_len "
                f"{self.max_model_len}"
            )
        lora_id = request.lora_id
        if request.lora_name is not None:
            if not cfg.enable_lora:
                raise ValueError(f"request {request.request_id} names LoRA adapter {request.lora_name!r} "
                                 "but LoRA is not enabled")
            if lora_id is None:
                lora_id = self._lora_ids.setdefault(request.lora_name, len(self._lora_ids) + 1)
            else:
                self._lora_ids.setdefault(request.lora_name, lora_id)
        if request.lora_name is None and not request.cache_salt:
            keys = NO_KEYS
        else:
            keys = RequestKeys.build(
                cfg.extra_keys_style,
                lora_name=request.lora_name,
                lora_path=request.lora_path,
                lora_id=lora_id,
                cache_salt=request.cache_salt,
            )
        arrival = self.now if request.arrival_time is None else request.arrival_time
        ready = arrival + self.profile.frontend_delay(n_prompt)
        seq = Sequence.from_request(request, arrival_time=arrival, ready_time=ready, keys=keys, lora_id=lora_id)
        if self._caching:
            known = None
            cache = self._prompt_hashes
            if cache is not None and keys is NO_KEYS:
                known = cache.get(self._hasher, self.block_size, request.prompt_token_ids)
            if known is not None:
                seq.block_hashes.extend(known)
            else:
                self._hasher.extend(seq.block_hashes, seq.token_ids, self.block_size, keys)
                if cache is not None and keys is NO_KEYS:
                    cache.put(self._hasher, self.block_size, request.prompt_token_ids, seq.block_hashes)
        self._seqs[seq.request_id] = seq
        heapq.heappush(self._pending, (ready, next(self._order), seq))

    def abort(self, request_id: str) -> RequestResult | None:
        """Drop a request wherever it is; its blocks are freed (and stay cached). None if unknown."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return None
        if seq.status is SeqStatus.PENDING:
            self._pending = [entry for entry in self._pending if entry[2] is not seq]
            heapq.heapify(self._pending)
        elif seq.status is SeqStatus.RUNNING:
            self._running.remove(seq)
            self.kv.free(seq)
        else:
            self._waiting.remove(seq)
        return self._finish(seq, "abort", self.now)

    # -- time -----------------------------------------------------------------------------------------

    def next_event_time(self) -> float | None:
        """When the engine next has something to do: now if it has work, else the next ready request."""
        if self._running or self._waiting:
            return self.now
        if self._pending:
            return max(self.now, self._pending[0][0])
        return None

    def has_unfinished_requests(self) -> bool:
        return bool(self._seqs)

    def advance_to(self, t: float) -> None:
        """Move the clock forward to ``t`` without running a step (an idle engine waiting in real time)."""
        if t > self.now:
            self.now = t
        self._release_pending()

    def _release_pending(self) -> None:
        pending = self._pending
        now = self.now
        while pending and pending[0][0] <= now:
            seq = heapq.heappop(pending)[2]
            seq.status = SeqStatus.WAITING
            self._waiting.append(seq)

    # -- the step -------------------------------------------------------------------------------------

    def step(self) -> StepResult:
        """Run one engine iteration and advance the clock by its duration."""
        self._release_pending()
        if not self._running and not self._waiting:
            if not self._pending:
                return StepResult(self.now, self.now)
            self.now = max(self.now, self._pending[0][0])
            self._release_pending()
        start = self.now
        scheduled, preempted, loras = self._schedule(start)
        if not scheduled:
            raise RuntimeError("engine made no progress: nothing could be scheduled")  # pragma: no cover

        n_prefill = 0
        pairs = 0.0
        n_decode = 0
        context = 0
        for seq, n in scheduled:
            computed = seq.num_computed_tokens
            if n == 1 and computed >= seq.num_prompt_tokens and computed == len(seq.token_ids) - 1:
                n_decode += 1
                context += computed + 1
            else:
                n_prefill += n
                pairs += n * (computed + 0.5 * n)
        profile = self.profile
        duration = profile.step_time(n_prefill, pairs, n_decode, context)
        if profile.jitter > 0.0:
            duration *= min(1.7, max(0.3, self._rng.gauss(1.0, profile.jitter)))
        lora_time = self.lora.activate(loras) if loras else 0.0
        end = start + duration + lora_time
        self.now = end

        # Every list given rather than left to default factories (this runs once per step); kv_events below.
        result = StepResult(
            start_time=start,
            end_time=end,
            num_prefill_tokens=n_prefill,
            num_decode_tokens=n_decode,
            num_scheduled_requests=len(scheduled),
            tokens=[],
            finished=[],
            kv_events=[],
            preempted=[s.request_id for s in preempted] if preempted else [],
            lora_load_time=lora_time,
        )
        self._update(scheduled, result)
        self.counters.num_steps += 1
        result.kv_events = self._flush_events(end)
        return result

    def _schedule(self, now: float) -> tuple[list[tuple[Sequence, int]], list[Sequence], dict[str, None]]:
        cfg = self.config
        kv = self.kv
        budget = cfg.max_num_batched_tokens
        scheduled: list[tuple[Sequence, int]] = []
        preempted: list[Sequence] = []
        # Adapters in this batch, insertion-ordered (a set of str would iterate in a per-process order).
        loras: dict[str, None] = {}
        running = self._running
        bs = self.block_size
        caching = kv.enable_caching

        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            n = len(seq.token_ids) - seq.num_computed_tokens
            if n > budget:
                n = budget
            if n <= 0:
                i += 1
                continue
            total = seq.num_computed_tokens + n
            if total <= len(seq.blocks) * bs and not (caching and total // bs > seq.num_cached_blocks):
                fits = True  # allocate_slots' fast path, inline: within held blocks, none newly full
            else:
                fits = kv.allocate_slots(seq, n)
            while not fits:
                victim = running.pop()
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
                fits = kv.allocate_slots(seq, n)
            if not fits:
                break
            scheduled.append((seq, n))
            budget -= n
            if seq.lora_name is not None:
                loras[seq.lora_name] = None
            i += 1

        if preempted:
            return scheduled, preempted, loras

        waiting = self._waiting
        skipped: list[Sequence] = []
        counters = self.counters
        while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
            seq = waiting[0]
            lora = seq.lora_name
            if lora is not None and lora not in loras and len(loras) >= cfg.max_loras:
                skipped.append(waiting.popleft())
                continue
            hits = kv.find_cached_prefix(seq)
            num_hit = len(hits) * bs
            # KV a connector provides (remote prefill) beyond the local hits; the last token is recomputed.
            num_external = 0
            if seq.num_external_tokens and not seq.num_preemptions:
                num_external = max(0, min(seq.num_external_tokens, len(seq.token_ids) - 1) - num_hit)
            n = len(seq.token_ids) - num_hit - num_external
            if n > budget:
                n = budget
            if not kv.allocate_slots(seq, num_external + n, hits, reserve_tokens=len(seq.token_ids)):
                break
            waiting.popleft()
            seq.num_computed_tokens = num_hit + num_external
            seq.status = SeqStatus.RUNNING
            running.append(seq)
            if self._caching:
                if seq.num_preemptions:
                    counters.preempted_prefix_cache_queries += len(seq.token_ids)
                    counters.preempted_prefix_cache_hits += num_hit
                else:
                    counters.prefix_cache_queries += len(seq.token_ids)
                    counters.prefix_cache_hits += num_hit
            if seq.num_external_tokens and not seq.num_preemptions:
                counters.external_prefix_cache_queries += len(seq.token_ids)
                counters.external_prefix_cache_hits += num_external
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = now
                seq.cached_tokens = num_hit + num_external
            scheduled.append((seq, n))
            budget -= n
            if lora is not None:
                loras[lora] = None
        if skipped:
            waiting.extendleft(reversed(skipped))
        return scheduled, preempted, loras

    def _preempt(self, seq: Sequence) -> None:
        self.kv.free(seq)
        seq.status = SeqStatus.PREEMPTED
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.counters.num_preemptions += 1
        self._waiting.appendleft(seq)

    def _update(self, scheduled: list[tuple[Sequence, int]], result: StepResult) -> None:
        end = result.end_time
        bs = self.block_size
        caching = self._caching
        counters = self.counters
        tokens = result.tokens
        done: list[Sequence] = []
        vocab = self._out_vocab
        n_vocab = len(vocab)
        rand = self._rng.random
        for seq, n in scheduled:
            seq.num_computed_tokens += n
            token_ids = seq.token_ids
            if seq.num_computed_tokens < len(token_ids):
                continue  # a prefill chunk that did not reach the end samples nothing
            # _next_token inline for the usual unscripted request (the same draw from the same generator)
            token = vocab[int(rand() * n_vocab)] if seq.scripted_output is None else self._next_token(seq)
            token_ids.append(token)
            if caching and len(token_ids) % bs == 0:
                self._hasher.extend(seq.block_hashes, token_ids, bs, seq.keys)
            seq.token_times.append(end)
            if seq.first_token_time is None:
                seq.first_token_time = end
                counters.prompt_tokens += seq.num_prompt_tokens
                counters.prompt_tokens_cached += max(seq.cached_tokens, 0)
            counters.generation_tokens += 1
            tokens.append((seq.request_id, token))
            n_out = len(token_ids) - seq.num_prompt_tokens
            if seq.stop_after is not None and n_out >= seq.stop_after:
                done.append(seq)
                result.finished.append(self._finish(seq, "stop", end))
            elif n_out >= seq.max_tokens or len(token_ids) >= self.max_model_len:
                done.append(seq)
                result.finished.append(self._finish(seq, "length", end))
        if done:
            finished_ids = {id(s) for s in done}
            self._running = [s for s in self._running if id(s) not in finished_ids]

    def _next_token(self, seq: Sequence) -> int:
        scripted = seq.scripted_output
        if scripted is not None:
            k = len(seq.token_ids) - seq.num_prompt_tokens
            if k < len(scripted):
                return int(scripted[k])
        vocab = self._out_vocab
        return vocab[int(self._rng.random() * len(vocab))]

    def _finish(self, seq: Sequence, reason: FinishReason, when: float) -> RequestResult:
        if seq.blocks:
            self.kv.free(seq)
        seq.status = SeqStatus.FINISHED
        self._seqs.pop(seq.request_id, None)
        success = self.counters.request_success
        success[reason] = success.get(reason, 0) + 1
        return seq.result(when, reason)

    def _flush_events(self, ts: float) -> list[KVCacheEvent]:
        if not self._step_events:
            return []
        events = list(self._step_events)
        self._step_events.clear()
        self.kv_events.append(KVEventBatch(ts=ts, events=events))
        return events

    # -- cache and adapters ---------------------------------------------------------------------------

    def reset_prefix_cache(self) -> bool:
        """Forget all cached blocks (refused while requests hold blocks); publishes AllBlocksCleared."""
        ok = self.kv.reset_prefix_cache()
        self._flush_events(self.now)
        return ok

    def drain_kv_events(self) -> list[KVEventBatch]:
        """Every KV-event batch not yet taken by the publisher, oldest first."""
        return self.kv_events.drain()

    def preload_lora(self, name: str) -> float:
        """Load an adapter into host memory ahead of use; returns the (off-engine) load time."""
        if not self.config.enable_lora:
            raise ValueError("LoRA is not enabled")
        return self.lora.preload(name)

    def unload_lora(self, name: str) -> None:
        self.lora.unload(name)

    # -- observation ----------------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def gauges(self) -> tuple[int, int, float, int, int]:
        """Running, waiting, KV usage, prefix-cache queries and hits: a router's view of the engine, in one call
        (the fleet simulator reads it after every step)."""
        c = self.counters
        return len(self._running), len(self._waiting), self.kv.usage, c.prefix_cache_queries, c.prefix_cache_hits

    def lora_adapters(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Adapters of running and of waiting requests, each sorted (vllm:lora_requests_info's labels)."""
        running = tuple(sorted({s.lora_name for s in self._running if s.lora_name}))
        waiting = tuple(sorted({s.lora_name for s in self._waiting if s.lora_name}))
        return running, waiting

    def metrics(self) -> EngineMetrics:
        c = self.counters
        kv = self.kv
        running_loras, waiting_loras = self.lora_adapters()
        return EngineMetrics(
            time=self.now,
            num_requests_running=len(self._running),
            num_requests_waiting=len(self._waiting),
            num_requests_pending=len(self._pending),
            kv_cache_usage_perc=kv.usage,
            num_gpu_blocks=kv.num_gpu_blocks,
            block_size=self.block_size,
            num_free_blocks=kv.num_free_blocks,
            num_cached_blocks=kv.num_cached_blocks,
            prefix_cache_queries=c.prefix_cache_queries,
            prefix_cache_hits=c.prefix_cache_hits,
            preempted_prefix_cache_queries=c.preempted_prefix_cache_queries,
            preempted_prefix_cache_hits=c.preempted_prefix_cache_hits,
            prompt_tokens=c.prompt_tokens,
            prompt_tokens_cached=c.prompt_tokens_cached,
            generation_tokens=c.generation_tokens,
            num_preemptions=c.num_preemptions,
            num_steps=c.num_steps,
            request_success=dict(c.request_success),
            max_loras=self.config.max_loras,
            running_lora_adapters=running_loras,
            waiting_lora_adapters=waiting_loras,
            loaded_lora_adapters=tuple(self.lora.gpu_resident),
            external_prefix_cache_queries=c.external_prefix_cache_queries,
            external_prefix_cache_hits=c.external_prefix_cache_hits,
        )
