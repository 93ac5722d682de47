"""Search for the tuning set that works: trials of equalizer shapes and hyperparameters on the
user's own checks, a bad trial stopped early, the winner confirmed on prompts the search never saw.

A search belongs to a run (its data, split and base). Its study lives in an Optuna storage (a
journal file in `RUN/search/` unless given a URL, so several workers can share it). Each trial
draws a point of the `SearchSpace` (adapters/shape/search_space.py), trains it as a variant
(`train_variant`) into `RUN/search/trials/NNN/`, and is judged at rungs of its training by the
answers of the model being trained:

- the **checks** (`Item`): the run's held-out rows (does the answer state the reference's facts,
  `matching.match`, as the proof decides) and, when given, an eval set's cases with their
  deterministic checks (`checks.judge`). Checks that need embeddings (`similar`, `style`) are left
  out of a search and named in its notes. They are split in two by group (the paraphrases of one
  fact stay together): the search judges on one half, the confirmation on the other;
- the **score** is the share of checks passed. Many trials tie on a share of a few checks, so the
  value Optuna ranks by adds the mean probability of the reference answers' tokens, divided by
  (checks + 1): it orders trials with the same pass count and never outweighs one check;
- **rungs** at one epoch's steps times 3^k (successive halving, Optuna's `SuccessiveHalvingPruner`):
  a trial not in the best third of those that reached a rung stops there ("pruned").

The auto defaults (what `loraeq train` does with no flags, over the settings the user fixed) are
always trial 0, so the search never hands back less than the default on the checks it searched
with. The winner (best value) and the default are then answered again, by their saved adapters, on
the confirmation half: pass rates with Wilson intervals, the exact McNemar p-value of the pair, and
how much better the winner looked during the search than on confirmation.

The report adds what was learned about the settings: Optuna's parameter importances (fANOVA), each
cell's effect (the correlation, across finished trials, of the cell's strength with the score)
and the front of score against training seconds. Nothing here knows about Gradio.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adapters.cache import read_json, write_json_atomic
from adapters.errors import LoraEqError

from .matching import NO_DATA, Vocabulary, match, vocabulary

SEARCH_DIR = "search"
STUDY_FILE = "study.journal"
SETTINGS_FILE = "settings.json"
REPORT_FILE = "report.json"
PROGRESS_FILE = "progress.jsonl"
CANCEL_FILE = "cancel"
REDUCTION = 3  # successive halving: the best third of the trials at a rung go on
CONFIRM_SHARE = 0.5  # of the checks' groups, kept for the confirmation
MIN_SEARCH_CHECKS = 4  # fewer checks on either side cannot rank trials
EMBEDDED_CHECKS = ("similar", "style")  # need an encoder: not run during a search
OBJECTIVES = ("both", "match", "checks")
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
BUDGET_UNITS = {"s": 1, "m": 60, "h": 3600}
MAX_FAILURES = 3  # failed trials in a row that end a search


def _finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


# ---- the checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One thing a trial is judged on: a prompt and what its answer must do."""

    key: str  # "heldout ROW_ID" or "EVALSET case ID"
    group: str  # items of one group land on the same side of the split
    prompt: tuple  # chat messages ending with the user's turn
    reference: str | None
    checks: tuple = ()  # an eval set's checks (all must pass); () = state the reference's facts

    def to_json(self) -> dict:
        return {"key": self.key, "group": self.group, "prompt": [dict(m) for m in self.prompt],
                "reference": self.reference, "checks": [c.to_json() for c in self.checks]}

    @classmethod
    def from_json(cls, data: dict) -> Item:
        from .checks import parse_check

        checks = tuple(parse_check({"type": c["type"], "value": c["value"], "threshold": c["threshold"]})
                       for c in data["checks"])
        return cls(data["key"], data["group"], tuple(data["prompt"]), data["reference"], checks)


def heldout_items(run_dir: Path) -> list[Item]:
    """The run's held-out rows as checks: the answer must state the reference's facts."""
    from adapters.train.runs import run_split

    items = []
    for e in run_split(run_dir, "heldout").examples:
        last = max((i for i, m in enumerate(e.messages) if m["role"] == "assistant"), default=None)
        if last is None:
            continue
        group = str(e.meta.get("fact_id", e.messages[last]["content"]))
        items.append(Item(f"heldout {e.id}", f"heldout {group}", tuple(e.messages[:last]), e.messages[last]["content"]))
    return items


