"""The side-by-side engine: one base in memory, every variant of a run loaded onto it as a named adapter.

`CompareEngine.from_run` loads the run's base once (NF4 or full precision) and its finished
variants as PEFT adapters on that one model. A message (with an optional chat history, shared or
one per column, and an optional system prompt) is answered by the base and the chosen variants in
one batched decode (decoding.py) where each row goes through its own adapter (adapter_rows.py), rendered
with the model's chat template and left-padded. `stream` yields each column's new text as it
comes, for a UI that fills N columns live; `answer` waits for the whole answers; `answer_many`
answers several prompts x the columns in one batch (an eval set). Greedy answers
are token-identical to asking each column alone; sampled answers are reproducible because every
column samples with its own seed, derived from the settings' seed and the column's label. A
conversation longer than the model's context loses its oldest turns (conversation.trim_to_context), and
each answer says how many (`Answer.dropped_turns`).

A column may carry a live equalizer grid (`Column.live_eq`): per-cell multipliers on the trained
adapter's LoRA scaling (live_eq.py), for that answer only, so the same variant can answer scaled
and as trained side by side. The fused router applies them to the row's own scaling; with PEFT's
`adapter_names` path a scaled column runs on a private in-memory copy of the adapter, scaled for
the batch and reset after it. Adapters are only ever read from disk when the engine is built:
bitsandbytes repacks NF4 weights for the CPU at the first forward and undoes that, lossily,
whenever the model's state dict is read (PEFT's `load_adapter` reads it), which would shift the
base's answers; so hand the engine a freshly loaded base. What a 4-bit base decodes with (its NF4
weights, or a full-precision copy made before the adapters load) is `decode_precision`
(decode_precision.py), reported by `info()`. With the fused router's fast path off
(LORAEQ_FAST_PATHS, fastpath.py) the backend is PEFT's, whatever was asked.

Concurrency: one engine serves many users, but a batch changes the shared model while it runs
(LoRA layers re-routed, scaled copies set), so batches run one at a time under the engine's lock,
which a stream holds from its first item to its end: close or exhaust a stream you stop reading
(Python closes an abandoned generator when it is collected). Nothing here scores or stores
answers (evals/).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from adapters.errors import LoraEqError
from adapters.fastpath import FUSED_ROUTER, note, off_reason
from adapters.limits import context_length
from adapters.shape.equalizer import Equalizer
from adapters.train.runfolder import BASE_COLUMN, RunFolder, VariantInfo, derived_seed

from .adapter_rows import BASE_ROW, ROUTERS, fusable
from .conversation import trim_to_context
from .decoding import Sampling, decode

BACKENDS = ("auto", "fused", "peft")
_EQ_SUFFIX = "@eq"


@dataclass(frozen=True)
class Column:
    """One answer to produce: the base or a variant, optionally scaled live, with an optional fixed seed."""

    variant: str  # BASE_COLUMN or a variant name of the run
    live_eq: Equalizer | None = None  # per-cell multipliers on the adapter's scaling; None = as trained
    seed: int | None = None  # sampling seed; None derives one from the settings' seed and the label
    name: str | None = None  # the column's label; default: the variant, with "@eq" when scaled

    def __post_init__(self) -> None:
        if not isinstance(self.variant, str) or not self.variant.strip():
            raise LoraEqError(f"column variant {self.variant!r}: must be a non-empty name")
        if self.live_eq is not None and not isinstance(self.live_eq, Equalizer):
            kind = type(self.live_eq).__name__
            raise LoraEqError(f"column {self.variant!r}: live_eq must be an Equalizer grid, got {kind}")
        if self.variant == BASE_COLUMN and self.live_eq is not None:
            raise LoraEqError("the base column has no adapter to scale")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise LoraEqError(f"column {self.variant!r}: seed {self.seed!r} must be a whole number")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise LoraEqError(f"column name {self.name!r}: must be a non-empty string")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.variant + (_EQ_SUFFIX if self.live_eq is not None else "")


def column_seed(column: Column, sampling: Sampling) -> int:
    """A column's sampling seed: its own, or one derived from the settings' seed and its label."""
    if column.seed is not None:
        return column.seed
    return derived_seed(sampling.seed, column.label)


@dataclass
class Answer:
    """One column's finished answer."""

    label: str
    variant: str
    text: str
    token_ids: list[int]
    seconds: float  # from the start of the batch to this column's last token
    finish_reason: str  # "stop" (end of turn) or "length" (max_new_tokens)
    seed: int
    live_eq: dict | None = None  # the live grid (Equalizer JSON) when the column was scaled
    dropped_turns: int = 0  # oldest turns of the history left out to fit the model's context

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Delta:
    """New text of one column; `done` on the column's last delta (its text may then be empty)."""

    column: int
    label: str
    text: str
    done: bool = False


