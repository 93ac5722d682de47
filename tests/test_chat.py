"""The chat arena: a conversation whose user turns are shared and whose replies are each column's
own, trimming to the model's context with a visible note, regenerate / undo, vote keys, the
column limit, and the served app's chat and battle endpoints (a tiny seeded Llama, real engine)."""

from __future__ import annotations

import json

import pytest
from test_app import _wait_for_finished_variant, served, shared  # noqa: F401 (fixtures)
from test_engine import tiny_run  # noqa: F401 (fixture)

from adapters.errors import LoraEqError
from adapters.infer.conversation import Conversation, conversation_key, respond, trim_to_context
from adapters.infer.decoding import Sampling
from adapters.infer.engine import BASE_COLUMN, Column, CompareEngine

GREEDY = Sampling(max_new_tokens=6)


def _answer_turn(conv: Conversation, replies: dict[str, str]) -> None:
    for label, text in replies.items():
        reply = conv.last.replies[label]
        reply.text, reply.done = text, True


def test_each_column_keeps_its_own_replies_under_shared_user_turns():
    conv = Conversation(["base", "v"], system="be brief")
    conv.ask("w1")
    _answer_turn(conv, {"base": "b1", "v": "v1"})
    conv.ask("w2")
    assert conv.histories() == {
        "base": [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "b1"}],
        "v": [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "v1"}],
    }
    _answer_turn(conv, {"base": "b2", "v": "v2"})
    assert [m["content"] for m in conv.messages("v")] == ["w1", "v1", "w2", "v2"]
    with pytest.raises(LoraEqError, match="no column 'x'"):
        conv.history("x")
    with pytest.raises(LoraEqError, match="at least one, each named once"):
        Conversation(["a", "a"])
    with pytest.raises(LoraEqError, match="message is empty"):
        conv.ask("  ")


def test_regenerate_keeps_the_message_and_undo_takes_the_turn_back():
    conv = Conversation(["base", "v"])
    conv.ask("w1")
    _answer_turn(conv, {"base": "b1", "v": "v1"})
    conv.ask("w2")
    _answer_turn(conv, {"base": "b2", "v": "v2"})
    assert conv.regenerate() == "w2"
    assert [r.text for r in conv.last.replies.values()] == ["", ""] and len(conv.turns) == 2
    assert conv.histories()["v"][-1]["content"] == "v1"  # the first turn is untouched
    assert conv.undo() == "w2" and len(conv.turns) == 1
    assert conv.undo() == "w1" and conv.undo() == "" and not conv.turns
    with pytest.raises(LoraEqError, match="send a message first"):
        conv.regenerate()


def test_vote_keys_name_the_conversation_so_far_and_a_first_turn_by_its_message():
    conv = Conversation(["base", "v"])
    conv.ask("hello")
    assert conv.key("v") == "hello" == conversation_key([], "hello")  # as `loraeq vote --prompt hello`
    _answer_turn(conv, {"base": "b1", "v": "v1"})
    conv.ask("again")
    key_v, key_base = conv.key("v"), conv.key("base")
    assert json.loads(key_v) == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "v1"},
                                 {"role": "user", "content": "again"}]
    assert key_v != key_base  # each column's conversation is its own


def test_trimming_drops_the_oldest_turns_and_keeps_the_system_prompt_and_the_last_message():
    messages = [{"role": "system", "content": "s"}]
    for i in range(4):
        messages += [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}]
    messages.append({"role": "user", "content": "last"})
    kept, dropped = trim_to_context(messages, len, limit=10, reserve=0)
    assert (kept, dropped) == (messages, 0)
    kept, dropped = trim_to_context(messages, len, limit=6, reserve=0)
    assert dropped == 2 and kept[0]["content"] == "s" and [m["content"] for m in kept[1:]] == ["u2", "a2", "u3",
                                                                                               "a3", "last"]
    assert trim_to_context(messages, len, limit=4, reserve=2)[1] == 4  # only system + last fit
    with pytest.raises(LoraEqError, match="reads at most 1"):
        trim_to_context(messages, len, limit=1)


