"""Were the facts learned at all? Each variant answers questions it trained on.

A training loss that fell says the variant finds the data's wording likely; it does not say the
variant states the data's facts. `train_recall` asks each finished variant of a run the questions
of a seeded sample of its own training rows whose references state facts (numbers, dates, codes,
names), greedy as the proof answers, and counts the answers that state them (`matching.match`). Fewer than `RECALL_TARGET` of them: the facts
are not learned yet, and `longer_schedule` says what to train instead. The proof asks the same
questions (the same sample, `train_sample`) and says so in its verdict; `loraeq train` runs this
after training and writes the count into each variant's metrics.json. Nothing here trains.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from adapters.base.tokenize import encode_chat, encode_prompt
from adapters.cache import read_json, write_json_atomic

from .matching import Vocabulary, facts_of, match, vocabulary

RECALL_TARGET = 0.8  # share of its training questions a variant must answer with their facts
RECALL_SAMPLE = 24  # training questions drawn per variant after training (the proof draws as many as it holds out)
RECALL_TOKENS = 96  # new tokens per answer at most: a fact comes early, and long answers would cost minutes
MAX_LENGTH = 1024  # tokens per sampled conversation, as the proof scores them


@dataclass(frozen=True)
class Recall:
    """Answers to a variant's own training questions that state their facts, of those asked."""

    stated: int
    asked: int

    def learned(self, target: float = RECALL_TARGET) -> bool:
        return self.asked > 0 and self.stated >= target * self.asked

    def text(self) -> str:
        """'states the facts in 23 of 24 of its own training questions'"""
        return f"states the facts in {self.stated} of {self.asked} of its own training questions"

    def to_json(self) -> dict:
        return {"stated": self.stated, "asked": self.asked, "target": RECALL_TARGET}


def train_sample(train, variant_config: dict, tokenizer, size: int, seed: int) -> list[tuple[list[dict], object]]:
    """A seeded sample of `size` distinct rows from what this variant trained on (its mix, if any):
    (conversation, encoded) pairs, rows without an assistant token left out."""
    from adapters.shape.variants import Variant
    from adapters.train.runs import training_stream

    stream = training_stream(train, Variant.from_json(variant_config))
    unique = list({json.dumps(c, sort_keys=True): c for c in stream}.values())
    picked = random.Random(f"{seed}:train").sample(unique, min(size, len(unique)))
    pairs = [(c, encode_chat(tokenizer, c, MAX_LENGTH)) for c in picked]
    return [(c, e) for c, e in pairs if e.trained_tokens > 0]


def questions(sample: list[tuple[list[dict], object]], vocab: Vocabulary) -> list[tuple[list[dict], str]]:
    """(prompt up to the last assistant turn, that turn's text) of each sampled conversation whose
    reference states facts (`matching.facts_of`): only those can show whether facts were learned."""
    out = []
    for conversation, _ in sample:
        last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
        prompt, reference = conversation[:last], conversation[last]["content"]
        if facts_of(reference, prompt[-1]["content"] if prompt else "", vocab):
            out.append((prompt, reference))
    return out


def recall_budget(tokenizer, references: list[str]) -> int:
    """New tokens per recall answer: as the proof sizes answers, at most RECALL_TOKENS."""
    from .answers import answer_budget

    return min(RECALL_TOKENS, answer_budget(tokenizer, references)) if references else 16


def recall_of(answers: list[str], asked: list[tuple[list[dict], str]], vocab: Vocabulary) -> list[bool]:
    """Whether each answer states the facts of its question's reference."""
    return [match(a, ref, prompt[-1]["content"], None, vocab).matched for a, (prompt, ref) in zip(answers, asked)]


def data_vocabulary(conversations) -> Vocabulary:
    """The words of a run's data (see `matching.vocabulary`)."""
    return vocabulary(m["content"] for c in conversations for m in c)