class _TextTail:
    """Incremental detokenization: the text of the tokens so far, minus what was already given out.
    Holds back while the text ends in an incomplete UTF-8 character (a byte-level token split it)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.shown = ""

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.text()
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return ""
        new, self.shown = text[len(self.shown):], text
        return new

    def finish(self) -> str:
        text = self.text()
        new = text[len(self.shown):] if text.startswith(self.shown) else ""
        self.shown = text
        return new


def stop_token_ids(tokenizer, model) -> set[int]:
    """End-of-sequence ids: the tokenizer's and generation config's EOS, plus the special token the
    chat template closes an assistant turn with (found by rendering one, so any template works)."""
    from adapters.base.tokenize import render

    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        ids.update(v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, int))
    marker = "LORAEQMARKER"
    text = render(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}])
    after = tokenizer(text[text.find(marker) + len(marker):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    ids.update(t for t in after[:3] if t in special and t != tokenizer.pad_token_id)
    if not ids:
        raise LoraEqError("the tokenizer has no end-of-sequence token: answers would never stop")
    return ids


def run_variants(run_dir: Path) -> dict[str, Path]:
    """Finished variants of a run: name -> folder (adapter + variant.json), in the run's order."""
    return RunFolder.open(run_dir).adapters()


def _pick_variants(available: dict[str, Path], wanted: list[str] | None, run_dir: Path) -> dict[str, Path]:
    if wanted is None:
        return available
    missing = [w for w in wanted if w not in available and w != BASE_COLUMN]
    if missing:
        names = ", ".join(available) or "none"
        raise LoraEqError(f"{run_dir}: no finished variant named {missing[0]!r} (finished: {names})")
    return {w: available[w] for w in dict.fromkeys(wanted) if w != BASE_COLUMN}


@dataclass
class _Loaded:
    key: str  # the adapter's name inside the PEFT model
    folder: Path
    grid: dict | None  # the equalizer grid it was trained with (variant.json)
    views: list[str] = field(default_factory=list)  # private copies for scaled columns