@pytest.fixture(scope="module")
def engine(tiny_run):  # noqa: F811
    eng = CompareEngine.from_run(tiny_run)
    yield eng
    eng.close()


def _columns():
    return [Column(BASE_COLUMN), Column("uniform"), Column("early")]


def test_a_second_turn_answers_from_each_columns_own_history(engine):
    conv = Conversation([c.label for c in _columns()])
    conv.ask("w1 w2 ?")
    list(respond(engine, conv, _columns(), GREEDY))
    conv.ask("w3 w4 ?")
    *_, turn = respond(engine, conv, _columns(), GREEDY)
    assert all(r.done and r.dropped_turns == 0 for r in turn.replies.values())
    assert turn.replies[BASE_COLUMN].tokens == GREEDY.max_new_tokens
    assert len({r.text for r in conv.turns[0].replies.values()}) > 1  # the columns answered differently
    for column in _columns():
        alone = engine.answer("w3 w4 ?", [column], history=conv.history(column.label, 1), sampling=GREEDY)[0]
        reply = turn.replies[column.label]
        assert (alone.text, alone.tokens) == (reply.text, reply.tokens)  # the same tokens as asked alone
    fresh = engine.answer("w3 w4 ?", _columns(), sampling=GREEDY)
    assert [a.text for a in fresh] != [r.text for r in turn.replies.values()]  # the history mattered


def test_a_conversation_longer_than_the_context_drops_its_oldest_turns_with_a_note(engine):
    from playground.tab_compare import reply_line

    long = " ".join(f"w{i}" for i in range(40))  # the tiny model reads at most 128 tokens
    conv = Conversation([c.label for c in _columns()])
    sampling = Sampling(max_new_tokens=8)
    for _ in range(4):
        conv.ask(long)
        *_, turn = respond(engine, conv, _columns(), sampling)
    dropped = {r.dropped_turns for r in turn.replies.values()}
    assert min(dropped) >= 1, dropped
    reply = turn.replies["uniform"]
    kept = conv.history("uniform", 3)[2 * reply.dropped_turns:]
    alone = engine.answer(long, ["uniform"], history=kept, sampling=sampling)[0]
    assert alone.text == reply.text and alone.dropped_turns == 0
    assert f"{reply.dropped_turns} oldest turn(s) left out" in reply_line(reply)
    with pytest.raises(LoraEqError, match="reads at most 128"):  # a single message too long: refused, turn removed
        conv.ask(" ".join(["w1"] * 130))
        list(respond(engine, conv, _columns(), sampling))
    assert conv.last.user == long and len(conv.turns) == 4


def test_nine_columns_are_refused_with_a_clear_message(engine):
    from adapters.limits import Limits
    from playground.tab_compare import columns_for

    class Form:
        limits = Limits()

    assert len(columns_for(Form, engine, [f"v{i}" for i in range(7)], None, None)) == 8
    with pytest.raises(LoraEqError, match=r"9 columns \(base \+ 8\): 8 is the limit; choose fewer variants"):
        columns_for(Form, engine, [f"v{i}" for i in range(8)], None, None)


def _value(update):
    return update.get("value") if isinstance(update, dict) and update.get("__type__") == "update" else update


def _texts(bot) -> list[str]:
    """A chatbot's messages as plain texts."""
    return ["".join(part["text"] for part in m["content"]) if isinstance(m["content"], list) else m["content"]
            for m in _value(bot) or []]


def _frame(result, n=8):
    """The chat endpoints' outputs: chatbots' texts, reply lines (a client is not sent buttons), then the rest."""
    return [_texts(b) for b in result[:n]], [_value(x) or "" for x in result[n:2 * n]], result[2 * n:]


