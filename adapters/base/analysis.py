"""Tuning-point analysis: every place LoRA can attach to, as a grid of decoder layers x module roles.

Works for any causal LM without a per-family table: the decoder layers are the model's largest
list of identical blocks, and a module's role is the shortest suffix of its path inside a block
that tells it apart from the block's other modules (`q_proj`, `c_attn`, `mlp.c_proj`,
`dense_h_to_4h`, ...). Weight statistics are computed on the dequantized weight, so an NF4 base
is measured as the values it actually computes with. Results are cached per model fingerprint
and precision. This module does not decide where to adapt (that is the equalizer).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from adapters.cache import cache_dir, read_json, write_json_atomic
from adapters.errors import LoraEqError

from .bands import DEFAULT_BANDS, layer_bands

STATISTICS = ("frobenius", "spectral", "stable_rank", "effective_rank")
_CACHE_VERSION = 1
_QUANTIZED = ("Linear4bit", "Linear8bitLt")

Progress = Callable[[int, int], None]
log = logging.getLogger("loraeq.analysis")


def module_kind(module: nn.Module) -> str | None:
    """The kind of a module LoRA can attach to, or None."""
    name = type(module).__name__
    if name in _QUANTIZED:
        return name
    if name == "Conv1D" and hasattr(module, "nf"):  # GPT-2 style, weight is (in, out)
        return "Conv1D"
    if isinstance(module, nn.Linear):
        return "Linear"
    if isinstance(module, nn.Embedding):
        return "Embedding"
    return None


def logical_numel(param: torch.Tensor) -> int:
    """Elements of a parameter as the model sees it (a packed 4-bit weight counts unpacked)."""
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return math.prod(state.shape)
    return param.numel()


def features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a tunable module."""
    kind = module_kind(module)
    if kind == "Conv1D":
        return module.weight.shape[0], module.weight.shape[1]
    if kind == "Embedding":
        return module.num_embeddings, module.embedding_dim
    return module.in_features, module.out_features


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The weight as a float32 (out, in) matrix, dequantized when it is stored in 4 or 8 bits."""
    kind = module_kind(module)
    if kind in _QUANTIZED:
        from peft.utils.integrations import dequantize_module_weight

        weight = dequantize_module_weight(module)
    elif kind == "Conv1D":
        weight = module.weight.T
    else:
        weight = module.weight
    return weight.detach().float()


def weight_stats(weight: torch.Tensor) -> dict[str, float]:
    """Frobenius and spectral norm, stable rank (|W|_F^2 / |W|_2^2) and effective rank
    (exp of the entropy of the normalized singular values, Roy & Vetterli 2007)."""
    s = torch.linalg.svdvals(weight.float())
    spectral = float(s[0]) if s.numel() else 0.0
    frobenius = float(torch.sqrt((s * s).sum()))
    if spectral == 0.0:
        return {"frobenius": frobenius, "spectral": 0.0, "stable_rank": 0.0, "effective_rank": 0.0}
    p = s / s.sum()
    p = p[p > 0]
    entropy = float(-(p * p.log()).sum())
    return {
        "frobenius": frobenius,
        "spectral": spectral,
        "stable_rank": frobenius**2 / spectral**2,
        "effective_rank": math.exp(entropy),
    }


@dataclass
class TuningPoint:
    """One place LoRA can attach to inside the decoder layers."""

    layer: int
    role: str
    name: str
    kind: str
    in_features: int
    out_features: int
    params: int
    lora_params_per_rank: int


@dataclass
class TuningMap:
    """Where LoRA can attach: the grid's cells plus the tunable modules outside the layers."""

    layers_path: str
    layers: int
    roles: list[str]
    cells: list[TuningPoint]
    other: list[dict]
    total_params: int

    def cell(self, layer: int, role: str) -> TuningPoint:
        for c in self.cells:
            if c.layer == layer and c.role == role:
                return c
        raise KeyError((layer, role))


def find_layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder layers: the ModuleList of identical blocks holding the most tunable weights."""
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0 or len({type(b) for b in mod}) != 1:
            continue
        weight = sum(
            logical_numel(m.weight) for m in mod.modules() if module_kind(m) not in (None, "Embedding")
        )
        key = (weight, -name.count("."))
        if weight and (best is None or key > best[:2]):
            best = (*key, name, mod)
    if best is None:
        raise LoraEqError(f"{type(model).__name__}: found no stack of decoder layers with linear weights")
    return best[2], best[3]


def short_role_names(paths: list[str]) -> dict[str, str]:
    """Give each module path (inside a block) the shortest suffix not yet taken, in order:
    GPT-2's attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj -> c_attn, c_proj, c_fc, mlp.c_proj."""
    taken: set[str] = set()
    names: dict[str, str] = {}
    for path in paths:
        parts = path.split(".")
        candidates = [".".join(parts[-k:]) for k in range(1, len(parts) + 1)]
        name = next((c for c in candidates if c not in taken), f"{path}#{len(taken)}")
        taken.add(name)
        names[path] = name
    return names