class CompareEngine:
    """A base model with variants loaded as named adapters, answering side by side (see the module doc)."""

    def __init__(self, base, adapters: dict[str, str | Path], *, backend: str = "auto", decode_precision: str = "auto"):
        """`base` is a LoadedModel the engine now owns (its model gets the adapters; `close` removes
        them); `adapters` maps variant name -> adapter folder (PEFT format); `decode_precision` says what a
        4-bit base decodes with (decode_precision.DECODINGS; a copy replaces its 4-bit layers)."""
        from adapters.base.analysis import tuning_map

        from .decode_precision import dequantize, plan

        if backend not in BACKENDS:
            raise LoraEqError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if BASE_COLUMN in adapters:
            raise LoraEqError(f"a variant may not be called {BASE_COLUMN!r}: that name is the original model's column")
        self.decode_precision = plan(base, decode_precision)
        if self.decode_precision.copied:
            dequantize(base.model, self.decode_precision.precision)
        self.base = base
        self.tokenizer = base.tokenizer
        self.run_dir: Path | None = None  # set by from_run
        self.outside: list[str] = []  # names of the adapters that came from outside a run (with_outside)
        self.warnings: dict[str, list[str]] = {}  # outside adapter -> what its check noticed
        self.tmap = tuning_map(base.model)  # before wrapping: module names as the analysis knows them
        self._lock = threading.Lock()
        self._variants: dict[str, _Loaded] = {}
        self.model = self._load(base.model, adapters)
        self.model.eval()
        from adapters.shape.live_eq import LiveEqWriter, LiveEqCells

        self._cells = LiveEqCells(self.model, self.tmap)
        self._live_eq = LiveEqWriter(self._cells)
        self.backend = self._choose_backend(backend)
        self.stop_ids = stop_token_ids(self.tokenizer, base.model)

    # ---- loading ------------------------------------------------------------------------------

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        variants: list[str] | None = None,
        precision: str | None = None,
        device: str | None = None,
        backend: str = "auto",
        adapters: dict[str, str | Path] | None = None,
        allow_pickle: bool = False,
        decode_precision: str = "auto",
    ) -> CompareEngine:
        """Load a run's base (in the run's precision unless given) and its finished variants, plus
        outside adapters (name -> folder), each checked against the base first (adapter_sources.py)."""
        from adapters.base.loading import load_model

        run = RunFolder.open(run_dir)
        chosen = _pick_variants(run.adapters(), variants, run.path)
        clash = sorted(set(adapters or {}) & set(run.adapters()))
        if clash:
            raise LoraEqError(f"adapter name {clash[0]!r} is already a variant of this run: choose another name")
        base = load_model(run.model, precision or run.precision, device=device)
        for name in chosen:
            if run.variant(name).base_fingerprint() not in (None, base.fingerprint):
                raise LoraEqError(f"variant {name!r} was trained on a different base than {base.source.id}")
        engine = cls.with_outside(base, chosen, adapters or {}, backend=backend, allow_pickle=allow_pickle,
                                  decode_precision=decode_precision)
        engine.run_dir = run.path
        return engine

    @classmethod
    def from_model(
        cls,
        model: str | None,
        adapters: dict[str, str | Path],
        *,
        precision: str = "auto",
        device: str | None = None,
        backend: str = "auto",
        allow_pickle: bool = False,
        decode_precision: str = "auto",
    ) -> CompareEngine:
        """A base (no run) with outside adapters, each checked against it first."""
        from adapters.base.loading import load_model

        base = load_model(model, precision, device=device)
        return cls.with_outside(base, {}, adapters, backend=backend, allow_pickle=allow_pickle, decode_precision=decode_precision)

    @classmethod
    def with_outside(cls, base, variants: dict, adapters: dict, *, backend: str = "auto",
                     allow_pickle: bool = False, decode_precision: str = "auto") -> CompareEngine:
        """An engine over `base` with trained `variants` and outside `adapters` (checked here)."""
        from adapters.share.adapter_sources import check_adapters

        warnings = check_adapters(adapters, base, allow_pickle, taken=variants)
        engine = cls(base, {**variants, **adapters}, backend=backend, decode_precision=decode_precision)
        engine.outside, engine.warnings = list(adapters), warnings
        return engine

    def _load(self, model, adapters: dict[str, str | Path]):
        from peft import PeftModel

        wrapped = model
        for i, (name, folder) in enumerate(adapters.items()):
            folder = Path(folder)
            if not (folder / "adapter_config.json").is_file():
                raise LoraEqError(f"variant {name!r}: {folder} holds no PEFT adapter (adapter_config.json)")
            key = f"v{i}"
            try:
                if wrapped is model:
                    wrapped = PeftModel.from_pretrained(model, folder, adapter_name=key)
                else:
                    wrapped.load_adapter(folder, adapter_name=key)
            except (OSError, ValueError, RuntimeError, KeyError) as e:
                if wrapped is not model:
                    wrapped.unload()  # give the base back as it came
                raise LoraEqError(f"variant {name!r}: cannot load its adapter ({type(e).__name__}: {e})") from None
            self._variants[name] = _Loaded(key, folder, VariantInfo.at(folder).grid())
        return wrapped

    def _choose_backend(self, backend: str) -> str:
        if backend == "peft":
            return backend
        off = off_reason(FUSED_ROUTER)
        if off:  # switched off or an untested PEFT: PEFT's own mixed batches, asked for "fused" or not
            note(FUSED_ROUTER, off)
            return "peft"
        if backend == "fused":
            for name, v in self._variants.items():
                reason = fusable(self.model, v.key)
                if reason:
                    raise LoraEqError(f"variant {name!r} uses {reason}: the fused backend needs plain LoRA")
            return backend
        reason = next(filter(None, (fusable(self.model, v.key) for v in self._variants.values())), None)
        if reason:
            note(FUSED_ROUTER, f"a variant with {reason}")
        return "peft" if reason else "fused"

    # ---- what the engine holds ------------------------------------------------------------------

    @property
    def variants(self) -> list[str]:
        return list(self._variants)

    def columns(self, variants: list[str] | None = None) -> list[Column]:
        """The base's column first, then one per chosen variant (default: all)."""
        names = self.variants if variants is None else [v for v in variants if v != BASE_COLUMN]
        return [Column(BASE_COLUMN)] + [Column(self._check_variant(v)) for v in names]

    def unit_grid(self, variant: str) -> Equalizer:
        """A multiplier grid of ones over the roles and bands the variant was trained with
        (the model's roles in the default bands when its folder does not say): move cells from there."""
        from adapters.base.bands import DEFAULT_BANDS, layer_bands

        loaded = self._variants[self._check_variant(variant)]
        if loaded.grid:
            trained = Equalizer.from_json(loaded.grid)
            return Equalizer.uniform(trained.roles, trained.bands, 1.0)
        return Equalizer.uniform(self.tmap.roles, layer_bands(self.tmap.layers, DEFAULT_BANDS), 1.0)

    def trained_grid(self, variant: str) -> Equalizer | None:
        grid = self._variants[self._check_variant(variant)].grid
        return Equalizer.from_json(grid) if grid else None

    def variant_folder(self, variant: str) -> Path:
        return self._variants[self._check_variant(variant)].folder

    def info(self) -> dict:
        return {**self.base.info(), "variants": self.variants, "outside": list(self.outside),
                "warnings": dict(self.warnings), "backend": self.backend,
                "decode_precision": {"precision": self.decode_precision.precision, "copy": self.decode_precision.copied,
                             "reason": self.decode_precision.reason}}

    def _check_variant(self, name: str) -> str:
        if name not in self._variants:
            raise LoraEqError(f"no variant {name!r} in this engine (loaded: {', '.join(self._variants) or 'none'})")
        return name

    # ---- answering ------------------------------------------------------------------------------

    def stream(
        self,
        message: str,
        columns: list[Column | str] | None = None,
        *,
        history: list[dict] | dict[str, list[dict]] | None = None,
        system: str | None = None,
        sampling: Sampling | None = None,
    ) -> AnswerStream:
        """Answer `message` in every column, streaming. `history` is the chat so far: one list of
        messages for all columns, or a dict label -> messages when each column kept its own."""
        cols = self._resolve_columns(columns)
        conversations = [conversation(message, _history_for(history, c.label), system) for c in cols]
        return AnswerStream(self, cols, conversations, sampling or Sampling())

    def answer(self, message: str, columns: list[Column | str] | None = None, **kwargs) -> list[Answer]:
        """Like `stream`, waiting for the whole answers."""
        stream = self.stream(message, columns, **kwargs)
        for _ in stream:
            pass
        return stream.answers

    def answer_many(
        self,
        prompts: list[list[dict]],
        columns: list[Column | str] | None = None,
        *,
        sampling: Sampling | None = None,
    ) -> list[list[Answer]]:
        """Several prompts, each in every column, in one batched decode: one list of answers per
        prompt, in column order. Each prompt is its whole conversation (`conversation(...)`). A row
        never depends on the other rows of its batch, so the answers are the ones `answer` gives."""
        cols = self._resolve_columns(columns)
        if not prompts:
            return []
        rows = [c for _ in prompts for c in cols]
        stream = AnswerStream(self, rows, [list(p) for p in prompts for _ in cols], sampling or Sampling())
        for _ in stream:
            pass
        answers = stream.answers
        return [answers[i * len(cols):(i + 1) * len(cols)] for i in range(len(prompts))]

    def _resolve_columns(self, columns: list[Column | str] | None) -> list[Column]:
        cols = self.columns() if columns is None else [c if isinstance(c, Column) else Column(c) for c in columns]
        if not cols:
            raise LoraEqError("choose at least one column")
        for c in cols:
            if c.variant != BASE_COLUMN:
                self._check_variant(c.variant)
        labels = [c.label for c in cols]
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        if duplicates:
            raise LoraEqError(f"column labels {duplicates}: each column needs its own label (set Column.name)")
        return cols

    def _rows(self, columns: list[Column]) -> tuple[list[str], list[dict | None]]:
        """Each row's PEFT adapter name and, for a scaled column, its per-layer multipliers. On the
        PEFT path a scaled column gets a private copy of its adapter instead, scaled now."""
        names, multipliers, copies = [], [], {}
        for c in columns:
            if c.variant == BASE_COLUMN:
                names.append(BASE_ROW)
                multipliers.append(None)
                continue
            loaded = self._variants[c.variant]
            if c.live_eq is None:
                names.append(loaded.key)
                multipliers.append(None)
            elif self.backend == "fused":
                names.append(loaded.key)
                multipliers.append(self._cells.multipliers(c.live_eq))
            else:
                k = copies[c.variant] = copies.get(c.variant, -1) + 1
                view = self._view(loaded, k)
                self._live_eq.apply(view, c.live_eq)
                names.append(view)
                multipliers.append(None)
        return names, multipliers

    def _view(self, loaded: _Loaded, k: int) -> str:
        """The k-th private copy of an adapter, made in memory from the loaded one (not from disk:
        see the module doc) the first time it is needed."""
        import copy

        from adapters.shape.live_eq import lora_layers

        while len(loaded.views) <= k:
            key = f"{loaded.key}_eq{len(loaded.views)}"
            self.model.add_adapter(key, copy.deepcopy(self.model.peft_config[loaded.key]))
            for _, module in lora_layers(self.model):
                if loaded.key in module.lora_A:
                    module.lora_A[key].weight.data.copy_(module.lora_A[loaded.key].weight.data)
                    module.lora_B[key].weight.data.copy_(module.lora_B[loaded.key].weight.data)
                    module.scaling[key] = module.scaling[loaded.key]
            self.model.requires_grad_(False)
            self.model.eval()
            loaded.views.append(key)
            self._cells.refresh()
        return loaded.views[k]

    def _reset_views(self) -> None:
        for loaded in self._variants.values():
            for key in loaded.views:
                self._live_eq.reset(key)

    def close(self) -> None:
        """Take every adapter out of the base model: its modules are the base's own again."""
        with self._lock:
            if self._variants:
                self.model.unload()
                self._variants.clear()
            self.model = self.base.model


