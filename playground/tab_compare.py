"""Compare tab: one message, the original and the variants answering side by side (streaming),
each answer scored, pass / fail votes, the inference-time equalizer, the leaderboard."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from adapters.decoding import Sampling
from adapters.engine import BASE, Column
from adapters.equalizer import Equalizer, equalizer_table
from adapters.errors import LoraEqError
from adapters.limits import check_new_tokens, check_number, check_text
from evals.scores import score_answers
from evals.votes import VoteStore, answer_settings
from playground import adapter_picker
from playground.guard import handler
from playground.sessions import Session
from playground.shared import Shared

MAX_COLUMNS = 6
MAX_MULTIPLIER = 4.0


def scores_line(score, answer) -> str:
    parts = []
    if score.similarity_reference is not None:
        parts.append(f"to reference **{score.similarity_reference:.3f}**")
    if score.similarity_base is not None:
        parts.append(f"to base {score.similarity_base:.3f}")
    parts.append(f"{answer.tokens} tokens · {answer.seconds:.1f} s")
    return " · ".join(parts)


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
    return gr.CheckboxGroup(names, value=names), gr.Dropdown(names, value=None), grid, leaderboard_frame(run)


def columns_for(shared: Shared, engine, variants, eq_name: str | None, grid: pd.DataFrame) -> list[Column]:
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise LoraEqError("variants: a list of variant names is needed")
    cols = [Column(BASE)] + [Column(v) for v in variants]
    if eq_name:
        unit = engine.unit_grid(eq_name)
        try:
            strengths = [[check_number("multiplier", grid.iloc[b][r], MAX_MULTIPLIER, whole=False)
                          for r in unit.roles] for b in range(len(unit.bands))]
        except (KeyError, IndexError, AttributeError):
            raise LoraEqError("the inference equalizer table does not fit the variant's bands and roles") from None
        cols.append(Column(eq_name, scales=Equalizer(unit.roles, unit.bands, strengths)))
    limit = min(shared.limits.columns, MAX_COLUMNS)
    if len(cols) > limit:
        raise LoraEqError(f"{len(cols)} columns (base + {len(cols) - 1}): {limit} is the limit; choose fewer variants")
    return cols


def ask(shared: Shared, text, ref, variants, t, p, n, s, eq_name, grid, state: Session):
    text = check_text("message", text, shared.limits.prompt_chars, required=True)
    ref = check_text("reference answer", ref, shared.limits.prompt_chars)
    engine = shared.engine_for(state)
    cols = columns_for(shared, engine, variants or [], eq_name, grid)
    sampling = Sampling(max_new_tokens=check_new_tokens(n, shared.limits, engine.model),
                        temperature=check_number("temperature", t, 2.0, whole=False),
                        top_p=check_number("top-p", p, 1.0, whole=False),
                        seed=check_number("seed", s, 2**31 - 1))
    stream = engine.stream(text, cols, sampling=sampling)
    texts = [""] * len(cols)
    labels = [c.label for c in cols]
    for delta in stream:
        texts[delta.column] += delta.text
        yield answer_frame(labels, texts) + [state]
    answers = stream.answers
    scored = score_answers([a.text for a in answers], base_index=0, reference=ref.strip() or None)
    state.last = {
        "prompt": text,
        "columns": [
            {"label": a.label, "variant": a.variant, "text": a.text, "scales": a.scales,
             "similarity_reference": sc.similarity_reference, "similarity_base": sc.similarity_base,
             "settings": answer_settings(sampling, seed=a.seed, scales=a.scales)}
            for a, sc in zip(answers, scored)
        ],
    }
    yield answer_frame(labels, texts, [scores_line(sc, a) for sc, a in zip(scored, answers)]) + [state]


def answer_frame(labels: list[str], texts: list[str], score_texts: list[str] | None = None) -> list:
    """Updates for every column's title, answer, score line and vote buttons (unused columns hidden)."""
    n, hidden, shown = len(labels), MAX_COLUMNS - len(labels), score_texts is not None
    out = [gr.Markdown(f"**{labels[i]}**", visible=True) for i in range(n)] + [gr.Markdown(visible=False)] * hidden
    out += [gr.Textbox(texts[i], visible=True) for i in range(n)] + [gr.Textbox(visible=False)] * hidden
    out += [gr.Markdown(score_texts[i] if shown else "", visible=shown) for i in range(n)]
    out += [gr.Markdown(visible=False)] * hidden
    out += ([gr.Button(visible=shown)] * n + [gr.Button(visible=False)] * hidden) * 2
    return out


