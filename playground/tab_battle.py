"""The Compare tab's blind battle: two columns drawn at random answer as "Model A" and "Model B";
the user votes A / B / tie / both bad, then the names are revealed. The draw, the storage and the
ranking are evals/arena.py; this file only draws the form and calls it.

A judge (one the operator offers: `evals.judge.judge_flags`) may give its own pick, asked only
once the user's vote is stored, so it never sways the vote. Asking it is a job on the job line
(`loraeq arena RUN --judge ...`: it judges every battle of the run it has not judged yet, both
orders), as the app's other long work is: loading a local judge model takes seconds and memory,
which a worker process holds under the job line's memory and time limits, never a request
thread of the server. A timer shows the pick (and the judge's agreement with the user so far)
once the job has stored it; the battle's id and the judge ride in a `gr.State`."""

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
from evals.judge import NO_JUDGE, flags_name, judge_flags, judge_labels, judge_line
from playground.guard import handler, public_message
from playground.jobs import ACTIVE
from playground.sessions import Session
from playground.shared import Shared, sampling_for

VOTES = {"a": "A is better", "b": "B is better", "tie": "Tie", "bad": "Both are bad"}
JUDGE_TICK_SECONDS = 2.0
JUDGE_TRIES = 2  # a battle voted while the judge's job was already running is asked in one more job


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


def battle_vote(shared: Shared, outcome: str, judge, state: Session):
    """Store the vote, reveal the names and, with a judge chosen, ask it for its pick on this
    battle now (a job: `judge_pick` shows it when the job has stored it)."""
    battle = state.battle
    if battle is None:
        raise LoraEqError("start a battle first: send a message")
    flags = judge_flags(judge)  # a judge not offered is refused before the vote is kept
    run = shared.require_run(state)
    battle_id = battle.record(BattleStore(run, state.adapters), outcome, battle.settings,
                              voter=shared.area.voter(state))
    asked = None
    if flags:
        asked = {"battle": battle_id, "judge": judge, "tries": 0, "done": False}
        asked = ask_judge(shared, run, asked, state)
    return battle_frame(battle) + [ranking_frame(run), asked]


def judge_key(run: Path, label: str) -> str:
    return f"{run}#battle-judge:{label}"


def ask_judge(shared: Shared, run: Path, asked: dict, state: Session) -> dict:
    """Put the judge's job on the line (`loraeq arena RUN --judge ...`: every battle it has not
    judged); a refusal (the line is full) is kept in `asked` to be shown."""
    argv = ["arena", str(run), *judge_flags(asked["judge"]), "--rounds", "0", "--json"]
    try:
        shared.jobs.submit(judge_key(run, asked["judge"]), argv, owner=shared.area.owner(state), kind="evalset")
    except LoraEqError as e:
        return {**asked, "error": f"The judge was not asked: {public_message(e)}"}
    return {**asked, "tries": asked["tries"] + 1}


def pick_line(battle: BattleRound, name: str, pick: dict, agreement: dict) -> str:
    """The judge's pick on the battle just voted, and how far it has agreed with the user so far."""
    models = {"a": f"**A** ({battle.model_a})", "b": f"**B** ({battle.model_b})", "tie": "**a tie**"}
    said = f"picked {models[pick['winner']]}" if pick.get("winner") in models else \
        "gave no pick (its replies could not be read as A, B or a tie)"
    bias = " (its two orders disagreed: position bias)" if pick.get("position_bias") else ""
    return f"The judge ({name}) {said}{bias}.\n\nSo far: {judge_line(agreement)}"


