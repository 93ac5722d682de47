"""Compare tab: the chat arena. One chatbot per column (the original and the chosen variants), one
message box; each turn streams every column at once, each column answering from its own replies.
Under each reply its scores and pass / fail votes; the live equalizer; the blind battle
(tab_battle.py); the pass-rate leaderboard beside the battle ranking.

The conversation lives in the session (`adapters.infer.conversation.Conversation`); these handlers only read the
form, call the core and draw what it returns."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from adapters.errors import LoraEqError
from adapters.infer.conversation import Conversation, respond
from adapters.infer.decode_precision import DECODE_PRECISIONS
from adapters.infer.engine import BASE_COLUMN, Column
from adapters.limits import check_number, check_text
from adapters.shape.equalizer import Equalizer, equalizer_table
from evals.scores import score_turn
from evals.votes import VoteStore
from playground import adapter_picker, tab_battle
from playground.guard import handler
from playground.sessions import Session
from playground.shared import Shared, sampling_for

MAX_COLUMNS = 8
MAX_MULTIPLIER = 4.0
STREAM_EVERY = 0.1  # seconds between redraws while a turn streams


def reply_line(reply) -> str:
    """What a reply's column shows under it: turns dropped, similarities, tokens, seconds, the vote."""
    if not reply.done:
        return "*stopped*" if reply.text else ""
    parts = [f"⚠ {reply.dropped_turns} oldest turn(s) left out to fit the model's context"] if reply.dropped_turns else []
    if reply.similarity_reference is not None:
        parts.append(f"to reference **{reply.similarity_reference:.3f}**")
    if reply.similarity_base is not None:
        parts.append(f"to base {reply.similarity_base:.3f}")
    parts.append(f"{reply.tokens} tokens · {reply.seconds:.1f} s")
    if reply.verdict:
        parts.append(f"voted **{reply.verdict}**")
    return " · ".join(parts)


NO_VARIANTS = ("No variant yet: the base answers alone. Variants join here once trained (Equalizer & Train) "
               "or added (Add an adapter, above); votes are kept with a run.")


def chosen_update(names: list[str]) -> gr.CheckboxGroup:
    """The variant choice, with the line saying how variants join while there are none."""
    return gr.CheckboxGroup(names, value=names, info=None if names else NO_VARIANTS)


def leaderboard_frame(run: Path | None) -> pd.DataFrame:
    if run is None:
        return pd.DataFrame()
    return pd.DataFrame([s.to_json() for s in VoteStore(run).leaderboard()]).round(3)


def load_variants(shared: Shared, state: Session):
    run = shared.run_path(state)  # None: the base and the added adapters alone
    if run is not None:
        shared.engines.forget(run)  # new variants may have finished since
    engine = shared.engine_for(state)
    names = engine.variants
    grid = pd.DataFrame(equalizer_table(engine.unit_grid(names[0]))) if names else pd.DataFrame()
    return (chosen_update(names), gr.Dropdown(names, value=None), grid, leaderboard_frame(run),
            tab_battle.ranking_frame(run))


def set_decode_precision(shared: Shared, choice, state: Session):
    """What a 4-bit base decodes with in this session's columns (the next answer loads it so)."""
    if choice not in DECODE_PRECISIONS:
        raise LoraEqError(f"decode precision {str(choice)[:40]!r}: choose one of {', '.join(DECODE_PRECISIONS)}")
    previous, state.decode_precision = state.decode_precision, choice
    try:
        return decode_precision_line(shared, state), state
    except LoraEqError:
        state.decode_precision = previous  # (a copy refused: the columns keep what they had)
        raise


def decode_precision_line(shared: Shared, state: Session) -> str:
    """What the columns decode with, and why."""
    return "*" + shared.engine_for(state).decode_precision.describe() + "*"