def _role_path(relative: str) -> str:
    # Experts and other numbered sub-modules share a role: experts.3.w1 -> experts.*.w1
    return re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)", "*", relative)


def tuning_map(model: nn.Module) -> TuningMap:
    """Locate every tuning point of `model` (no statistics; cheap)."""
    layers_path, stack = find_layer_stack(model)
    found: list[tuple[int, str, str, nn.Module]] = []
    for index, block in enumerate(stack):
        for rel, mod in block.named_modules():
            kind = module_kind(mod)
            if rel and kind not in (None, "Embedding"):
                found.append((index, _role_path(rel), f"{layers_path}.{index}.{rel}", mod))
    roles_by_path = short_role_names(list(dict.fromkeys(path for _, path, _, _ in found)))
    grouped: dict[tuple[int, str], list[tuple[str, nn.Module]]] = {}
    for index, path, name, mod in found:
        grouped.setdefault((index, roles_by_path[path]), []).append((name, mod))
    cells = [_tuning_point(layer, role, members, f"{layers_path}.{layer}.") for (layer, role), members in grouped.items()]
    in_layers = {name for members in grouped.values() for name, _ in members}
    return TuningMap(
        layers_path=layers_path,
        layers=len(stack),
        roles=list(dict.fromkeys(roles_by_path.values())),
        cells=cells,
        other=_other_modules(model, layers_path, in_layers),
        total_params=sum(logical_numel(p) for p in model.parameters()),
    )


def _tuning_point(layer: int, role: str, members: list[tuple[str, nn.Module]], prefix: str) -> TuningPoint:
    first_name, first = members[0]
    fin, fout = features(first)
    params = sum(
        logical_numel(m.weight) + (m.bias.numel() if getattr(m, "bias", None) is not None else 0)
        for _, m in members
    )
    # Several numbered modules (experts) in one cell: name them with a wildcard, within this layer only.
    name = first_name if len(members) == 1 else prefix + _role_path(first_name[len(prefix):])
    return TuningPoint(
        layer=layer,
        role=role,
        name=name,
        kind=module_kind(first),
        in_features=fin,
        out_features=fout,
        params=params,
        lora_params_per_rank=(fin + fout) * len(members),
    )


def _other_modules(model: nn.Module, layers_path: str, in_layers: set[str]) -> list[dict]:
    """Tunable modules outside the decoder layers (embeddings, lm_head), with weight sharing noted."""
    owners: dict[int, str] = {}
    other = []
    for name, mod in model.named_modules():
        kind = module_kind(mod)
        if kind is None or name in in_layers or name.startswith(layers_path + "."):
            continue
        fin, fout = features(mod)
        key = id(mod.weight)
        other.append(
            {
                "name": name,
                "kind": kind,
                "in_features": fin,
                "out_features": fout,
                "params": logical_numel(mod.weight),
                "tied_to": owners.get(key),
            }
        )
        owners.setdefault(key, name)
    return other


@dataclass
class Analysis:
    """A model's tuning points with weight statistics, totals and layer bands."""

    model: dict
    precision: str
    layers: int
    layers_path: str
    roles: list[str]
    cells: list[dict]
    other: list[dict]
    total_params: int
    memory_bytes: int
    load_seconds: float
    analysis_seconds: float
    cached: bool
    bands: list[list[int]] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        data["totals"] = self.totals()
        return data

    def totals(self) -> dict:
        """Parameter and LoRA-per-rank totals per role, per layer and per band."""
        band_of = {layer: b for b, members in enumerate(self.bands) for layer in members}

        def add(bucket: dict, key, cell: dict) -> None:
            t = bucket.setdefault(key, {"params": 0, "lora_params_per_rank": 0, "cells": 0})
            t["params"] += cell["params"]
            t["lora_params_per_rank"] += cell["lora_params_per_rank"]
            t["cells"] += 1

        by_role: dict = {}
        by_layer: dict = {}
        by_band: dict = {}
        for cell in self.cells:
            add(by_role, cell["role"], cell)
            add(by_layer, cell["layer"], cell)
            add(by_band, band_of.get(cell["layer"], 0), cell)
        return {
            "by_role": by_role,
            "by_layer": [by_layer[k] for k in sorted(by_layer)],
            "by_band": [by_band[k] for k in sorted(by_band)],
            "cells_params": sum(c["params"] for c in self.cells),
        }

    def grid(self, statistic: str = "spectral") -> "pandas.DataFrame":  # noqa: F821
        """Layers x roles table of one statistic (or `params`), for heatmaps."""
        import pandas as pd

        allowed = STATISTICS + ("params", "lora_params_per_rank", "in_features", "out_features")
        if statistic not in allowed:
            raise LoraEqError(f"statistic {statistic!r}: choose one of {', '.join(allowed)}")
        frame = pd.DataFrame(self.cells).pivot(index="layer", columns="role", values=statistic)
        return frame.reindex(index=range(self.layers), columns=self.roles)