def vote(shared: Shared, i: int, verdict: str, note_text, state: Session):
    last = state.last
    if not last or i >= len(last["columns"]):
        raise LoraEqError("ask something first")
    run = shared.require_run(state)
    col = last["columns"][i]
    VoteStore(run, state.adapters).cast(
        last["prompt"], col["label"], verdict, settings=col["settings"],
        note=check_text("note", note_text, shared.limits.text_chars),
        similarity_reference=col["similarity_reference"], similarity_base=col["similarity_base"], answer=col["text"],
        voter=shared.area.voter(state),
    )
    gr.Info(f"{verdict} recorded for {col['label']}")
    return leaderboard_frame(run)


def leaderboard_csv(shared: Shared, state: Session):
    run = shared.require_run(state, "no run yet")
    path = VoteStore(run).export_csv(shared.area.folder(state) / "leaderboard.csv")
    return shared.downloads.hand_out(path)


def build(shared: Shared, session: gr.State) -> None:
    adapter_picker.build(shared, session)
    with gr.Row():
        load = gr.Button("Load my run's variants")
        chosen = gr.CheckboxGroup([], label="Variants to show next to the base")
    message = gr.Textbox(label="Message", placeholder="Ask something...", elem_id="compare-message")
    reference = gr.Textbox(label="Reference answer (optional, for scoring)")
    with gr.Row():
        temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
        max_new = gr.Number(96, label="Max new tokens", step=1)
        seed = gr.Number(0, label="Seed", step=1)
    with gr.Accordion("Inference equalizer: rescale one variant place by place, next to its unscaled answer",
                      open=False):
        eq_variant = gr.Dropdown([], label="Variant to rescale")
        eq_grid = gr.Dataframe(pd.DataFrame(), label="Multipliers (1 = as trained, 0 = off)", interactive=True)
    ask_button = gr.Button("Ask", variant="primary")
    titles, boxes, scores, passes, fails = [], [], [], [], []
    with gr.Row():
        for i in range(MAX_COLUMNS):
            with gr.Column(min_width=220):
                titles.append(gr.Markdown(visible=False))
                boxes.append(gr.Textbox(lines=8, show_label=False, visible=False, elem_id=f"answer-{i}"))
                scores.append(gr.Markdown(visible=False))
                with gr.Row():
                    passes.append(gr.Button("Pass", size="sm", visible=False, elem_id=f"pass-{i}"))
                    fails.append(gr.Button("Fail", size="sm", visible=False, elem_id=f"fail-{i}"))
    note = gr.Textbox(label="Note with your vote (optional)")
    board = gr.Dataframe(label="Leaderboard (your votes)", interactive=False, elem_id="leaderboard")
    csv = gr.DownloadButton("Leaderboard as CSV")

    load.click(handler(load_variants, shared), [session], [chosen, eq_variant, eq_grid, board],
               api_name="load_variants")
    ask_button.click(handler(ask, shared),
                     [message, reference, chosen, temperature, top_p, max_new, seed, eq_variant, eq_grid, session],
                     titles + boxes + scores + passes + fails + [session], api_name="ask")
    for i in range(MAX_COLUMNS):
        passes[i].click(handler(vote, shared, i, "pass"), [note, session], board, api_name=f"pass_{i}")
        fails[i].click(handler(vote, shared, i, "fail"), [note, session], board, api_name=f"fail_{i}")
    csv.click(handler(leaderboard_csv, shared), [session], csv, api_name="leaderboard_csv")
