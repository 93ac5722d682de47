"""Compare tab: one message, the original and the variants answering side by side (streaming),
each answer scored, pass / fail votes, the inference-time equalizer, the leaderboard."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from adapters.decoding import Sampling
from adapters.engine import BASE, Column
from adapters.equalizer import Equalizer, equalizer_table
from adapters.errors import LoraEqError
from evals.scores import score_answers
from evals.votes import VoteStore
from playground.shared import Session, Shared

MAX_COLUMNS = 6


def scores_line(score, answer) -> str:
    parts = []
    if score.similarity_reference is not None:
        parts.append(f"to reference **{score.similarity_reference:.3f}**")
    if score.similarity_base is not None:
        parts.append(f"to base {score.similarity_base:.3f}")
    parts.append(f"{answer.tokens} tokens · {answer.seconds:.1f} s")
    return " · ".join(parts)


def leaderboard_frame(run_dir: str | None) -> pd.DataFrame:
    if not run_dir:
        return pd.DataFrame()
    return pd.DataFrame([s.to_json() for s in VoteStore(run_dir).leaderboard()]).round(3)


def build(shared: Shared, session: gr.State) -> None:
    with gr.Row():
        load = gr.Button("Load my run's variants")
        chosen = gr.CheckboxGroup([], label="Variants to show next to the base")
    message = gr.Textbox(label="Message", placeholder="Ask something...", elem_id="compare-message")
    reference = gr.Textbox(label="Reference answer (optional, for scoring)")
    with gr.Row():
        temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
        max_new = gr.Number(96, label="Max new tokens", precision=0)
        seed = gr.Number(0, label="Seed", precision=0)
    with gr.Accordion("Inference equalizer: rescale one variant place by place, next to its unscaled answer",
                      open=False):
        eq_variant = gr.Dropdown([], label="Variant to rescale")
        eq_grid = gr.Dataframe(pd.DataFrame(), label="Multipliers (1 = as trained, 0 = off)", interactive=True)
    ask = gr.Button("Ask", variant="primary")
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

    def on_load(state: Session):
        if not state.run_dir:
            raise gr.Error("train at least one variant first (Equalizer & Train)")
        shared.engines.forget(state.run_dir)  # new variants may have finished since
        try:
            engine = shared.engines.get(state.run_dir)
        except LoraEqError as e:
            raise gr.Error(str(e))
        names = engine.variants
        grid = pd.DataFrame(equalizer_table(engine.unit_grid(names[0]))) if names else pd.DataFrame()
        return (gr.CheckboxGroup(names, value=names), gr.Dropdown(names, value=None), grid,
                leaderboard_frame(state.run_dir))

    load.click(on_load, [session], [chosen, eq_variant, eq_grid, board], api_name="load_variants")

    def columns_for(engine, variants: list[str], eq_name: str | None, grid: pd.DataFrame) -> list[Column]:
        cols = [Column(BASE)] + [Column(v) for v in variants]
        if eq_name:
            unit = engine.unit_grid(eq_name)
            strengths = [[float(grid.iloc[b][r]) for r in unit.roles] for b in range(len(unit.bands))]
            cols.append(Column(eq_name, scales=Equalizer(unit.roles, unit.bands, strengths)))
        return cols[:MAX_COLUMNS]

    def on_ask(text, ref, variants, t, p, n, s, eq_name, grid, state: Session):
        if not state.run_dir:
            raise gr.Error("train at least one variant first (Equalizer & Train)")
        if not (text or "").strip():
            raise gr.Error("type a message first")
        try:
            engine = shared.engines.get(state.run_dir)
            cols = columns_for(engine, variants or [], eq_name, grid)
            sampling = Sampling(max_new_tokens=int(n), temperature=float(t), top_p=float(p), seed=int(s))
            stream = engine.stream(text, cols, sampling=sampling)
        except (LoraEqError, KeyError, ValueError) as e:
            raise gr.Error(str(e))
        labels = [c.label for c in cols]
        texts = [""] * len(cols)
        hidden = MAX_COLUMNS - len(cols)

        def frame(score_texts=None):
            out = [gr.Markdown(f"**{labels[i]}**", visible=True) for i in range(len(cols))]
            out += [gr.Markdown(visible=False)] * hidden
            out += [gr.Textbox(texts[i], visible=True) for i in range(len(cols))] + [gr.Textbox(visible=False)] * hidden
            shown = score_texts is not None
            out += [gr.Markdown(score_texts[i] if shown else "", visible=shown) for i in range(len(cols))]
            out += [gr.Markdown(visible=False)] * hidden
            out += [gr.Button(visible=shown)] * len(cols) + [gr.Button(visible=False)] * hidden
            out += [gr.Button(visible=shown)] * len(cols) + [gr.Button(visible=False)] * hidden
            return out

        for delta in stream:
            texts[delta.column] += delta.text
            yield frame() + [state]
        answers = stream.answers
        scored = score_answers([a.text for a in answers], base_index=0, reference=(ref or "").strip() or None)
        state.last = {
            "prompt": text,
            "columns": [
                {"label": a.label, "variant": a.variant, "text": a.text, "scales": a.scales,
                 "similarity_reference": sc.similarity_reference, "similarity_base": sc.similarity_base,
                 "settings": {**sampling.to_json(), "scales": a.scales, "reference": ref or None}}
                for a, sc in zip(answers, scored)
            ],
        }
        yield frame([scores_line(sc, a) for sc, a in zip(scored, answers)]) + [state]

    ask.click(on_ask, [message, reference, chosen, temperature, top_p, max_new, seed, eq_variant, eq_grid, session],
              titles + boxes + scores + passes + fails + [session], api_name="ask")

    def voter(i: int, verdict: str):
        def cast(note_text: str, state: Session):
            last = state.last
            if not last or i >= len(last["columns"]):
                raise gr.Error("ask something first")
            col = last["columns"][i]
            try:
                VoteStore(state.run_dir).cast(
                    last["prompt"], col["label"], verdict, settings=col["settings"], note=note_text or "",
                    similarity_reference=col["similarity_reference"], similarity_base=col["similarity_base"],
                    answer=col["text"],
                )
            except LoraEqError as e:
                raise gr.Error(str(e))
            gr.Info(f"{verdict} recorded for {col['label']}")
            return leaderboard_frame(state.run_dir)

        return cast

    for i in range(MAX_COLUMNS):
        passes[i].click(voter(i, "pass"), [note, session], board, api_name=f"pass_{i}")
        fails[i].click(voter(i, "fail"), [note, session], board, api_name=f"fail_{i}")

    def on_csv(state: Session):
        if not state.run_dir:
            raise gr.Error("no run yet")
        path = shared.session_dir(state) / "leaderboard.csv"
        return str(VoteStore(state.run_dir).export_csv(path))

    csv.click(on_csv, [session], csv)
