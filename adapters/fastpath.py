"""The fast paths: where LoRA EQ computes what a library computes, its own faster way, and the one
contract they all keep.

Six places give a library's own result faster or in less memory (each module says how):

- `packed4bit`: bitsandbytes' CPU NF4 kernel called without the layer's Python, while decoding;
- `lora_train`: LoRA's training step on a PEFT layer as one autograd function;
- `label_loss`: the training loss computed at the labelled positions only;
- `packed_attention`: a decoded token's grouped query heads packed per key/value head;
- `fused_router`: every row's LoRA update in two batched matmuls (adapter_rows.py);
- `few_rows_linear`: a float32 linear layer over a decode step's few rows as weight x rows.

The contract:

- Each says whether it applies and, when not, why, in one short reason: `off_reason` here (the
  switch, the library releases), then its module's check of what is in front of it
  (`packed4bit.applies`, `lora_train.applies`, `label_loss.label_only_reason`, `attention.applies`,
  `adapter_rows.fusable`, `few_rows.route`).
- Each reads internals of some libraries (`FastPath.reads`) and runs only on the releases of them
  it was tested on (`TESTED`); on any other release the library's own path runs and one line is
  logged (once per fast path and process).
- What one changes on a model goes through a `Patch`, which puts back exactly what was there (an
  instance's `forward`, or anything else with its undo).
- None raises where the library's own path would have worked: a missing kernel symbol, a library's
  throw-on-call stub, an attribute a release renamed make it step aside, not fail.
- `plain_lora_reason` is the one test of "is this plain LoRA" (lora_train and the fused router).

The switch is `LORAEQ_FAST_PATHS`, read at each decision, for training and answering alike:

    unset, `on`, `all`           every fast path (the default)
    `off`, `none`                none: every library's own path
    `lora_train,label_loss`      only these (a list that starts with a name)
    `-packed4bit,-lora_train`    all but these
    `off,packed4bit`             items apply left to right: none, then packed4bit

A name it does not know is an error that lists the known ones (`NAMES`). Attention is chosen when
a model is loaded: switch `packed_attention` before loading.

What ran: inside `recording()`, each fast path notes that it ran or why it did not; `loraeq train`,
`compare`, `evalset` and `eval` print that as `fast_paths` in their JSON. This module computes
nothing and knows nothing of what a fast path computes.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import LoraEqError

log = logging.getLogger("loraeq.fastpath")

ENV = "LORAEQ_FAST_PATHS"
RAN = "ran"
# The releases (major.minor) the fast paths were tested on: bitsandbytes' CPU op calls its kernel as
# packed4bit does; PEFT's LoRA layer computes and names its parts as lora_train and the fused router
# read them; transformers' Trainer loss and attention registry work as label_loss and attention use
# them. A new release goes here once tests/test_fastpath.py and the fast paths' own tests pass on it.
TESTED = {"bitsandbytes": ("0.50",), "peft": ("0.21",), "transformers": ("5.24", "5.25")}


@dataclass(frozen=True)
class FastPath:
    name: str
    module: str  # where it lives
    reads: tuple[str, ...]  # the libraries whose internals it relies on (their releases: TESTED)
    does: str


PATHS = (
    FastPath("packed4bit", "infer/packed4bit.py", ("bitsandbytes",), "bitsandbytes' CPU NF4 kernel called directly"),
    FastPath("lora_train", "train/lora_train.py", ("peft",), "LoRA's training step as one autograd function"),
    FastPath("label_loss", "train/label_loss.py", ("transformers",), "the training loss at labelled positions only"),
    FastPath("packed_attention", "base/attention.py", ("transformers",), "one decoded token's query heads packed"),
    FastPath("fused_router", "infer/adapter_rows.py", ("peft",), "every row's LoRA update in two batched matmuls"),
    FastPath("few_rows_linear", "infer/few_rows.py", (), "a float32 linear layer over a few rows as weight x rows"),
)
NAMES = tuple(p.name for p in PATHS)
PACKED4BIT, LORA_TRAIN, LABEL_LOSS, PACKED_ATTENTION, FUSED_ROUTER, FEW_ROWS_LINEAR = NAMES
_ALL, _NONE = ("on", "all"), ("off", "none")


def switched_on(value: str | None = None) -> frozenset[str]:
    """The fast paths `LORAEQ_FAST_PATHS` (or `value`) leaves on; see the module doc for the syntax."""
    text = os.environ.get(ENV, "") if value is None else value
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    on = set() if items and items[0].lstrip("+") in NAMES else set(NAMES)
    for item in items:
        name = item.lstrip("+-")
        if item in _ALL or item in _NONE:
            on = set(NAMES) if item in _ALL else set()
        elif name not in NAMES:
            raise LoraEqError(f"{ENV}={text!r}: {item!r} is not a fast path; use on, off or names from "
                              f"{', '.join(NAMES)} (each may start with - to leave it out)")
        elif item.startswith("-"):
            on.discard(name)
        else:
            on.add(name)
    return frozenset(on)


def _series(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _installed(library: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(library)
    except PackageNotFoundError:
        return None


@functools.cache
def release_reason(name: str) -> str | None:
    """Why fast path `name` does not run on the installed libraries (a release it was not tested
    on, logged once), or None."""
    for library in _path(name).reads:
        installed = _installed(library)
        if installed is None:
            return f"{library} is not installed"
        if _series(installed) not in TESTED[library]:
            reason = f"untested {library} {installed} (tested: {', '.join(TESTED[library])})"
            log.warning("fast path %s: %s; %s's own path runs instead", name, reason, library)
            return reason
    return None


def off_reason(name: str) -> str | None:
    """Why fast path `name` does not run at all here (switched off, or an untested library
    release), or None; its module's `applies` adds what the model in front of it decides."""
    _path(name)
    if name not in switched_on():
        return f"switched off ({ENV}={os.environ.get(ENV, '')})"
    return release_reason(name)