def columns_for(shared: Shared, engine, variants, eq_name: str | None, grid: pd.DataFrame) -> list[Column]:
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise LoraEqError("variants: a list of variant names is needed")
    cols = [Column(BASE_COLUMN)] + [Column(v) for v in variants]
    if eq_name:
        unit = engine.unit_grid(eq_name)
        try:
            strengths = [[check_number("multiplier", grid.iloc[b][r], MAX_MULTIPLIER, whole=False)
                          for r in unit.roles] for b in range(len(unit.bands))]
        except (KeyError, IndexError, AttributeError):
            raise LoraEqError("the live equalizer table does not fit the variant's bands and roles") from None
        cols.append(Column(eq_name, live_eq=Equalizer(unit.roles, unit.bands, strengths)))
    limit = min(shared.limits.columns, MAX_COLUMNS)
    if len(cols) > limit:
        raise LoraEqError(f"{len(cols)} columns (base + {len(cols) - 1}): {limit} is the limit; choose fewer variants")
    return cols


def conversation_for(state: Session, labels: list[str], system: str) -> Conversation:
    """The session's conversation; a new one when the columns or the system prompt changed."""
    conv = state.chat
    if conv is None or conv.labels != labels or conv.system != (system.strip() or None):
        if conv is not None and conv.turns:
            gr.Info("The columns or the system prompt changed: a new conversation starts")
        conv = state.chat = Conversation(labels, system.strip() or None)
    return conv


def chat_frame(conv: Conversation | None, votes: bool = True, streaming: bool = False) -> list:
    """Updates for every column's chatbot, reply line, vote buttons (shown when `votes`: a run
    keeps them, once the turn is answered and scored, never while `streaming`) and the column
    itself: unused columns are hidden whole, so the shown ones share the page's width."""
    labels = conv.labels if conv else []
    done = bool(conv and conv.turns and all(r.done for r in conv.last.replies.values()))
    bots, lines = [], []
    for i in range(MAX_COLUMNS):
        shown = i < len(labels)
        bots.append(gr.Chatbot(conv.messages(labels[i]) if shown else [], label=labels[i] if shown else None,
                               visible=shown))
        line = reply_line(conv.last.replies[labels[i]]) if shown and conv.turns else ""
        lines.append(gr.Markdown(line, visible=shown))
    buttons = [gr.Button(visible=votes and done and not streaming and i < len(labels)) for i in range(MAX_COLUMNS)]
    columns = [gr.Column(visible=i < max(1, len(labels))) for i in range(MAX_COLUMNS)]
    return bots + lines + buttons + buttons + columns


def _turn(conv: Conversation, engine, cols, sampling, ref: str, votes: bool):
    """Stream the conversation's last turn into every column, then score it. The page is redrawn
    at most every STREAM_EVERY seconds: every column's whole chat goes out with each redraw."""
    shown = 0.0
    for _ in respond(engine, conv, cols, sampling):
        if time.monotonic() - shown >= STREAM_EVERY:
            shown = time.monotonic()
            yield chat_frame(conv, votes, streaming=True)  # the votes wait for the scores
    score_turn(conv.last, sampling, reference=ref.strip() or None, system=conv.system)
    dropped = max(r.dropped_turns for r in conv.last.replies.values())
    if dropped:
        gr.Warning(f"The conversation outgrew the model's context: its {dropped} oldest turn(s) were left out")
    yield chat_frame(conv, votes)


def ask(shared: Shared, text, ref, variants, t, p, n, s, eq_name, grid, system, state: Session):
    text = check_text("message", text, shared.limits.prompt_chars, required=True)
    ref = check_text("reference answer", ref, shared.limits.prompt_chars)
    system = check_text("system prompt", system, shared.limits.prompt_chars)
    engine = shared.engine_for(state)
    cols = columns_for(shared, engine, variants or [], eq_name, grid)
    sampling = sampling_for(shared.limits, engine, t, p, n, s)
    conv = conversation_for(state, [c.label for c in cols], system)
    conv.ask(text)
    cleared = ""  # the message box is emptied once: a later update would wipe what the user types next
    for frame in _turn(conv, engine, cols, sampling, ref, shared.run_path(state) is not None):
        yield frame + [cleared, sampling.seed, state]
        cleared = gr.Textbox()


