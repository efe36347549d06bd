"""Multi-turn chat: every turn extends its conversation's previous prompt, turns come in order and
interleaved, groups share a system prompt, and the chat form tokenizes exactly as the token form -- on the
simulator's chat endpoint too."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict

import pytest

from simulator.engine.chat_template import render_chat
from simulator.engine.tokenizer import Tokenizer, encode
from simulator.fleet import (
    Arrivals,
    FleetReport,
    FleetRequest,
    FleetSimulation,
    Length,
    MultiTurnWorkload,
    RoundRobin,
    uniform_fleet,
)
from simulator.fleet.multi_turn import chat_token_ids
from simulator.server.openai_api import prompt_of


def _workload(n: int | None = 60, seed: int = 3, **kw: object) -> MultiTurnWorkload:
    base: dict[str, object] = dict(num_groups=2, conversations_per_group=3, num_turns=4, system_prompt_len=24,
                                   question_len=Length(6, 2, 2, 10), output_len=Length(5, 2, 1, 9), seed=seed)
    base.update(kw)
    return MultiTurnWorkload(n, Arrivals(10.0), **base)  # type: ignore[arg-type]


def _key(w: MultiTurnWorkload) -> list[tuple[object, ...]]:
    return [(r.request_id, r.arrival_time, tuple(r.prompt_token_ids), r.max_tokens, r.label, r.session, r.group)
            for r in w.requests()]


def _by_session(requests: list[FleetRequest]) -> dict[str, list[FleetRequest]]:
    out: dict[str, list[FleetRequest]] = defaultdict(list)
    for r in requests:
        assert r.session is not None
        out[r.session].append(r)
    return out


def test_reproducible_and_seed_dependent() -> None:
    assert _key(_workload()) == _key(_workload())
    assert _key(_workload()) != _key(_workload(seed=4))


def test_each_turn_extends_the_previous_prompt_of_its_conversation() -> None:
    requests = list(_workload(n=60).requests())
    sessions = _by_session(requests)
    assert sum(len(turns) > 1 for turns in sessions.values()) >= 6
    for turns in sessions.values():
        assert [r.label for r in turns] == [f"turn-{k}" for k in range(1, len(turns) + 1)]  # in order
        assert len(turns) <= 4
        for prev, cur in itertools.pairwise(turns):
            prev_ids, cur_ids = list(prev.prompt_token_ids), list(cur.prompt_token_ids)
            assert cur_ids[:len(prev_ids)] == prev_ids  # the whole previous prompt is a prefix
            assert cur.chat is not None and prev.chat is not None
            assert cur.chat[:len(prev.chat)] == prev.chat
            # ... followed by the answer (of the previous turn's output length) and the next question.
            role, answer = cur.chat[len(prev.chat)]
            assert role == "assistant" and len(answer) == prev.max_tokens
            assert [m[0] for m in cur.chat[len(prev.chat) + 1:]] == ["user"]
            assert cur.group == prev.group


def test_conversations_interleave_and_start_afresh() -> None:
    w = _workload(n=400, num_groups=3, conversations_per_group=4)  # 12 conversations
    requests = list(w.requests())
    index = {r.request_id: i for i, r in enumerate(requests)}
    positions: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(requests):
        assert r.session is not None
        positions[r.session.rsplit(".", 1)[0]].append(i)
    assert len(positions) == 12
    gaps = [b - a for pos in positions.values() for a, b in itertools.pairwise(pos)]
    assert min(gaps) >= 12 // 2 + 1  # a conversation sits out C // 2 arrivals after each turn
    assert statistics.fmean(gaps) == pytest.approx(12, rel=0.1)  # and comes back after ~C on average
    assert len(set(gaps)) > 3  # not a fixed rotation
    # Turns drift out of step: a window of consecutive requests mixes turn numbers.
    assert len({r.label for r in requests[100:112]}) >= 3
    # After num_turns turns a conversation starts afresh: a new session, the same system prompt, a new question.
    sessions = _by_session(requests)
    for name, turns in sessions.items():
        conv, epoch = name.rsplit(".", 1)
        if int(epoch) == 0:
            continue
        old = sessions[f"{conv}.{int(epoch) - 1}"]
        assert len(old) == 4 and index[old[-1].request_id] < index[turns[0].request_id]
        assert turns[0].label == "turn-1" and turns[0].group == old[0].group
        assert turns[0].chat is not None and old[0].chat is not None
        assert turns[0].chat[0] == old[0].chat[0] and turns[0].chat[1] != old[0].chat[1]
    assert any(name.endswith(".2") for name in sessions)


def test_groups_share_their_system_prompt() -> None:
    requests = list(_workload(n=6).requests())
    systems: dict[int, set[tuple[int, ...]]] = defaultdict(set)
    for r in requests:
        assert r.chat is not None and r.chat[0][0] == "system" and r.group is not None
        systems[r.group].add(tuple(r.chat[0][1]))
        assert len(r.chat[0][1]) == 24
    assert sorted(systems) == [0, 1] and all(len(s) == 1 for s in systems.values())
    assert systems[0] != systems[1]
    no_system = next(iter(_workload(n=1, system_prompt_len=0).requests()))
    assert no_system.chat is not None and [m[0] for m in no_system.chat] == ["user"]


def test_chat_form_tokenizes_to_the_token_form() -> None:
    tokenizer = Tokenizer()
    for r in _workload(n=24).requests():
        messages = r.messages()
        assert messages is not None and r.api_path == "/v1/chat/completions"
        turn = int(r.label.removeprefix("turn-"))
        assert [m["role"] for m in messages] == ["system", *["user", "assistant"] * (turn - 1), "user"]
        ids = list(r.prompt_token_ids)
        assert encode(render_chat(messages)) == ids
        assert encode(r.text) == ids  # text is the rendered template: /v1/completions sees the same tokens
        # What the simulated server's /v1/chat/completions tokenizes.
        assert prompt_of("chat", {"messages": messages}, tokenizer) == ids
        assert chat_token_ids(r.chat or ()) == ids
    # Lengths count content: 5 tokens per role marker (<, |, role, |, >) and 5 for the generation prompt.
    first = next(iter(_workload(n=1, question_len=Length(6)).requests()))
    assert first.prompt_tokens == 5 + 24 + 5 + 6 + 5


def test_max_prompt_tokens_bounds_every_prompt() -> None:
    w = _workload(n=48)
    assert max(r.prompt_tokens for r in w.requests()) <= w.max_prompt_tokens
    assert w.num_conversations == 6


def test_validation_and_description() -> None:
    for bad in (dict(num_turns=0), dict(num_groups=0), dict(conversations_per_group=0), dict(system_prompt_len=-1)):
        with pytest.raises(ValueError):
            _workload(**bad)
    w = _workload()
    d = w.describe()
    assert d["type"] == "multi-turn" and d["num_turns"] == 4 and d["conversations_per_group"] == 3
    assert w.summary().startswith("multi-turn: 2 groups x 3 conversations x 4 turns")


def test_runs_on_a_fleet_and_hits_the_previous_turns_cache() -> None:
    # One endpoint with room for everything; each turn arrives after the previous one has finished.
    w = MultiTurnWorkload(40, Arrivals(4.0, "constant"), num_groups=2, conversations_per_group=4, num_turns=5,
                          system_prompt_len=64, question_len=Length(48), output_len=Length(8))
    requests = {r.request_id: r for r in w.requests()}
    run = FleetSimulation(uniform_fleet(1), RoundRobin()).run(requests.values())
    assert len(run.records) == 40
    cached = {rec.request_id: rec.cached_tokens for rec in run.records}
    block = 16
    for turns in _by_session(list(requests.values())).values():
        for prev, cur in itertools.pairwise(turns):
            # At least every full block of the previous turn's prompt is a cache hit.
            assert cached[cur.request_id] >= prev.prompt_tokens // block * block
    assert FleetReport.of(run, w.name).prefix_cache_hit_rate > 0.5