def _path(name: str) -> FastPath:
    for path in PATHS:
        if path.name == name:
            return path
    raise ValueError(f"no fast path named {name!r} (known: {', '.join(NAMES)})")


# ---- what ran ---------------------------------------------------------------------------------

_record: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("loraeq_fast_paths", default=None)


def note(name: str, reason: str | None) -> None:
    """Within `recording()`: fast path `name` ran (reason None) or did not, and why. Having run
    once wins over any reason; otherwise the first reason stays."""
    record = _record.get()
    if record is None or record.get(name) == RAN:
        return
    if reason is None:
        record[name] = RAN
    else:
        record.setdefault(name, reason)


@contextmanager
def recording() -> Iterator[dict[str, str]]:
    """Collect what the fast paths did in this block (this thread's context): name -> "ran" or why not."""
    record: dict[str, str] = {}
    token = _record.set(record)
    try:
        yield record
    finally:
        _record.reset(token)


def report(record: dict[str, str]) -> dict[str, str]:
    """Every fast path: "ran", the reason it did not, or that nothing here asked for it."""
    return {name: record.get(name) or off_reason(name) or "not used by this command" for name in NAMES}


# ---- installing and removing --------------------------------------------------------------------

_ABSENT = object()


class Patch:
    """What one fast path changed on a model, each change with its undo. `restore` (or leaving a
    `with` block) undoes them, last first: a replaced `forward` comes back exactly as it was (the
    class's own, or an instance's own, such as accelerate's hooks)."""

    def __init__(self, name: str):
        self.name = name
        self.forwards = 0  # instance forwards replaced
        self._undo: list[Callable[[], None]] = []

    def replace_forward(self, module, forward: Callable) -> None:
        previous = module.__dict__.get("forward", _ABSENT)
        module.forward = forward
        self._undo.append(functools.partial(_put_back, module, previous))
        self.forwards += 1

    def on_restore(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()
        self.forwards = 0

    def __enter__(self) -> Patch:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def _put_back(module, previous) -> None:
    if previous is _ABSENT:
        module.__dict__.pop("forward", None)
    else:
        module.forward = previous


# ---- is this plain LoRA ---------------------------------------------------------------------------

# PEFT's LoRA layers over a linear layer, by exact class: a subclass may compute differently.
_LINEAR_KINDS = {("peft.tuners.lora.layer", "Linear"), ("peft.tuners.lora.bnb", "Linear4bit"),
                 ("peft.tuners.lora.bnb", "Linear8bitLt")}
# What the LoRA fast paths read on such a layer; a release without one of them is not plain to them.
_READS = ("base_layer", "lora_A", "lora_B", "lora_dropout", "scaling", "merged", "disable_adapters",
          "active_adapters")


def plain_lora_reason(module, adapter: str | None = None) -> str | None:
    """Why PEFT layer `module` does not compute plain LoRA for `adapter` (default: its one active
    adapter), or None when it does: base(x) + B(A(dropout(x))) * scaling over a linear layer, with
    no LoRA bias, no DoRA or other variant, nothing merged into the base weights, adapters enabled.
    A named adapter is checked whatever is active (PEFT's `adapter_names` rows do the same)."""
    from torch import nn

    kind = type(module)
    if (kind.__module__, kind.__name__) not in _LINEAR_KINDS:
        return f"a LoRA layer of kind {kind.__name__}"
    missing = [name for name in _READS if not hasattr(module, name)]
    if missing:
        return f"PEFT's LoRA layer has no {missing[0]!r} here"
    if module.merged:
        return "adapters merged into the base weights"
    if module.disable_adapters:
        return "adapters disabled"
    if adapter is None:
        if len(module.active_adapters) != 1:
            return f"{len(module.active_adapters)} active adapters"
        adapter = module.active_adapters[0]
    if adapter not in module.lora_A:
        return f"no LoRA factors for {adapter!r} in this layer"
    variant = getattr(module, "lora_variant", {}).get(adapter)
    if variant is not None:
        return f"a LoRA variant ({type(variant).__name__})"
    if getattr(module, "use_dora", {}).get(adapter):
        return "DoRA"
    if getattr(module, "lora_bias", {}).get(adapter):
        return "a LoRA bias"
    if not isinstance(module.lora_A[adapter], nn.Linear) or not isinstance(module.lora_B[adapter], nn.Linear):
        return "LoRA factors that are not linear layers"
    return None