def conversation(message: str, history: list[dict] | None, system: str | None) -> list[dict]:
    """The messages one column answers: system prompt, the chat so far, the new user message."""
    if not isinstance(message, str) or not message.strip():
        raise LoraEqError("the message is empty")
    messages = [{"role": "system", "content": system}] if system else []
    for m in history or []:
        ok = isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")
        if not ok or not isinstance(m.get("content"), str):
            raise LoraEqError(f"history message {m!r}: needs a role (user/assistant/system) and text content")
        messages.append({"role": m["role"], "content": m["content"]})
    return messages + [{"role": "user", "content": message}]


def fit_prompt(tokenizer, messages: list[dict], limit: int | None, reserve: int) -> tuple[list[int], int]:
    """A conversation's prompt ids, its oldest turns dropped until it fits `limit` tokens with
    `reserve` new ones (conversation.trim_to_context), and how many turns were dropped."""
    from adapters.base.tokenize import encode_prompt

    if limit is None:
        return encode_prompt(tokenizer, messages), 0
    encoded: dict[int, list[int]] = {}

    def length(kept: list[dict]) -> int:
        encoded[len(kept)] = encode_prompt(tokenizer, kept)
        return len(encoded[len(kept)])

    kept, dropped = trim_to_context(messages, length, limit, reserve)
    return encoded[len(kept)], dropped