def regenerate(shared: Shared, ref, variants, t, p, n, s, eq_name, grid, system, state: Session):
    """The last turn again, with the next seed (a sampled answer comes out different)."""
    conv = state.chat
    if conv is None or not conv.turns:
        raise LoraEqError("nothing to regenerate: send a message first")
    ref = check_text("reference answer", ref, shared.limits.prompt_chars)
    engine = shared.engine_for(state)
    cols = columns_for(shared, engine, variants or [], eq_name, grid)
    if [c.label for c in cols] != conv.labels:
        raise LoraEqError("the columns changed since this conversation began: press Clear to start anew")
    seed = check_number("seed", s, 2**31 - 1) + 1
    sampling = sampling_for(shared.limits, engine, t, p, n, seed if seed < 2**31 else 0)
    conv.regenerate()
    for frame in _turn(conv, engine, cols, sampling, ref, shared.run_path(state) is not None):
        yield frame + [gr.Textbox(), sampling.seed, state]


def undo(shared: Shared, state: Session):
    """Take back the last turn; its message returns to the message box."""
    text = state.chat.undo() if state.chat else ""
    return chat_frame(state.chat, shared.run_path(state) is not None) + [text, state]


def clear(state: Session):
    state.chat = None
    return chat_frame(None) + ["", state]


def vote(shared: Shared, i: int, verdict: str, note_text, state: Session):
    """Pass or fail on column i's last reply, keyed by that column's conversation so far and its settings."""
    conv = state.chat
    if conv is None or not conv.turns or i >= len(conv.labels):
        raise LoraEqError("ask something first")
    run = shared.require_run(state)
    label = conv.labels[i]
    reply = conv.last.replies[label]
    if not reply.done or reply.settings is None:
        raise LoraEqError(f"{label}'s last reply is not finished: regenerate it before voting")
    VoteStore(run, state.adapters).cast(
        conv.key(label), label, verdict, settings=reply.settings,
        note=check_text("note", note_text, shared.limits.text_chars),
        similarity_reference=reply.similarity_reference, similarity_base=reply.similarity_base, answer=reply.text,
        voter=shared.area.voter(state),
    )
    reply.verdict = verdict
    gr.Info(f"{verdict} recorded for {label}")
    return leaderboard_frame(run), gr.Markdown(reply_line(reply))


def leaderboard_csv(shared: Shared, state: Session):
    run = shared.require_run(state, "no run yet")
    path = VoteStore(run).export_csv(shared.area.folder(state) / "leaderboard.csv")
    return shared.downloads.hand_out(path)


def _settings_form() -> SimpleNamespace:
    with gr.Row():
        load = gr.Button("Load my run's variants")
        chosen = gr.CheckboxGroup([], label=f"Variants to show next to the base (up to {MAX_COLUMNS - 1})",
                                  info=NO_VARIANTS)
        decode_precision = gr.Dropdown(list(DECODE_PRECISIONS), value="auto", label="Decode precision (a 4-bit base: NF4 or a copy)",
                               elem_id="compare-decode-precision-choice")
    decode_precision_note = gr.Markdown(elem_id="compare-decode-precision")
    with gr.Row():
        system = gr.Textbox(label="System prompt (optional)", lines=1)
        reference = gr.Textbox(label="Reference answer (optional, for scoring)")
    with gr.Row():
        temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
        max_new = gr.Number(96, label="Max new tokens", step=1)
        seed = gr.Number(0, label="Seed", step=1)
    with gr.Accordion("Live equalizer: rescale one variant place by place, next to its unscaled answer",
                      open=False):
        eq_variant = gr.Dropdown([], label="Variant to rescale")
        eq_grid = gr.Dataframe(pd.DataFrame(), label="Multipliers (1 = as trained, 0 = off)", interactive=True)
    return SimpleNamespace(load=load, chosen=chosen, decode_precision=decode_precision, decode_precision_note=decode_precision_note, system=system, reference=reference, temperature=temperature,
                           top_p=top_p, max_new=max_new, seed=seed, eq_variant=eq_variant, eq_grid=eq_grid)