def train_recall(run_dir: str | Path, base, names: list[str] | None = None, size: int = RECALL_SAMPLE,
                 seed: int = 0) -> dict[str, Recall]:
    """Each finished variant (or those in `names`) answers `size` of its own training questions;
    how many answers state their facts. `base` is the run's base, loaded."""
    from adapters.infer.engine import stop_token_ids
    from adapters.train.runfolder import RunFolder
    from adapters.train.runs import run_split

    from .adapter_set import load_adapter_set, release
    from .answers import GENERATE_BATCH, greedy_ids

    run = RunFolder.open(run_dir)
    finished = [v for v in run.variants if v.status() == "done" and (names is None or v.name in names)]
    kept = {v.name: Recall(d["stated"], d["asked"]) for v in finished if (d := v.metrics().get("train_recall"))}
    entries = [v for v in finished if v.name not in kept]  # a resumed run asks only what it trained now
    if not entries:
        return kept
    train = run_split(run.path, "train")
    vocab = data_vocabulary(e.messages for e in train.examples)
    asked = {v.name: questions(train_sample(train, v.config, base.tokenizer, size, seed), vocab) for v in entries}
    prompts = [p for v in entries for p, _ in asked[v.name]]
    flat = []
    if prompts:  # no reference states a fact (advice, style): nothing to ask
        adapters = load_adapter_set(base, {v.name: v.folder for v in entries})
        try:
            ids = [encode_prompt(base.tokenizer, p) for p in prompts]
            labels = [adapters.ids[v.name] for v in entries for _ in asked[v.name]]
            budget = recall_budget(base.tokenizer, [r for v in entries for _, r in asked[v.name]])
            flat = greedy_ids(adapters, ids, labels, stop_token_ids(base.tokenizer, adapters.model), budget,
                              GENERATE_BATCH)
        finally:
            release(adapters)
    out, at = dict(kept), 0
    for v in entries:
        n = len(asked[v.name])
        hits = recall_of(flat[at: at + n], asked[v.name], vocab)
        out[v.name] = Recall(sum(hits), n)
        at += n
    return out


def longer_schedule(hyper: dict, seconds: float | None = None, flags: bool = True) -> str:
    """What to train instead when the facts are not learned: twice the training, as a flag or a
    form field ('--epochs 16 (it had 8 epochs; about 4 min)', 'epochs 16 (...)')."""
    if hyper.get("max_steps") is not None:
        flag, now, unit = "--max-steps" if flags else "max steps", int(hyper["max_steps"]), "steps"
    else:
        flag, now, unit = "--epochs" if flags else "epochs", hyper.get("epochs") or 1, "epochs"
    more = math.ceil(2 * now) if unit == "steps" else f"{2 * now:g}"
    took = f"; about {_minutes(2 * seconds)}" if seconds else ""
    return f"{flag} {more} (it had {now:g} {unit}{took})"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def advice(name: str, recall: Recall, hyper: dict, seconds: float | None = None, flags: bool = True) -> str:
    """One line for a variant whose facts are not learned yet ('' when they are)."""
    if recall.learned() or not recall.asked:
        return ""
    return (f"{name} {recall.text()}: the facts are not learned yet; train longer: "
            f"{longer_schedule(hyper, seconds, flags)}")


def recall_line(name: str, metrics: dict, hyper: dict) -> str:
    """What a finished variant's metrics.json says of its own training questions, for a progress
    view: the count, and the longer schedule (as form fields) when the facts are not learned yet."""
    data = (metrics or {}).get("train_recall")
    if not data or not data.get("asked"):
        return ""
    recall = Recall(data["stated"], data["asked"])
    return advice(name, recall, hyper, metrics.get("seconds"), flags=False) or f"{name} {recall.text()}"


def record(run_dir: str | Path, recalls: dict[str, Recall]) -> None:
    """Each variant's recall into its metrics.json, next to what training wrote."""
    from adapters.train.runfolder import RunFolder

    run = RunFolder.open(run_dir)
    for v in run.variants:
        if v.name not in recalls:
            continue
        path, value = Path(v.folder) / "metrics.json", recalls[v.name].to_json()
        metrics = read_json(path)
        if metrics.get("train_recall") != value:  # a count kept from before is not written again
            write_json_atomic(path, {**metrics, "train_recall": value})