def judge_pick(shared: Shared, asked, state: Session):
    """(the judge's line, what is asked, the timer) for the battle just voted: its pick once the job
    stored it, a waiting line before (the timer ticks until then); nothing while no vote asked a
    judge, and nothing once a new battle is under way: never a pick before its battle's vote."""
    if not isinstance(asked, dict) or asked.get("done") is not False:
        return gr.skip(), gr.skip(), gr.Timer(active=False)
    battle, run = state.battle, shared.run_path(state)
    if battle is None or battle.outcome is None or run is None:  # a new battle is under way
        return forget_judge()
    line, asked = _judge_state(shared, run, battle, asked, state)
    return line, asked, gr.Timer(active=not asked.get("done"))


def _judge_state(shared: Shared, run: Path, battle: BattleRound, asked: dict, state: Session) -> tuple[str, dict]:
    if asked.get("error"):
        return asked["error"], {**asked, "done": True}
    store, name = BattleStore(run), flags_name(judge_flags(asked["judge"]))
    pick = store.judge_picks(name).get(asked["battle"])
    if pick is not None:
        return pick_line(battle, name, pick, store.judge_reliability(name)), {**asked, "done": True}
    job = shared.jobs.get(judge_key(run, asked["judge"]))
    if job is not None and job.state in ACTIVE:
        where = shared.jobs.position(job.key)
        return (f"Asking the judge ({asked['judge']}) for its pick"
                + (f": waiting in line, position {where}…" if where else "…")), asked
    if job is not None and job.state == "failed":
        return f"The judge could not be asked: {public_message(job.failure(shared.jobs.memory_limit))}", \
            {**asked, "done": True}
    if asked["tries"] < JUDGE_TRIES:  # voted while its last job was running: that job did not see it
        return _judge_state(shared, run, battle, ask_judge(shared, run, asked, state), state)
    return "The judge gave no pick on this battle.", {**asked, "done": True}


def forget_judge():
    """A new battle: the last one's judge line goes, and its timer stops."""
    return "", None, gr.Timer(active=False)


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
        judge = gr.Dropdown(judge_labels(), value=NO_JUDGE, label="Judge (its pick is shown after your vote)",
                            allow_custom_value=False, elem_id="battle-judge", scale=1)
        judged = gr.Markdown(elem_id="battle-judge-pick")
    asked, timer = gr.State(None), gr.Timer(JUDGE_TICK_SECONDS, active=False)  # ticks only while a judge works
    with gr.Row():
        message = gr.Textbox(show_label=False, placeholder="Message to both models", elem_id="battle-input", scale=6)
        send = gr.Button("Send", variant="primary", elem_id="battle-send", scale=1)
        new = gr.Button("New battle", elem_id="battle-new", scale=1)
    return SimpleNamespace(a=a, b=b, votes=votes, buttons=buttons, reveal=reveal, message=message, send=send, new=new,
                           judge=judge, judged=judged, asked=asked, timer=timer)


def wire(shared: Shared, session: gr.State, form: SimpleNamespace, ui: SimpleNamespace, board, csv) -> None:
    frame = [ui.a, ui.b, ui.reveal, ui.votes]
    inputs = [ui.message, form.chosen, form.temperature, form.top_p, form.max_new, form.seed, form.system, session]
    gr.on([ui.send.click, ui.message.submit], handler(battle_send, shared), inputs, frame + [ui.message, session],
          api_name="battle_send", trigger_mode="always_last")
    show_pick, judged = handler(judge_pick, shared), [ui.judged, ui.asked, ui.timer]
    for outcome, button in ui.buttons.items():
        button.click(handler(battle_vote, shared, outcome), [ui.judge, session], frame + [board, ui.asked],
                     api_name=f"battle_vote_{outcome}").success(show_pick, [ui.asked, session], judged, api_name=False)
    ui.timer.tick(show_pick, [ui.asked, session], judged, api_name=False)
    gr.on([ui.send.click, ui.message.submit, ui.new.click], handler(forget_judge), None, judged, api_name=False)
    ui.new.click(handler(new_battle), [session], frame + [session], api_name="battle_new")
    csv.click(handler(ranking_csv, shared), [session], csv, api_name="battle_ranking_csv")