def _measure(tmap: TuningMap, model: nn.Module, progress: Progress | None) -> list[dict]:
    modules = dict(model.named_modules())
    cells = []
    for i, point in enumerate(tmap.cells):
        members = [m for n, m in modules.items() if _matches(point.name, n)]
        stats = [weight_stats(dense_weight(m)) for m in members]
        row = asdict(point)
        row.update({k: sum(s[k] for s in stats) / len(stats) for k in STATISTICS})
        cells.append(row)
        if progress:
            progress(i + 1, len(tmap.cells))
    return cells


def _matches(cell_name: str, module_name: str) -> bool:
    if "*" not in cell_name:
        return cell_name == module_name
    return re.fullmatch(re.escape(cell_name).replace(r"\*", r"\d+"), module_name) is not None


def _cache_path(fingerprint: str, precision: str):
    return cache_dir("analysis") / f"{fingerprint}-{precision}-v{_CACHE_VERSION}.json"


def analyze_loaded(loaded, bands: int = DEFAULT_BANDS, use_cache: bool = True, progress: Progress | None = None) -> Analysis:
    """Analyze an already loaded base (`loading.LoadedModel`)."""
    path = _cache_path(loaded.fingerprint, loaded.precision)
    cached = read_json(path) if use_cache else {}
    started = time.perf_counter()
    if not cached:
        with torch.no_grad():
            tmap = tuning_map(loaded.model)
            log.info("measuring the weights of the %d places LoRA can tune, once for this model and precision "
                     "(kept in %s)", len(tmap.cells), path.parent)
            cached = {
                "layers": tmap.layers,
                "layers_path": tmap.layers_path,
                "roles": tmap.roles,
                "cells": _measure(tmap, loaded.model, progress),
                "other": tmap.other,
                "total_params": tmap.total_params,
                "memory_bytes": loaded.memory_bytes,
            }
        write_json_atomic(path, cached)
        log.info("measured in %.0f s", time.perf_counter() - started)
        hit = False
    else:
        hit = True
    return _analysis(cached, loaded.info()["model"], loaded.precision, bands, loaded.load_seconds, started, hit)


def _analysis(data: dict, model: dict, precision: str, bands: int, load_s: float, started: float, hit: bool):
    return Analysis(
        model=model,
        precision=precision,
        layers=data["layers"],
        layers_path=data["layers_path"],
        roles=data["roles"],
        cells=data["cells"],
        other=data["other"],
        total_params=data["total_params"],
        memory_bytes=data["memory_bytes"],
        load_seconds=round(load_s, 3),
        analysis_seconds=round(time.perf_counter() - started, 3),
        cached=hit,
        bands=layer_bands(data["layers"], bands),
    )


def analyze(
    spec: str | None = None,
    precision: str = "auto",
    bands: int = DEFAULT_BANDS,
    *,
    trust_remote_code: bool = False,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> Analysis:
    """Analyze the model named by `spec` (a causal LM, or an encoder with its classification head
    outside the grid). A cached analysis is returned without loading weights."""
    from .encoder import load_encoder, resolve_encoder_spec
    from .loading import (
        ENCODER_KIND,
        check_causal_lm,
        choose_precision,
        count_checkpoint_params,
        default_device,
        load_model,
        model_kind,
    )
    from .models import fingerprint, materialize, resolve_source

    layer_bands(1, bands)  # reject a bad band count before any slow work
    spec = resolve_encoder_spec(spec)
    source = resolve_source(spec)
    folder = materialize(source, trust_remote_code)
    encoder = model_kind(folder) == ENCODER_KIND
    if use_cache:
        started = time.perf_counter()
        if not encoder:
            check_causal_lm(folder, trust_remote_code)
        choice = choose_precision(precision, count_checkpoint_params(folder), default_device())
        fp = fingerprint(source, folder)
        data = read_json(_cache_path(fp, choice.precision))
        if data:
            model = {"id": source.id, "fingerprint": fp}
            return _analysis(data, model, choice.precision, bands, 0.0, started, True)
    load = load_encoder if encoder else load_model
    loaded = load(spec, precision, trust_remote_code=trust_remote_code)
    return analyze_loaded(loaded, bands, use_cache, progress)
