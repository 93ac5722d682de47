"""The 2-D equalizer: a strength per (layer band x module role), presets, and its PEFT `LoraConfig`.

An `Equalizer` is plain data (roles, contiguous layer bands, a strength grid) that round-trips
through JSON exactly, so a variant folder can say how its adapter was shaped. `preset` builds the
named shapes; roles are sorted into attention / MLP by their names and, given a `TuningMap`, by
their module paths inside a block (`self_attn.dense` vs `mlp.fc1`), never by a per-family table.
`compile_lora_config` turns a grid into a `LoraConfig` whose targets and rank / alpha patterns are
anchored regexes checked against the model's module names with PEFT's own matching functions.

This module does not touch a model (the compiler reads only the `TuningMap`), does not train,
and does not scale a trained adapter at inference time.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from adapters.base.analysis import TuningMap
from adapters.errors import LoraEqError

ROLE_FAMILIES = ("attention", "mlp", "other")
MAX_STRENGTH = 2.0  # the strongest a cell may be: twice the rank, twice the scaling of strength 1

PRESETS: dict[str, str] = {
    "uniform": "every layer band and module role at full strength",
    "attention": "attention projections only (queries, keys, values, output), every band",
    "mlp": "MLP / feed-forward projections only, every band",
    "early": "early layers strong, falling geometrically to 1/8 in the last band",
    "late": "late layers strong, rising geometrically from 1/8 in the first band",
    "middle": "a bell over the bands: middle layers strong, first and last weak",
    "ramp-up": "strength rising linearly from 1/bands in the first band to 1 in the last",
    "ramp-down": "strength falling linearly from 1 in the first band to 1/bands in the last",
}

# Keyword arguments the compiler sets itself; passing them through **extra would contradict the grid.
_OWNED = (
    "r", "lora_alpha", "lora_dropout", "target_modules", "rank_pattern", "alpha_pattern", "task_type",
    "layers_to_transform", "layers_pattern", "use_rslora", "target_parameters",
)

# Role sorting. A container on the module's path (self_attn, mlp, ...) decides first; the leaf name
# (q_proj, fc1, ...) decides when the path has none (OPT's fc1 sits directly in the block).
_ATTENTION_CONTAINER = re.compile(r".*(?:attn|attention).*")
_MLP_CONTAINER = re.compile(
    r".*(?:mlp|ffn|feed_?forward|moe|experts?|intermediate|dense_?relu_?dense).*|output"
)
_ATTENTION_LEAF = re.compile(
    r"[qkvo]|qk|kv|qkv|wq|wk|wv|wo|wqkv|query|key|value|query_key_value|c_attn|c_proj|dense"
    r"|out_proj|(?:[qkvo]|qk|kv|qkv)_proj|[qkv]_lin|out_lin|.*attn.*|.*attention.*"
)
_MLP_LEAF = re.compile(
    r"fc\d*|fc_in|fc_out|c_fc|w[123]|wi(?:_\d)?|lin[12]|dense_h_to_4h|dense_4h_to_h|gate|router"
    r"|(?:gate|up|down|gate_up)(?:_proj)?|.*mlp.*|.*ffn.*"
)


def role_family(path: str) -> str:
    """The family of a role name or a module path inside a block: attention, mlp or other."""
    parts = [p.lower() for p in path.split(".") if p and p != "*" and not p.isdigit()]
    if not parts:
        return "other"
    containers, leaf = parts[:-1], parts[-1]
    if any(_ATTENTION_CONTAINER.fullmatch(c) for c in containers):
        return "attention"
    if any(_MLP_CONTAINER.fullmatch(c) for c in containers):
        return "mlp"
    if _ATTENTION_LEAF.fullmatch(leaf):
        return "attention"
    if _MLP_LEAF.fullmatch(leaf):
        return "mlp"
    return "other"


def role_families(roles: list[str] | TuningMap) -> dict[str, str]:
    """Each role's family. Given a TuningMap, each role is judged by its full path inside the block,
    which settles names that are ambiguous alone (Phi's `dense` is `self_attn.dense`)."""
    if isinstance(roles, TuningMap):
        paths = {}
        for cell in roles.cells:
            paths.setdefault(cell.role, block_path(roles, cell.name))
        return {role: role_family(paths.get(role, role)) for role in roles.roles}
    return {role: _family_by_name(role, roles) for role in roles}


def _family_by_name(role: str, roles: list[str]) -> str:
    if role == "c_proj" and "c_attn" not in roles:
        return "mlp"  # GPT-2's attn.c_proj comes with c_attn; StarCoder2's c_proj (mlp) with q/k/v_proj
    return role_family(role)


@dataclass
class Equalizer:
    """LoRA strength per layer band (rows) x module role (columns); 0 leaves a place untouched."""

    roles: list[str]
    bands: list[list[int]]  # layer indices per band: contiguous, in order, covering 0..L-1 once
    strengths: list[list[float]]  # len(bands) rows x len(roles) columns, each finite and >= 0

    def __post_init__(self) -> None:
        self.roles = _check_roles(self.roles)
        self.bands = _check_bands(self.bands)
        self.strengths = _check_strengths(self.strengths, len(self.bands), self.roles)

    @property
    def layers(self) -> int:
        """How many decoder layers the bands cover."""
        return self.bands[-1][-1] + 1

    def band_of(self, layer: int) -> int:
        for b, members in enumerate(self.bands):
            if members[0] <= layer <= members[-1]:
                return b
        raise LoraEqError(f"layer {layer!r}: the equalizer covers layers 0-{self.layers - 1}")

    def strength(self, layer: int, role: str) -> float:
        if role not in self.roles:
            raise LoraEqError(f"role {role!r}: not in the equalizer's roles ({', '.join(self.roles)})")
        return self.strengths[self.band_of(layer)][self.roles.index(role)]

    def with_cell(self, band: int, role: str, value: float) -> Equalizer:
        """A copy with one cell set to `value`."""
        if not isinstance(band, int) or isinstance(band, bool) or not 0 <= band < len(self.bands):
            raise LoraEqError(f"band {band!r}: choose 0-{len(self.bands) - 1}")
        if role not in self.roles:
            raise LoraEqError(f"role {role!r}: not in the equalizer's roles ({', '.join(self.roles)})")
        grid = [list(row) for row in self.strengths]
        grid[band][self.roles.index(role)] = value
        return Equalizer(list(self.roles), [list(b) for b in self.bands], grid)

    def is_zero(self) -> bool:
        return not any(v > 0 for row in self.strengths for v in row)

    def to_json(self) -> dict:
        return {
            "roles": list(self.roles),
            "bands": [list(b) for b in self.bands],
            "strengths": [list(row) for row in self.strengths],
        }

    @classmethod
    def from_json(cls, data: dict) -> Equalizer:
        if not isinstance(data, dict):
            raise LoraEqError(f"an equalizer must be an object, got {type(data).__name__}")
        missing = [k for k in ("roles", "bands", "strengths") if k not in data]
        unknown = sorted(set(data) - {"roles", "bands", "strengths"})
        if missing or unknown:
            raise LoraEqError(f"equalizer: missing keys {missing}, unknown keys {unknown}")
        return cls(data["roles"], data["bands"], data["strengths"])

    @classmethod
    def uniform(cls, roles: list[str], bands: list[list[int]], value: float = 1.0) -> Equalizer:
        return cls(list(roles), [list(b) for b in bands], [[value] * len(roles) for _ in bands])


def _check_roles(roles) -> list[str]:
    if not isinstance(roles, (list, tuple)) or not roles:
        raise LoraEqError(f"equalizer roles {roles!r}: need a non-empty list of role names")
    for role in roles:
        if not isinstance(role, str) or not role:
            raise LoraEqError(f"equalizer role {role!r}: must be a non-empty string")
    duplicates = sorted({r for r in roles if roles.count(r) > 1})
    if duplicates:
        raise LoraEqError(f"equalizer roles {duplicates}: each role may appear once")
    return list(roles)


def _check_bands(bands) -> list[list[int]]:
    if not isinstance(bands, (list, tuple)) or not bands:
        raise LoraEqError(f"equalizer bands {bands!r}: need a non-empty list of layer lists")
    expected = 0
    for b, members in enumerate(bands):
        if not isinstance(members, (list, tuple)) or not members:
            raise LoraEqError(f"equalizer band {b} {members!r}: need a non-empty list of layer indices")
        for layer in members:
            if not isinstance(layer, int) or isinstance(layer, bool) or layer != expected:
                raise LoraEqError(
                    f"equalizer band {b} {list(members)!r}: layer {layer!r} where layer {expected} "
                    "was due (bands must be contiguous, in order, covering every layer from 0 once)"
                )
            expected += 1
    return [list(members) for members in bands]


def _check_strengths(strengths, n_bands: int, roles: list[str]) -> list[list[float]]:
    if not isinstance(strengths, (list, tuple)) or len(strengths) != n_bands:
        raise LoraEqError(f"equalizer strengths: need {n_bands} rows (one per band), got {strengths!r}")
    grid = []
    for b, row in enumerate(strengths):
        if not isinstance(row, (list, tuple)) or len(row) != len(roles):
            raise LoraEqError(f"equalizer strengths row {b} {row!r}: need {len(roles)} values (one per role)")
        for role, value in zip(roles, row):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise LoraEqError(f"strength {value!r} at band {b}, role {role!r}: must be a finite number >= 0")
        grid.append([float(v) for v in row])
    return grid


def _band_curve(name: str, n: int) -> list[float]:
    """Strength per band for the depth-shaped presets, scaled so the strongest band is 1."""
    t = [b / (n - 1) if n > 1 else 0.5 for b in range(n)]
    shapes = {
        "early": [2 ** (-3 * x) for x in t],
        "late": [2 ** (-3 * (1 - x)) for x in t],
        "middle": [math.exp(-(((x - 0.5) / 0.25) ** 2) / 2) for x in t],
        "ramp-up": [(b + 1) / n for b in range(n)],
        "ramp-down": [(n - b) / n for b in range(n)],
    }
    curve = shapes.get(name, [1.0] * n)
    top = max(curve)
    return [round(v / top, 3) for v in curve]


def preset(name: str, roles: list[str] | TuningMap, bands: list[list[int]]) -> Equalizer:
    """The named preset (see PRESETS) over these roles and bands. Pass the TuningMap rather than
    its role names where a role's name alone may not say whether it is attention or MLP."""
    if name not in PRESETS:
        raise LoraEqError(f"equalizer preset {name!r}: choose one of {', '.join(PRESETS)}")
    families = role_families(roles)
    role_names = list(families)
    if name in ("attention", "mlp"):
        chosen = [r for r in role_names if families[r] == name]
        if not chosen:
            raise LoraEqError(f"preset {name!r}: none of the roles {role_names} is an {name} module")
        row = [1.0 if r in chosen else 0.0 for r in role_names]
        return Equalizer(role_names, bands, [list(row) for _ in bands])
    curve = _band_curve(name, len(bands))
    return Equalizer(role_names, bands, [[v] * len(role_names) for v in curve])


def equalizer_table(eq: Equalizer) -> list[dict]:
    """One row per band for display: band, its layers ("a-b"), then each role's strength."""
    rows = []
    for b, members in enumerate(eq.bands):
        span = f"{members[0]}-{members[-1]}" if len(members) > 1 else str(members[0])
        rows.append({"band": b, "layers": span, **dict(zip(eq.roles, eq.strengths[b]))})
    return rows


# --- compiling a grid into a LoraConfig -------------------------------------------------------


def cell_rank_alpha(strength: float, rank: int, alpha: float) -> tuple[int, float]:
    """A cell's LoRA rank and alpha: rank follows the strength (at least 1) and alpha is set so that
    the cell's scaling alpha_cell / rank_cell equals (alpha / rank) * strength."""
    cell_rank = max(1, math.floor(rank * strength + 0.5))  # half up, not Python's half-to-even
    return cell_rank, _tidy(alpha / rank * strength * cell_rank)


def _tidy(x: float) -> float | int:
    x = float(f"{x:.12g}")  # drop float noise such as 11.999999999999 so configs read cleanly
    return int(x) if x.is_integer() else x


def block_path(tmap: TuningMap, name: str) -> str:
    """A cell's module path inside its block: model.layers.3.mlp.up_proj -> mlp.up_proj
    (grouped cells keep their stars: model.layers.3.moe.experts.*.w1 -> moe.experts.*.w1)."""
    depth = len(tmap.layers_path.split("."))
    return ".".join(name.split(".")[depth + 1 :])


def _concrete_name(tmap: TuningMap, layer: int, name: str) -> str:
    """A real module name for a cell; grouped cells (experts.*.w1) stand for their first member."""
    parts = name.split(".")
    depth = len(tmap.layers_path.split("."))
    if len(parts) > depth and parts[depth] == "*":
        parts[depth] = str(layer)
    return ".".join("0" if p == "*" else p for p in parts)


def _path_regex(path: str) -> str:
    return r"\.".join(r"\d+" if p == "*" else re.escape(p) for p in path.split("."))


def _alternation(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "(?:" + "|".join(items) + ")"


def _names_regex(tmap: TuningMap, cells: list[tuple[int, str]]) -> str:
    """One anchored regex for (layer, path-in-block) pairs: paths sharing a layer set share a branch.
    Layer indices are followed by a dot, so layer 1 never matches layer 10 or 11."""
    layers_by_path: dict[str, set[int]] = {}
    for layer, path in cells:
        layers_by_path.setdefault(path, set()).add(layer)
    paths_by_layers: dict[tuple[int, ...], list[str]] = {}
    for path, layers in layers_by_path.items():
        paths_by_layers.setdefault(tuple(sorted(layers)), []).append(_path_regex(path))
    branches = []
    for layers, paths in paths_by_layers.items():
        index = r"\d+" if len(layers) == tmap.layers else _alternation([str(i) for i in layers])
        branches.append(rf"{re.escape(tmap.layers_path)}\.{index}\.{_alternation(paths)}")
    return f"^{_alternation(branches)}$"


def _pattern(tmap: TuningMap, values: dict[tuple[int, str], float], default: float) -> dict[str, float]:
    """{anchored regex: value} for every value that differs from the default, one key per value."""
    by_value: dict[float, list[tuple[int, str]]] = {}
    for cell, value in values.items():
        if value != default:
            by_value.setdefault(value, []).append(cell)
    return {_names_regex(tmap, cells): value for value, cells in by_value.items()}


@dataclass(frozen=True)
class _Target:
    layer: int
    path: str  # module path inside the block, may hold * (experts)
    name: str  # a concrete module name
    rank: int
    alpha: float


def _targets(eq: Equalizer, tmap: TuningMap, rank: int, alpha: float) -> list[_Target]:
    if eq.layers != tmap.layers:
        raise LoraEqError(f"equalizer covers {eq.layers} layers but the model has {tmap.layers}")
    unknown = [r for r in eq.roles if r not in tmap.roles]
    if unknown:
        raise LoraEqError(f"equalizer roles {unknown}: the model has no such roles ({', '.join(tmap.roles)})")
    if eq.is_zero():
        raise LoraEqError("every equalizer strength is 0: nothing to adapt")
    targets = []
    for cell in tmap.cells:
        strength = eq.strength(cell.layer, cell.role) if cell.role in eq.roles else 0.0
        if strength > 0:
            r, a = cell_rank_alpha(strength, rank, alpha)
            name = _concrete_name(tmap, cell.layer, cell.name)
            targets.append(_Target(cell.layer, block_path(tmap, cell.name), name, r, a))
    return targets


def _check_settings(rank: int, alpha: float, dropout: float, extra: dict) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise LoraEqError(f"rank={rank!r}: must be a whole number >= 1")
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise LoraEqError(f"alpha={alpha!r}: must be a finite number > 0")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LoraEqError(f"dropout={dropout!r}: must be in [0, 1)")
    owned = sorted(set(extra) & set(_OWNED))
    if owned:
        raise LoraEqError(f"{owned}: set by the equalizer, not as extra LoRA options")


def compile_lora_config(
    eq: Equalizer,
    tmap: TuningMap,
    rank: int = 8,
    alpha: float = 16,
    dropout: float = 0.05,
    task_type: str = "CAUSAL_LM",
    **extra,
):
    """The `peft.LoraConfig` for this equalizer on the model described by `tmap` (pure: reads no model).

    Only cells with strength > 0 are targeted; roles missing from the grid are not. A cell of
    strength s gets rank max(1, round(rank * s)) and an alpha chosen so its LoRA scaling is
    alpha_cell / rank_cell = (alpha / rank) * s: strength scales both the capacity of the update
    (its rank) and its magnitude (its scaling). At s = 1 a cell gets exactly `rank` and `alpha`.
    The most common cell rank / alpha become `r` / `lora_alpha`; the others go into `rank_pattern`
    / `alpha_pattern` as anchored regexes over full module names (one key per distinct value).
    Every target and key is checked against the model's module names with PEFT's own matching,
    since PEFT silently ignores a key that matches nothing. `task_type` is CAUSAL_LM, or SEQ_CLS for
    an encoder's classifier (with its head in `modules_to_save`). `extra` goes to LoraConfig as is.
    """
    from peft import LoraConfig, TaskType

    _check_settings(rank, alpha, dropout, extra)
    targets = _targets(eq, tmap, rank, alpha)
    ranks = {(t.layer, t.path): t.rank for t in targets}
    alphas = {(t.layer, t.path): t.alpha for t in targets}
    default_rank = Counter(ranks.values()).most_common(1)[0][0]
    default_alpha = Counter(alphas.values()).most_common(1)[0][0]
    kwargs = dict(
        r=default_rank,
        lora_alpha=default_alpha,
        lora_dropout=dropout,
        target_modules=_names_regex(tmap, list(ranks)),
        rank_pattern=_pattern(tmap, ranks, default_rank),
        alpha_pattern=_pattern(tmap, alphas, default_alpha),
        task_type=TaskType(task_type),
    )
    if all(c.kind == "Conv1D" for c in tmap.cells):
        kwargs["fan_in_fan_out"] = True  # GPT-2 style weights are (in, out); PEFT would warn and flip it
    try:
        config = LoraConfig(**kwargs, **extra)
    except (TypeError, ValueError) as e:
        raise LoraEqError(f"LoRA options {sorted(extra)}: {str(e).splitlines()[0]}") from None
    verify_lora_config(config, tmap, {t.name: (t.rank, t.alpha) for t in targets})
    return config


def verify_lora_config(config, tmap: TuningMap, expected: dict[str, tuple[int, float]]) -> None:
    """Check with PEFT's own matching that `config` targets exactly the modules in `expected`
    (concrete name -> (rank, alpha)) with those ranks and alphas, and that every rank / alpha
    pattern key matches at least one targeted module."""
    from peft.tuners.tuners_utils import check_target_module_exists
    from peft.utils.other import get_pattern_key

    if not any(check_target_module_exists(config, name) for name in expected):
        raise LoraEqError(f"target pattern {config.target_modules!r} matches no module of the model")
    for attr in ("rank_pattern", "alpha_pattern"):
        for key in getattr(config, attr):
            if not any(get_pattern_key([key], name) == key for name in expected):
                raise LoraEqError(f"{attr} key {key!r} matches no module of the model")
    names = [_concrete_name(tmap, c.layer, c.name) for c in tmap.cells] + [o["name"] for o in tmap.other]
    for name in names:
        found = bool(check_target_module_exists(config, name))
        if found != (name in expected):
            state = "targets" if found else "misses"
            raise LoraEqError(f"target pattern {config.target_modules!r} {state} module {name!r}")
        if found:
            r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), name), config.r)
            a = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), name), config.lora_alpha)
            if (r, a) != expected[name]:
                raise LoraEqError(f"module {name!r} would get rank {r}, alpha {a}; the equalizer asks {expected[name]}")