def evalset_items(path: str | Path, run_dir: Path) -> tuple[list[Item], list[str]]:
    """An eval set's cases with deterministic checks, and notes on what a search leaves out."""
    from .evalset import load_evalset

    evalset = load_evalset(path, run_dir)
    items, notes = [], []
    for case in evalset.cases:
        kept = tuple(c for c in case.checks if c.type not in EMBEDDED_CHECKS and not c.judged)
        left = sorted({c.type for c in case.checks} - {c.type for c in kept})
        if left:
            why = "a judged check is counted only where its judge agrees with your decisions, which a search " \
                "cannot ask" if any(c.judged for c in case.checks) else "it needs the encoder"
            notes.append(f"{evalset.name} {case.id}: its {', '.join(left)} check is not run during a search ({why})")
        if not kept:
            continue
        messages = ([{"role": "system", "content": case.system}] if case.system else []) + [dict(m) for m in case.messages]
        items.append(Item(f"{evalset.name} {case.id}", f"{evalset.name} {case.id}", tuple(messages), case.reference, kept))
    if evalset.rejected:
        notes.append(f"{evalset.name}: {len(evalset.rejected)} rows rejected (first: {evalset.rejected[0]['row']}: "
                     f"{evalset.rejected[0]['reason']})")
    return items, notes


def split_items(items: list[Item], seed: int) -> tuple[list[Item], list[Item]]:
    """(search, confirmation): the items' groups shuffled with `seed`, CONFIRM_SHARE of them kept
    for the confirmation; eval-set items and held-out rows are split each on their own."""
    search, confirm = [], []
    for kind in (True, False):
        groups = sorted({i.group for i in items if bool(i.checks) == kind})
        random.Random(f"{seed}:search-split").shuffle(groups)
        held = set(groups[: round(len(groups) * CONFIRM_SHARE)])
        for i in items:
            if bool(i.checks) == kind:
                (confirm if i.group in held else search).append(i)
    return search, confirm


def passes(item: Item, answer: str, vocab: Vocabulary = NO_DATA) -> bool:
    """Whether `answer` passes the item: every check, or (a held-out row) the reference's facts."""
    from .checks import Evidence, judge

    if item.checks:
        evidence = Evidence(reference=item.reference)
        return all(judge(c, answer, evidence).passed for c in item.checks)
    return match(answer, item.reference or "", item.prompt[-1]["content"], None, vocab).matched


# ---- scoring a model ---------------------------------------------------------------------------


