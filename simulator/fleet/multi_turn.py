"""Multi-turn chat: conversations whose context grows turn by turn, in groups that share a system prompt.

Why it exists: the prefix a chat turn shares with the previous turn of its own conversation is the case
where session-sticky and prefix-aware routing pay most -- the whole history is cached on the endpoint that
served the last turn. It is inference-perf's ``shared_prefix`` with ``enable_multi_turn_chat`` and SGLang's
``--gsp-num-turns``: GIE benchmarks prefix-aware routing with it (``*__multi-chat`` configs, 6 groups x 1000
conversations).

Shape. ``num_groups`` random-token system prompts of ``system_prompt_len`` tokens; each group has
``conversations_per_group`` conversations of ``num_turns`` turns. Turn ``k`` of a conversation sends

    system, user q_1, assistant a_1, ..., user q_(k-1), assistant a_(k-1), user q_k

where every question ``q_t`` draws ``question_len`` tokens and ``a_t`` is the answer to turn ``t``: random
tokens of that turn's output length (its ``max_tokens``). A real client would append the answer it got
back; the simulator's engines generate other words, so the engine's cache holds turn ``k-1``'s prompt
*and* its generated answer while turn ``k`` shares only the prompt -- the prefix-sharing shape (the whole
previous prompt, up to and including the previous question) is the same, one answer shorter.

Chat form. Requests are OpenAI chat conversations (``FleetRequest.chat`` / ``messages()``, sent to
``/v1/chat/completions``); their ``prompt_token_ids`` are exactly the tokens the simulator's chat template
(``simulator.engine.chat_template``: ``<|role|>\\n{content}\\n`` per message, then ``<|assistant|>\\n``)
renders and the built-in tokenizer encodes: 5 tokens per role marker (``<``, ``|``, role, ``|``, ``>``;
whitespace is dropped), so lengths above count content tokens only. Turn ``k-1``'s full prompt (ending in
the generation prompt ``<|assistant|>``) is a token prefix of turn ``k``'s, so the chat form shares
prefixes across turns exactly as a plain token prompt would, and conversations of one group share the
system message.

Order. Conversations interleave at random (seeded): each arrival takes the next turn of a conversation
drawn uniformly from those not picked in the last ``C // 2`` arrivals (``C`` = all conversations), so a
conversation's turns come in order, at least ``C // 2 + 1`` arrivals apart and ``C`` apart on average, and
conversations drift out of step -- at any time the requests mix early and late turns. (A fixed rotation,
inference-perf's ``user i mod C``, would also make round-robin land every turn of a conversation on the
same endpoint whenever the endpoint count divides ``C``: session affinity by accident.) After its last turn a
conversation starts afresh: a new session, new questions, the same group. Arrivals are open loop: with few
conversations at a high rate a turn can arrive before the previous one has finished, which a closed-loop
chat client would not do.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache

from simulator.engine.tokenizer import encode
from simulator.fleet.load import Load, check_load, request_count, schedule
from simulator.fleet.workload import ChatMessage, FleetRequest, Length, random_tokens

__all__ = ["MultiTurnWorkload", "chat_token_ids"]


@cache
def _role_marker(role: str) -> tuple[int, ...]:
    return tuple(encode(f"<|{role}|>"))


def chat_token_ids(chat: Sequence[ChatMessage]) -> list[int]:
    """The token ids the simulator's chat template and tokenizer make of ``chat`` (with the generation prompt),
    built without rendering text: the content ids are output words, which tokenize to themselves."""
    out: list[int] = []
    for role, ids in chat:
        out += _role_marker(role)
        out += ids
    out += _role_marker("assistant")
    return out


@dataclass(frozen=True, slots=True)
class MultiTurnWorkload:
    # None with staged arrivals (the stages decide the count).
    num_requests: int | None
    arrivals: Load
    num_groups: int = 10
    conversations_per_group: int = 10
    num_turns: int = 5
    system_prompt_len: int = 100
    question_len: Length = field(default_factory=lambda: Length(50))
    output_len: Length = field(default_factory=lambda: Length(50))
    seed: int = 0

    def __post_init__(self) -> None:
        check_load(self.num_requests, self.arrivals)
        if self.num_groups < 1 or self.conversations_per_group < 1:
            raise ValueError("num_groups and conversations_per_group must be >= 1")
        if self.num_turns < 1:
            raise ValueError("num_turns must be >= 1")
        if self.system_prompt_len < 0:
            raise ValueError("system_prompt_len must be >= 0")

    @property
    def name(self) -> str:
        return "multi-turn"

    @property
    def request_count(self) -> int:
        return request_count(self.num_requests, self.arrivals)

    @property
    def num_conversations(self) -> int:
        return self.num_groups * self.conversations_per_group

    @property
    def max_prompt_tokens(self) -> int:
        marker = len(_role_marker("assistant"))  # every role marker has the same length
        system = self.system_prompt_len + marker if self.system_prompt_len else 0
        turns = self.num_turns
        return (system + turns * (self.question_len.upper + marker)
                + (turns - 1) * (self.output_len.upper + marker) + marker)

    def _turn(self, system: list[int] | None, conversation: int, epoch: int, turn: int) -> tuple[
            tuple[ChatMessage, ...], int]:
        """The messages of ``turn`` (1-based) of one conversation and its output length.

        Each conversation draws from its own RNG in a fixed order (q_1 length and tokens, out_1, a_1 tokens,
        q_2, ...), so turn ``k`` regenerates exactly the history turn ``k-1`` sent -- nothing is kept between
        requests."""
        rng = random.Random(f"{self.seed}:multi-turn:conversation:{conversation}:{epoch}")
        chat: list[ChatMessage] = [("system", system)] if system else []
        out = 0
        for t in range(1, turn + 1):
            chat.append(("user", random_tokens(rng, self.question_len.sample(rng))))
            out = self.output_len.sample(rng)
            if t < turn:
                chat.append(("assistant", random_tokens(rng, out)))
        return tuple(chat), out

    def requests(self) -> Iterator[FleetRequest]:
        content = random.Random(f"{self.seed}:multi-turn:system")
        systems = [random_tokens(content, self.system_prompt_len) for _ in range(self.num_groups)]
        pick = random.Random(f"{self.seed}:multi-turn:interleave")
        count = self.num_conversations
        cool = count // 2  # arrivals a conversation sits out after each turn
        ready = list(range(count))
        cooling: deque[tuple[int, int]] = deque()  # (arrival index from which it is ready again, conversation)
        next_turn = [1] * count
        epochs = [0] * count
        times = schedule(self.num_requests, self.arrivals, random.Random(f"{self.seed}:multi-turn:arrivals"))
        for i, (t, stage) in enumerate(times):
            while cooling and cooling[0][0] <= i:
                ready.append(cooling.popleft()[1])
            k = pick.randrange(len(ready))
            conversation = ready[k]
            ready[k] = ready[-1]
            ready.pop()
            cooling.append((i + cool + 1, conversation))
            turn, epoch = next_turn[conversation], epochs[conversation]
            if turn == self.num_turns:
                next_turn[conversation] = 1
                epochs[conversation] = epoch + 1
            else:
                next_turn[conversation] = turn + 1
            group = conversation // self.conversations_per_group
            chat, out = self._turn(systems[group], conversation, epoch, turn)
            yield FleetRequest(f"mt-{i}", t, chat_token_ids(chat), out, label=f"turn-{turn}", group=group,
                               stage=stage, session=f"conv-{conversation}.{epoch}", chat=chat)

    def summary(self) -> str:
        return (f"multi-turn: {self.num_groups} groups x {self.conversations_per_group} conversations x "
                f"{self.num_turns} turns, system prompt {self.system_prompt_len}, question {self.question_len}, "
                f"output {self.output_len}; {self.request_count} requests, {self.arrivals}")

    def describe(self) -> dict[str, object]:
        return {
            "type": self.name,
            "num_requests": self.request_count,
            "arrivals": self.arrivals.describe(),
            "num_groups": self.num_groups,
            "conversations_per_group": self.conversations_per_group,
            "num_turns": self.num_turns,
            "system_prompt_len": self.system_prompt_len,
            "question_len": self.question_len.describe(),
            "output_len": self.output_len.describe(),
            "seed": self.seed,
        }