def _history_for(history: list[dict] | dict[str, list[dict]] | None, label: str) -> list[dict] | None:
    if isinstance(history, dict):
        return history.get(label)
    return history


class AnswerStream:
    """Deltas of every column as they come; `answers` once the stream is exhausted."""

    def __init__(
        self, engine: CompareEngine, columns: list[Column], conversations: list[list[dict]], sampling: Sampling
    ):
        self.engine = engine
        self.columns = columns
        self.conversations = conversations
        self.sampling = sampling
        self.seeds = [column_seed(c, sampling) for c in columns]
        self.dropped: list[int] = [0] * len(columns)  # oldest turns left out to fit the context, per row
        self._answers: list[Answer] | None = None

    @property
    def answers(self) -> list[Answer]:
        if self._answers is None:
            raise LoraEqError("the answers are ready once the stream has been read to its end")
        return self._answers

    def __iter__(self) -> Iterator[Delta]:
        engine = self.engine
        with engine._lock:
            try:
                router = ROUTERS[engine.backend](engine.model, *engine._rows(self.columns))
                try:
                    yield from self._run(router)
                finally:
                    router.close()
            finally:
                engine._reset_views()

    def _generators(self) -> list[torch.Generator | None]:
        if self.sampling.greedy:
            return [None] * len(self.columns)
        return [torch.Generator(device=self.engine.base.device).manual_seed(s) for s in self.seeds]

    def _run(self, router) -> Iterator[Delta]:
        engine = self.engine
        # Under the engine's lock: a fast tokenizer shared between threads can fail ("Already borrowed").
        limit, reserve = context_length(engine.model), self.sampling.max_new_tokens
        fitted = [fit_prompt(engine.tokenizer, m, limit, reserve) for m in self.conversations]
        prompts, self.dropped = [ids for ids, _ in fitted], [dropped for _, dropped in fitted]
        tails = [_TextTail(engine.tokenizer) for _ in self.columns]
        answers: list[Answer | None] = [None] * len(self.columns)
        started = time.perf_counter()
        steps = decode(
            router,
            prompts,
            self.sampling,
            stop_ids=engine.stop_ids,
            pad_id=engine.tokenizer.pad_token_id,
            generators=self._generators(),
            device=engine.base.device,
        )
        for step in steps:
            for row, token in step.tokens.items():
                reason = step.finished.get(row)
                text = tails[row].push(token) if reason != "stop" else ""
                if reason:
                    text += tails[row].finish()
                    answers[row] = self._answer(row, tails[row], time.perf_counter() - started, reason)
                if text or reason:
                    yield Delta(row, self.columns[row].label, text, done=reason is not None)
        self._answers = answers

    def _answer(self, row: int, tail: _TextTail, seconds: float, reason: str) -> Answer:
        column = self.columns[row]
        return Answer(
            label=column.label,
            variant=column.variant,
            text=tail.shown,
            token_ids=list(tail.ids),
            seconds=round(seconds, 4),
            finish_reason=reason,
            seed=self.seeds[row],
            live_eq=column.live_eq.to_json() if column.live_eq is not None else None,
            dropped_turns=self.dropped[row],
        )