@dataclass
class Score:
    passed: list[bool]
    likelihood: float  # mean probability of the reference answers' tokens

    @property
    def rate(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0

    @property
    def value(self) -> float:
        """What trials are ranked by: the pass rate, ties ordered by the likelihood."""
        return self.rate + self.likelihood / (len(self.passed) + 1)


class Judge:
    """Answers a list of items with a model and scores them (greedy, as the proof answers)."""

    def __init__(self, base, items: list[Item], vocab: Vocabulary):
        from adapters.base.tokenize import encode_chat, encode_prompt
        from adapters.infer.engine import stop_token_ids

        from .answers import answer_budget

        self.base, self.items, self.vocab = base, items, vocab
        tok = base.tokenizer
        self.ids = [encode_prompt(tok, list(i.prompt)) for i in items]
        references = [i.reference for i in items if i.reference]
        self.max_new_tokens = answer_budget(tok, references) if references else 48
        self.stop_ids = stop_token_ids(tok, base.model)
        self.teacher = [encode_chat(tok, [*i.prompt, {"role": "assistant", "content": i.reference}], 512)
                        for i in items if i.reference]

    def answers(self, adapters, name: str, router: str | None = None) -> list[str]:
        from .answers import GENERATE_BATCH, greedy_ids

        return greedy_ids(adapters, self.ids, [name] * len(self.ids), self.stop_ids, self.max_new_tokens,
                          GENERATE_BATCH, router)

    def passed(self, answers: list[str]) -> list[bool]:
        return [passes(i, a, self.vocab) for i, a in zip(self.items, answers)]

    def likelihood(self, model) -> float:
        """Mean probability the model gives each reference token after its prompt (teacher-forced)."""
        import torch

        probs = []
        for start in range(0, len(self.teacher), 8):
            batch = self.teacher[start : start + 8]
            width = max(len(e.input_ids) for e in batch)
            ids = torch.full((len(batch), width), self.base.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for r, e in enumerate(batch):
                ids[r, : len(e.input_ids)] = torch.tensor(e.input_ids)
                mask[r, : len(e.input_ids)] = 1
                labels[r, : len(e.labels)] = torch.tensor(e.labels)
            logits = model(input_ids=ids.to(self.base.device), attention_mask=mask.to(self.base.device)).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).cpu()
            target = labels[:, 1:]
            keep = target != -100
            picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1).exp()
            probs += [float(picked[r][keep[r]].mean()) for r in range(len(batch)) if keep[r].any()]
        return float(np.mean(probs)) if probs else 0.0

    def score_live(self, model) -> Score:
        """The score of a model being trained (a PeftModel with its adapter "default")."""
        from .adapter_set import AdapterSet

        live = AdapterSet(model=model, tokenizer=self.base.tokenizer, device=self.base.device,
                          ids={"trial": "default"})
        return Score(self.passed(self.answers(live, "default", router="active")), self.likelihood(model))


# ---- the settings of a search -------------------------------------------------------------------


def parse_budget(text: str | None) -> float | None:
    """Seconds of a budget written `90s`, `20m`, `1.5h` or a plain number of minutes."""
    if text is None or str(text).strip() == "":
        return None
    t = str(text).strip().lower()
    unit = BUDGET_UNITS.get(t[-1])
    number = t[:-1] if unit else t
    try:
        value = float(number) * (unit or 60)
    except ValueError:
        raise LoraEqError(f"--budget {text!r}: write minutes (20m), seconds (90s) or hours (1h)") from None
    if not (math.isfinite(value) and value > 0):
        raise LoraEqError(f"--budget {text!r}: must be more than 0")
    return value


@dataclass
class SearchSettings:
    """What a search is asked: kept in RUN/search/settings.json so a resumed search and every
    joining worker search the same space on the same checks."""

    run_dir: str
    space: dict  # SearchSpace.to_json()
    objective: str = "both"
    budget_seconds: float | None = None
    trials: int | None = None
    seed: int = 0
    evalset: str | None = None
    study: str = "search"
    storage: str | None = None  # None: the journal file in RUN/search/
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise LoraEqError(f"--objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if self.budget_seconds is None and self.trials is None:
            raise LoraEqError("give a budget: --budget 20m or --trials N")
        if self.trials is not None and (isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1):
            raise LoraEqError(f"--trials {self.trials!r}: must be a whole number of at least 1")

    def to_json(self) -> dict:
        return dict(self.__dict__)


def search_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / SEARCH_DIR


def storage_for(settings: SearchSettings):
    """The Optuna storage: the URL given (any Optuna accepts), or the run's journal file."""
    import optuna

    if settings.storage:
        if "://" not in settings.storage:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(settings.storage))
        try:
            return optuna.storages.get_storage(settings.storage)
        except Exception as e:  # a URL Optuna cannot open: one line naming it
            raise LoraEqError(f"--storage {settings.storage!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    path = search_dir(settings.run_dir) / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def _log(run_dir: str | Path, record: dict) -> None:
    path = search_dir(run_dir) / PROGRESS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({**record, "time": time.time()}) + "\n")


def read_progress(run_dir: str | Path) -> list[dict]:
    from adapters.train.runfolder import read_log

    return read_log(search_dir(run_dir) / PROGRESS_FILE)


def request_cancel(run_dir: str | Path) -> None:
    """Ask every worker of the search to stop its trial at the next step (the trial is failed)."""
    search_dir(run_dir).mkdir(parents=True, exist_ok=True)
    (search_dir(run_dir) / CANCEL_FILE).touch()