def _chat_columns() -> SimpleNamespace:
    bots, lines, passes, fails, columns = [], [], [], [], []
    with gr.Row(equal_height=True):
        for i in range(MAX_COLUMNS):
            with gr.Column(min_width=220, visible=i == 0) as column:  # the base's column shows from the start
                columns.append(column)
                bots.append(gr.Chatbot(label=BASE_COLUMN if i == 0 else None, visible=i == 0, elem_id=f"chat-col-{i}",
                                       height=420, render_markdown=False, feedback_options=None))
                lines.append(gr.Markdown(visible=False, elem_id=f"chat-info-{i}"))
                with gr.Row():
                    passes.append(gr.Button("Pass", size="sm", visible=False, elem_id=f"pass-{i}"))
                    fails.append(gr.Button("Fail", size="sm", visible=False, elem_id=f"fail-{i}"))
    with gr.Row():
        message = gr.Textbox(show_label=False, placeholder="Message (Enter sends)", elem_id="chat-input", scale=6)
        send = gr.Button("Send", variant="primary", elem_id="chat-send", scale=1)
    with gr.Row():
        regen = gr.Button("Regenerate", size="sm", elem_id="chat-regenerate")
        undo_button = gr.Button("Undo", size="sm", elem_id="chat-undo")
        clear_button = gr.Button("Clear", size="sm", elem_id="chat-clear")
        stop = gr.Button("Stop", size="sm", variant="stop", elem_id="chat-stop")
    note = gr.Textbox(label="Note with your vote (optional)")
    return SimpleNamespace(bots=bots, lines=lines, passes=passes, fails=fails, columns=columns, message=message,
                           send=send, regen=regen, undo=undo_button, clear=clear_button, stop=stop, note=note)


def _wire_chat(shared: Shared, session: gr.State, f: SimpleNamespace, c: SimpleNamespace, board) -> None:
    frame = c.bots + c.lines + c.passes + c.fails + c.columns
    form = [f.reference, f.chosen, f.temperature, f.top_p, f.max_new, f.seed, f.eq_variant, f.eq_grid, f.system]
    # always_last: a message sent while a turn is still finishing goes next, instead of being dropped.
    sent = gr.on([c.send.click, c.message.submit], handler(ask, shared), [c.message] + form + [session],
                 frame + [c.message, f.seed, session], api_name="ask", trigger_mode="always_last")
    again = c.regen.click(handler(regenerate, shared), form + [session], frame + [c.message, f.seed, session],
                          api_name="regenerate")
    c.stop.click(None, None, None, cancels=[sent, again])
    c.undo.click(handler(undo, shared), [session], frame + [c.message, session], api_name="undo")
    c.clear.click(handler(clear), [session], frame + [c.message, session], api_name="clear")
    for i in range(MAX_COLUMNS):
        c.passes[i].click(handler(vote, shared, i, "pass"), [c.note, session], [board, c.lines[i]],
                          api_name=f"pass_{i}")
        c.fails[i].click(handler(vote, shared, i, "fail"), [c.note, session], [board, c.lines[i]],
                         api_name=f"fail_{i}")


def build(shared: Shared, session: gr.State) -> None:
    adapter_picker.build(shared, session)
    f = _settings_form()
    c = _chat_columns()
    with gr.Accordion("Blind battle: two models drawn at random, shown as Model A and Model B", open=False):
        battle = tab_battle.build(shared, session, f)
    with gr.Row():
        board = gr.Dataframe(label="Leaderboard: pass rate of your votes", interactive=False, elem_id="leaderboard")
        arena_board = gr.Dataframe(label="Battle ranking (Bradley-Terry, 95% intervals)", interactive=False,
                                   elem_id="arena-board")
    with gr.Row():
        csv = gr.DownloadButton("Leaderboard as CSV")
        arena_csv = gr.DownloadButton("Battle ranking as CSV")
    f.load.click(handler(load_variants, shared), [session], [f.chosen, f.eq_variant, f.eq_grid, board, arena_board],
                 api_name="load_variants").then(handler(decode_precision_line, shared), [session], f.decode_precision_note,
                                                api_name=False)
    f.decode_precision.change(handler(set_decode_precision, shared), [f.decode_precision, session], [f.decode_precision_note, session],
                      api_name="set_decode_precision")
    _wire_chat(shared, session, f, c, board)
    tab_battle.wire(shared, session, f, battle, arena_board, arena_csv)
    csv.click(handler(leaderboard_csv, shared), [session], csv, api_name="leaderboard_csv")
