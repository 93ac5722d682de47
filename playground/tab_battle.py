"""The Compare tab's blind battle: two columns drawn at random answer as "Model A" and "Model B";
the user votes A / B / tie / both bad, then the names are revealed. The draw, the storage and the
ranking are evals/arena.py; this file only draws the form and calls it."""

from __future__ import annotations

import random
import secrets
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from adapters.errors import LoraEqError
from adapters.infer.conversation import respond
from adapters.infer.engine import BASE_COLUMN, Column
from adapters.limits import check_text
from evals.arena import BattleRound, BattleStore, Rating
from playground.guard import handler
from playground.sessions import Session
from playground.shared import Shared, sampling_for

VOTES = {"a": "A is better", "b": "B is better", "tie": "Tie", "bad": "Both are bad"}


def ranking_frame(run: Path | None) -> pd.DataFrame:
    columns = [f.name for f in fields(Rating)]  # named even while empty
    if run is None:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame([r.to_json() for r in BattleStore(run).ranking()], columns=columns)


def _new_round(state: Session, variants, system: str) -> BattleRound:
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise LoraEqError("variants: a list of variant names is needed")
    if state.battle_rng is None:
        state.battle_rng = random.Random(secrets.randbits(64))
    state.battle = BattleRound.draw([BASE_COLUMN] + variants, state.battle_rng, system.strip() or None)
    return state.battle


def pair_note(columns: list[str]) -> str:
    """Said while a battle is open when the draw has no choice: with only the base and one variant,
    every battle is those two (only their order is random)."""
    names = list(dict.fromkeys(columns))
    if len(names) != 2:
        return ""
    return (f"Only two columns are chosen (**{names[0]}** and **{names[1]}**): every battle is between these two, "
            "only which one is Model A is random. Choose more variants above for a random pair.")


def battle_frame(battle: BattleRound | None, note: str = "") -> list:
    """Model A's and Model B's chats, the reveal line (or `note` before the vote) and whether the
    vote buttons show."""
    if battle is None:
        return [[], [], "", gr.Row(visible=False)]
    conv = battle.conversation
    done = bool(conv.turns) and all(r.done for r in conv.last.replies.values()) and battle.outcome is None
    reveal = note
    if battle.outcome is not None:
        reveal = (f"You voted **{VOTES[battle.outcome]}**. Model A was **{battle.model_a}**, "
                  f"Model B was **{battle.model_b}**. Send a message to start the next battle.")
    return [conv.messages(battle.model_a), conv.messages(battle.model_b), reveal, gr.Row(visible=done)]


def battle_send(shared: Shared, text, variants, t, p, n, s, system, state: Session):
    """One turn of the battle (a new pair is drawn when none is going or the last was decided)."""
    shared.require_run(state)
    text = check_text("message", text, shared.limits.prompt_chars, required=True)
    system = check_text("system prompt", system, shared.limits.prompt_chars)
    engine = shared.engine_for(state)
    sampling = sampling_for(shared.limits, engine, t, p, n, s)
    battle = state.battle
    if battle is None or battle.outcome is not None:
        battle = _new_round(state, variants or [], system)
    battle.conversation.ask(text)
    columns = [Column(battle.model_a), Column(battle.model_b)]
    note = pair_note([BASE_COLUMN, *(variants or [])])
    cleared = ""  # the message box is emptied once (see tab_compare.ask)
    for _ in respond(engine, battle.conversation, columns, sampling):
        yield battle_frame(battle, note) + [cleared, state]
        cleared = gr.Textbox()
    battle.settings = {**sampling.to_json(), "system": battle.conversation.system}
    yield battle_frame(battle, note) + [cleared, state]


def battle_vote(shared: Shared, outcome: str, state: Session):
    battle = state.battle
    if battle is None:
        raise LoraEqError("start a battle first: send a message")
    run = shared.require_run(state)
    battle.record(BattleStore(run, state.adapters), outcome, battle.settings, voter=shared.area.voter(state))
    return battle_frame(battle) + [ranking_frame(run)]


def new_battle(state: Session):
    state.battle = None
    return battle_frame(None) + [state]


def ranking_csv(shared: Shared, state: Session):
    run = shared.require_run(state, "no run yet")
    path = BattleStore(run).export_csv(shared.area.folder(state) / "battle-ranking.csv")
    return shared.downloads.hand_out(path)


def build(shared: Shared, session: gr.State, form: SimpleNamespace) -> SimpleNamespace:
    with gr.Row():
        a = gr.Chatbot(label="Model A", elem_id="battle-a", height=320, render_markdown=False, feedback_options=None)
        b = gr.Chatbot(label="Model B", elem_id="battle-b", height=320, render_markdown=False, feedback_options=None)
    with gr.Row(visible=False) as votes:
        buttons = {k: gr.Button(label, size="sm", elem_id=f"battle-vote-{k}") for k, label in VOTES.items()}
    reveal = gr.Markdown(elem_id="battle-reveal")
    with gr.Row():
        message = gr.Textbox(show_label=False, placeholder="Message to both models", elem_id="battle-input", scale=6)
        send = gr.Button("Send", variant="primary", elem_id="battle-send", scale=1)
        new = gr.Button("New battle", elem_id="battle-new", scale=1)
    return SimpleNamespace(a=a, b=b, votes=votes, buttons=buttons, reveal=reveal, message=message, send=send, new=new)


def wire(shared: Shared, session: gr.State, form: SimpleNamespace, ui: SimpleNamespace, board, csv) -> None:
    frame = [ui.a, ui.b, ui.reveal, ui.votes]
    inputs = [ui.message, form.chosen, form.temperature, form.top_p, form.max_new, form.seed, form.system, session]
    gr.on([ui.send.click, ui.message.submit], handler(battle_send, shared), inputs, frame + [ui.message, session],
          api_name="battle_send", trigger_mode="always_last")
    for outcome, button in ui.buttons.items():
        button.click(handler(battle_vote, shared, outcome), [session], frame + [board], api_name=f"battle_vote_{outcome}")
    ui.new.click(handler(new_battle), [session], frame + [session], api_name="battle_new")
    csv.click(handler(ranking_csv, shared), [session], csv, api_name="battle_ranking_csv")