# ---- a trial ---------------------------------------------------------------------------------


def rung_steps(per_epoch: int, planned: int) -> list[int]:
    """The steps a trial is judged at before its last: one epoch's steps times 3^k."""
    first, steps = max(2, per_epoch), []
    while first * REDUCTION ** len(steps) < planned:
        steps.append(first * REDUCTION ** len(steps))
    return steps


class TrialRungs:
    """The rungs of one trial (`train_variant(rungs=...)`): scores the model being trained, reports
    to Optuna and stops the training when the pruner says so."""

    def __init__(self, trial, judge: Judge, steps: list[int], on_rung):
        self.trial, self.judge, self.steps, self.on_rung = trial, judge, set(steps), on_rung
        self.reports: list[dict] = []
        self.final: Score | None = None
        self.pruned_at: int | None = None

    def due(self, step: int) -> bool:
        return step in self.steps

    def __call__(self, step: int, max_steps: int, model) -> bool:
        score = self.judge.score_live(model)
        self.reports.append({"step": step, "score": round(score.rate, 4), "value": round(score.value, 6)})
        self.on_rung(step, max_steps, score)
        if step >= max_steps:
            self.final = score
            return False
        self.trial.report(score.value, step)
        if self.trial.should_prune():
            self.pruned_at, self.final = step, score
            return True
        return False


@dataclass
class Context:
    """What every trial of one worker shares: the base, the data, the checks, the space."""

    settings: SearchSettings
    base: object
    space: object  # SearchSpace
    conversations: list
    judge: Judge
    tmap: object
    bands: list
    default_point: dict


def default_point(space, rows: int, batch_size: int) -> dict:
    """The settings `loraeq train` gives with no flags (the uniform equalizer, the auto schedule),
    with what the user fixed: the search's first trial."""
    from adapters.shape.search_space import preset_point
    from adapters.shape.variants import Hyper, auto_schedule

    auto, _ = auto_schedule(Hyper(batch_size=batch_size), rows)
    point = {**preset_point("uniform"), "rank": auto.rank, "learning_rate": auto.learning_rate,
             "epochs": auto.epochs, "alpha": auto.alpha, "dropout": auto.dropout}
    for name, r in space.ranges.items():
        if r.fixed:
            point[name] = int(r.low) if r.whole else r.low
    return point


def trial_folder(run_dir: str | Path, number: int) -> Path:
    return search_dir(run_dir) / "trials" / f"{number:03d}"


def _objective(ctx: Context):
    import optuna

    from adapters.shape.search_space import variant_for
    from adapters.train.plan import check_variant
    from adapters.train.training import CancelledError, planned_steps, train_variant, write_metrics

    run_dir = Path(ctx.settings.run_dir)

    def objective(trial) -> float:
        started = time.time()
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        point = ctx.space.sample(trial)
        variant = variant_for(f"trial-{trial.number}", point, ctx.tmap, ctx.bands)
        variant, schedule = variant.scheduled(len(ctx.conversations))
        check_variant(ctx.base, variant, len(ctx.conversations))
        folder = trial_folder(run_dir, trial.number)
        per_epoch = math.ceil(len(ctx.conversations) / (variant.hyper.batch_size * variant.hyper.grad_accum))
        planned = planned_steps(variant.hyper, len(ctx.conversations))
        _log(run_dir, {"event": "trial_start", "trial": trial.number, "params": point, "planned_steps": planned})

        def on_rung(step, max_steps, score):
            _log(run_dir, {"event": "rung", "trial": trial.number, "step": step, "of": max_steps,
                           "score": round(score.rate, 4)})

        rungs = TrialRungs(trial, ctx.judge, rung_steps(per_epoch, planned), on_rung)
        record = {"number": trial.number, "params": point, "variant": variant.to_json(), "schedule": schedule,
                  "planned_steps": planned, "default": bool(trial.user_attrs.get("default"))}
        try:
            result = train_variant(ctx.base, variant, ctx.conversations, folder, bands=len(ctx.bands),
                                   cancel_path=search_dir(run_dir) / CANCEL_FILE, rungs=rungs)
        except CancelledError:
            write_json_atomic(folder / "trial.json", {**record, "state": "failed", "error": "cancelled"})
            _log(run_dir, {"event": "trial_end", "trial": trial.number, "state": "failed", "error": "cancelled"})
            raise
        seconds = round(time.time() - started, 1)
        score = rungs.final
        state = "pruned" if rungs.pruned_at is not None else "complete"
        record.update(state=state, steps=result.steps, seconds=seconds, rungs=rungs.reports,
                      score=round(score.rate, 4), value=score.value, passed=score.passed,
                      trainable_params=result.trainable_params, final_loss=result.final_loss)
        write_json_atomic(folder / "trial.json", record)
        if state == "complete":
            write_metrics(folder, result)
        for k in ("steps", "seconds", "score", "trainable_params"):
            trial.set_user_attr(k, record[k])
        _log(run_dir, {"event": "trial_end", "trial": trial.number, "state": state, "score": record["score"],
                       "steps": result.steps, "seconds": seconds})
        if state == "pruned":
            raise optuna.TrialPruned(f"stopped at step {rungs.pruned_at}: not in the best third at that rung")
        return score.value

    return objective