def test_the_served_app_chats_regenerates_undoes_votes_and_battles(served, shared, tmp_path):  # noqa: F811
    from gradio_client import Client

    from evals.arena import BattleStore
    from evals.votes import VoteStore

    client = Client(served, verbose=False)
    client.predict(None, "autumn-voice.jsonl", "auto", "", 64, api_name="/validate")
    client.predict("mine", 4, 1e-3, 2, 2, api_name="/add_variant")
    client.predict(api_name="/start_training")
    session = next(p for p in shared.runs_dir.iterdir() if p.is_dir())
    _wait_for_finished_variant(session)
    run = next(session.glob("run-*"))
    grid = client.predict(api_name="/load_variants")[2]
    form = ["", ["mine"], 0.0, 1.0, 6, 0, None, grid, ""]  # reference, variants, sampling, eq, system
    bots, lines, (message, seed) = _frame(client.predict("w1 w2", *form, api_name="/ask"))
    assert len(bots[0]) == len(bots[1]) == 2 and bots[2:] == [[]] * 6 and seed == 0
    first = {i: bots[i][-1] for i in range(2)}
    bots, lines, _ = _frame(client.predict("w3 w4", *form, api_name="/ask"))
    assert bots[1][:3] == ["w1 w2", first[1], "w3 w4"] and len(bots[1]) == 4
    assert "tokens" in lines[1] and "to base" in lines[1]
    board, line = client.predict("", api_name="/pass_1")
    assert "voted **pass**" in _value(line)
    [vote] = VoteStore(run).votes("mine")
    key = json.loads(vote.prompt)
    assert [m["content"] for m in key] == ["w1 w2", first[1], "w3 w4"] and vote.settings["max_new_tokens"] == 6
    bots, _, (message, seed) = _frame(client.predict(*form, api_name="/regenerate"))
    assert seed == 1 and len(bots[1]) == 4  # same turn, next seed
    bots, _, (message,) = _frame(client.predict(api_name="/undo"))
    assert message == "w3 w4" and len(bots[1]) == 2
    bots, _, (message,) = _frame(client.predict(api_name="/clear"))
    assert bots[0] == [] and message == ""
    a, b, reveal, _ = client.predict("w1 w2", ["mine"], 0.0, 1.0, 6, 0, "", api_name="/battle_send")
    assert len(_texts(a)) == 2 and len(_texts(b)) == 2
    assert "Only two columns are chosen (**base** and **mine**)" in _value(reveal)  # the draw has no choice
    a, b, reveal, ranking = client.predict(api_name="/battle_vote_a")
    reveal = _value(reveal)
    [battle] = BattleStore(run).battles()
    assert {battle.model_a, battle.model_b} == {"base", "mine"} and battle.outcome == "a"
    assert f"Model A was **{battle.model_a}**" in reveal and battle.conversation["a"][0]["content"] == "w1 w2"
    assert [row[ranking["headers"].index("model")] for row in ranking["data"]][0] == battle.model_a
    with pytest.raises(Exception, match="already decided"):
        client.predict(api_name="/battle_vote_b")


def test_the_votes_show_only_with_the_answered_and_scored_turn(engine, monkeypatch):
    from playground import tab_compare
    from playground.tab_compare import MAX_COLUMNS, _turn

    monkeypatch.setattr(tab_compare, "STREAM_EVERY", 0.0)  # every step redrawn, the last one too
    conv = Conversation([c.label for c in _columns()])
    conv.ask("w1 w2 ?")
    frames = list(_turn(conv, engine, _columns(), Sampling(max_new_tokens=8), "w5 w6 ?", True))
    n = len(_columns())
    votes = [[b.visible for b in f[2 * MAX_COLUMNS: 2 * MAX_COLUMNS + n]] for f in frames]
    assert len(frames) >= 2 and not any(any(v) for v in votes[:-1]) and all(votes[-1]), votes
    assert all("to reference" in m.value for m in frames[-1][MAX_COLUMNS: MAX_COLUMNS + n])