# ---- the study -------------------------------------------------------------------------------


def prepare(settings: SearchSettings, limits=None) -> tuple[list[Item], list[Item], list[str]]:
    """The checks of a search split into (search, confirmation), written once to settings.json;
    a search resumed or joined reads them back. Refuses what cannot be searched, in one line."""
    from adapters.shape.search_space import SearchSpace

    SearchSpace.parse(settings.space, limits)  # the space is checked before anything runs
    folder = search_dir(settings.run_dir)
    saved = read_json(folder / SETTINGS_FILE)
    if saved:
        return ([Item.from_json(i) for i in saved["search_items"]], [Item.from_json(i) for i in saved["confirm_items"]],
                saved["settings"].get("notes", []))
    run_dir = Path(settings.run_dir)
    notes: list[str] = []
    items = heldout_items(run_dir) if settings.objective in ("both", "match") else []
    if settings.evalset and settings.objective in ("both", "checks"):
        extra, notes = evalset_items(settings.evalset, run_dir)
        items += extra
    elif settings.objective == "checks":
        raise LoraEqError("--objective checks needs an eval set: give --evalset FILE")
    search, confirm = split_items(items, settings.seed)
    if min(len(search), len(confirm)) < MIN_SEARCH_CHECKS:
        raise LoraEqError(f"{len(items)} checks ({len(search)} to search with, {len(confirm)} to confirm on): a search "
                          f"needs at least {MIN_SEARCH_CHECKS} on each side: give a bigger held-out split or an eval set")
    settings.notes = notes
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / SETTINGS_FILE, {"settings": settings.to_json(),
                                               "search_items": [i.to_json() for i in search],
                                               "confirm_items": [i.to_json() for i in confirm]})
    return search, confirm, notes


def read_settings(run_dir: str | Path) -> SearchSettings:
    saved = read_json(search_dir(run_dir) / SETTINGS_FILE)
    if not saved:
        raise LoraEqError(f"{run_dir}: no search was started here ({SEARCH_DIR}/{SETTINGS_FILE} is missing)")
    return SearchSettings(**saved["settings"])


def open_study(settings: SearchSettings, create: bool = True, first_rung: int = 1):
    """The study (created when new unless `create` is False: a joining worker), its sampler
    seeded, its pruner halving at `first_rung` steps times 3^k (`rung_steps`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_for(settings)
    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=5, multivariate=True)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=first_rung, reduction_factor=REDUCTION)
    if not create:
        try:
            return optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise LoraEqError(f"study {settings.study!r} is not in {settings.storage or 'the run'}") from None
    return optuna.create_study(study_name=settings.study, storage=storage, sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


def _abandoned(study) -> None:
    """Trials left running by a worker of this machine that is gone (killed): failed, and their
    settings queued again, so nothing finished runs twice and nothing started is lost."""
    from optuna.trial import TrialState

    from adapters.train.runfolder import process_alive

    here = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or {}
        if worker.get("host") != here or process_alive(worker.get("pid")):
            continue
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"default": bool(t.user_attrs.get("default")), "retry_of": t.number})


def _finished(study) -> list:
    return study.get_trials(deepcopy=False, states=_finished_states())


def _stop_on_failures(study, trial) -> None:
    """Trials that fail one after another (a setting the base refuses, a broken file) end the search."""
    from optuna.trial import TrialState

    recent = study.get_trials(deepcopy=False)[-MAX_FAILURES:]
    if len(recent) == MAX_FAILURES and all(t.state == TrialState.FAIL for t in recent):
        _log(study.user_attrs.get("run_dir", "."), {"event": "stopped", "reason": f"{MAX_FAILURES} trials failed in a row"})
        study.stop()


def run_search(settings: SearchSettings, base, *, join: bool = False, limits=None, on_trial=None) -> dict:
    """Run (or resume, or join) a search until its budget is spent; then, unless joining,
    confirm the winner and write the report. Returns the report (see `report`)."""
    import optuna

    from adapters.base.analysis import tuning_map
    from adapters.base.bands import layer_bands
    from adapters.shape.search_space import SearchSpace
    from adapters.shape.variants import Hyper
    from adapters.train.runfolder import RunFolder
    from adapters.train.runs import run_split

    from .proof import data_vocabulary

    run = RunFolder.open(settings.run_dir)
    search_items, _confirm, notes = prepare(settings, limits)
    space = SearchSpace.parse(settings.space, limits)
    train = run_split(run.path, "train")
    conversations = [e.messages for e in train.examples]
    tmap = tuning_map(base.model)
    bands = layer_bands(tmap.layers, run.bands)
    vocab = data_vocabulary([], train) | item_vocabulary(search_items + _confirm)
    ctx = Context(settings, base, space, conversations, Judge(base, search_items, vocab), tmap, bands,
                  default_point(space, len(conversations), Hyper().batch_size))
    per_epoch = math.ceil(len(conversations) / Hyper().batch_size)  # the batch size a search does not vary
    study = open_study(settings, create=not join, first_rung=max(2, per_epoch))
    if not study.trials:
        study.set_user_attr("run_dir", str(run.path))
        study.enqueue_trial(ctx.default_point, user_attrs={"default": True}, skip_if_exists=True)
    _abandoned(study)
    if not join:
        (search_dir(run.path) / CANCEL_FILE).unlink(missing_ok=True)
    started = time.time()
    spent_before = sum(t.user_attrs.get("seconds", 0) for t in _finished(study))
    callbacks = [_stop_on_failures]
    if settings.trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(settings.trials, states=_finished_states()))
    if on_trial is not None:
        callbacks.append(lambda study, trial: on_trial(trial))
    timeout = None
    if settings.budget_seconds is not None:
        timeout = settings.budget_seconds - spent_before
    if (timeout is None or timeout > 0) and (settings.trials is None or len(_finished(study)) < settings.trials):
        _log(run.path, {"event": "start", "worker": os.getpid(), "budget_s": timeout, "trials": settings.trials})
        try:
            warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range", category=UserWarning)
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            study.optimize(_objective(ctx), timeout=timeout, callbacks=callbacks, catch=(LoraEqError,),
                           gc_after_trial=True)
        except Exception as e:
            from adapters.train.training import CancelledError

            if not isinstance(e, CancelledError):
                raise
            _log(run.path, {"event": "cancelled"})
    _log(run.path, {"event": "searched", "seconds": round(time.time() - started, 1)})
    if join:
        return report(settings, study, None, notes)
    confirmation = confirm(settings, base, study, _confirm, vocab)
    out = report(settings, study, confirmation, notes)
    write_json_atomic(search_dir(run.path) / REPORT_FILE, out)
    _log(run.path, {"event": "done"})
    return out


def item_vocabulary(items: list[Item]) -> Vocabulary:
    return vocabulary([m["content"] for i in items for m in i.prompt] + [i.reference or "" for i in items])


# ---- the confirmation ------------------------------------------------------------------------


def wilson(passed: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson interval of a pass rate."""
    if total == 0:
        return 0.0, 1.0
    p = passed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def best_trial(study):
    """The finished trial with the best value (the earliest of equals), or None."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def default_trial(study):
    from optuna.trial import TrialState

    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("default")), None)


def confirm(settings: SearchSettings, base, study, items: list[Item], vocab) -> dict | None:
    """The winner, the default and the base answered on the confirmation checks, by their saved
    adapters: pass rates, Wilson intervals, the exact McNemar p of winner against default."""
    from adapters.infer.adapter_rows import BASE_ROW

    from .adapter_set import load_adapter_set, release
    from .stats import mcnemar_exact_p

    winner, default = best_trial(study), default_trial(study)
    if winner is None:
        return None
    _log(settings.run_dir, {"event": "confirming", "winner": winner.number})
    folders = {"winner": trial_folder(settings.run_dir, winner.number)}
    if default is not None and default.number != winner.number:
        folders["default"] = trial_folder(settings.run_dir, default.number)
    judge = Judge(base, items, vocab)
    adapters = load_adapter_set(base, folders)
    try:
        passed = {name: judge.passed(judge.answers(adapters, adapters.ids[name])) for name in folders}
        passed["base"] = judge.passed(judge.answers(adapters, BASE_ROW))
    finally:
        release(adapters)
    passed.setdefault("default", passed["winner"])
    n = len(items)
    out = {"checks": n, "winner_trial": winner.number, "default_trial": default.number if default else None}
    for name, outcome in passed.items():
        out[name] = {"score": round(sum(outcome) / n, 4), "ci": list(wilson(sum(outcome), n)), "passed": outcome}
    out["p_value"] = round(mcnemar_exact_p(passed["default"], passed["winner"]), 6)
    return out


# ---- the report ------------------------------------------------------------------------------


def _state(trial) -> str:
    return STATES.get(trial.state.name, trial.state.name.lower())


def trial_rows(study, run_dir) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        record = read_json(trial_folder(run_dir, t.number) / "trial.json")
        rows.append({"number": t.number, "params": record.get("params", t.params), "state": _state(t),
                     "score": record.get("score", t.user_attrs.get("score")), "value": t.value,
                     "seconds": record.get("seconds", t.user_attrs.get("seconds")),
                     "steps": record.get("steps"), "planned_steps": record.get("planned_steps"),
                     "rungs": record.get("rungs", []), "default": bool(t.user_attrs.get("default")),
                     "grid": (record.get("variant") or {}).get("equalizer")})
    return rows


def compared(study) -> tuple[list, str]:
    """The trials whose scores can be compared, with what the score is: their final value when at
    least 3 finished with different values, else their value at the first rung (one epoch), which
    every trial reached, pruned or not."""
    from optuna.trial import TrialState

    done = [(t, t.value) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None]
    if len(done) >= 3 and len({v for _, v in done}) > 1:
        return done, "final"
    reached = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
               if t.intermediate_values]
    if not reached:
        return [], "first rung"
    first = min(min(t.intermediate_values) for t in reached)
    return [(t, t.intermediate_values[first]) for t in reached if first in t.intermediate_values], "first rung"


def importances(study) -> dict:
    """Optuna's fANOVA importance of each searched setting, over the scores `compared` gives
    ({} with fewer than 3 trials or when every score is the same)."""
    import optuna

    pairs, _ = compared(study)
    if len(pairs) < 3 or len({v for _, v in pairs}) < 2:
        return {}
    names = sorted(set.intersection(*(set(t.distributions) for t, _ in pairs)))
    if not names:
        return {}
    scored = optuna.create_study(direction="maximize")  # in memory: the compared scores as values
    for t, value in pairs:
        try:
            scored.add_trial(optuna.trial.create_trial(params={n: t.params[n] for n in names}, value=value,
                                                       distributions={n: t.distributions[n] for n in names}))
        except ValueError:  # the default trial outside a narrowed range: not a point of this space
            continue
    if len(scored.trials) < 3:
        return {}
    try:
        found = optuna.importance.get_param_importances(
            scored, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):  # e.g. one distribution only: nothing to attribute
        return {}
    return {k: round(float(v), 4) for k, v in found.items()}


def cell_effects(rows: list[dict], scores: dict[int, float]) -> dict | None:
    """Each equalizer cell's correlation, across the compared trials (`scores`: trial -> score),
    between its strength and the score: where adapting paid off for this data (None with fewer
    than 3 trials or no spread)."""
    done = [r for r in rows if r["number"] in scores and r["grid"] and isinstance(r["grid"], dict)]
    if len(done) < 3:
        return None
    first = done[0]["grid"]
    done = [r for r in done if r["grid"]["roles"] == first["roles"] and r["grid"]["bands"] == first["bands"]]
    values = np.asarray([scores[r["number"]] for r in done], dtype=float)
    if len(done) < 3 or values.std() == 0:
        return None
    stack = np.stack([np.asarray(r["grid"]["strengths"], dtype=float) for r in done])
    effect = np.zeros(stack.shape[1:])
    for idx in np.ndindex(*stack.shape[1:]):
        x = stack[(slice(None), *idx)]
        effect[idx] = 0.0 if x.std() == 0 else float(np.corrcoef(x, values)[0, 1])
    return {"roles": first["roles"], "bands": first["bands"], "cells": np.round(effect, 3).tolist()}


def pareto(rows: list[dict]) -> list[int]:
    """Trials no other finished trial beats on both score (higher) and training seconds (fewer)."""
    done = [r for r in rows if r["state"] == "complete" and r["score"] is not None and r["seconds"] is not None]
    return [r["number"] for r in done
            if not any(o["score"] >= r["score"] and o["seconds"] <= r["seconds"]
                       and (o["score"] > r["score"] or o["seconds"] < r["seconds"]) for o in done)]


def report(settings: SearchSettings, study, confirmation: dict | None, notes: list[str]) -> dict:
    rows = trial_rows(study, settings.run_dir)
    winner = next((r for r in rows if confirmation and r["number"] == confirmation["winner_trial"]), None)
    best = None
    if winner is not None:
        c = confirmation
        best = {"number": winner["number"], "params": winner["params"], "search_score": winner["score"],
                "confirmed_score": c["winner"]["score"], "confirmed_ci": c["winner"]["ci"],
                "default_confirmed_score": c["default"]["score"], "default_confirmed_ci": c["default"]["ci"],
                "base_confirmed_score": c["base"]["score"], "p_value": c["p_value"],
                "optimism": round(winner["score"] - c["winner"]["score"], 4), "confirm_checks": c["checks"],
                "default_trial": c["default_trial"]}
    states = [r["state"] for r in rows]
    pairs, compared_on = compared(study)
    steps_run = sum(r["steps"] or 0 for r in rows)
    return {"run_dir": str(settings.run_dir), "study": settings.study, "objective": settings.objective,
            "space": settings.space, "trials": rows, "best": best, "importances": importances(study),
            "cell_effects": cell_effects(rows, {t.number: v for t, v in pairs}), "compared_on": compared_on,
            "pareto": pareto(rows),
            "counts": {s: states.count(s) for s in sorted(set(states))}, "optimizer_steps": steps_run,
            "notes": notes}


def make_variant(run_dir: str | Path, number: int | str, base, name: str | None = None) -> str:
    """A finished trial (a number, or "best": the winner) becomes a variant of the run, trained
    already: the chat, eval sets, proof and export take it as any other. Returns its name."""
    from adapters.shape.variants import Variant
    from adapters.train.runs import adopt_trained

    if str(number) == "best":
        found = read_json(search_dir(run_dir) / REPORT_FILE).get("best")
        if not found:
            raise LoraEqError(f"{run_dir}: this search has no confirmed winner yet")
        number = found["number"]
    try:
        number = int(number)
    except (TypeError, ValueError):
        raise LoraEqError(f"trial {number!r}: give a trial number or best") from None
    folder = trial_folder(run_dir, number)
    record = read_json(folder / "trial.json")
    if record.get("state") != "complete":
        state = record.get("state", "not in this search")
        raise LoraEqError(f"trial {number}: {state}; only a trial trained to its end can become a variant")
    v = Variant.from_json(record["variant"])
    variant = Variant(name or f"search-{number}", v.equalizer, v.hyper, v.mix)
    return adopt_trained(Path(run_dir), variant, folder, base, record.get("schedule"),
                         {"search_trial": number, "search_score": record.get("score")})
