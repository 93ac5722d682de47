"""Adapters from outside a run: name them, fetch them, and check them against the base before use.

A user may put next to the base any PEFT LoRA adapter: a finished variant of a run
(`RUN/VARIANT` in a runs area), a folder (only under the roots the caller allows: the CLI allows
any folder the user names, the web app only the roots its operator configured), a `.zip` of an
adapter (extracted safely: no `..`, no absolute names, no links, sizes within
`Limits.adapter_bytes`, at most `Limits.adapter_members` files, counted from the zip's end
record before its directory is read) or a Hugging Face Hub adapter id (downloaded with `huggingface_hub`,
adapter files only). `check_adapter` then reads the adapter's config and tensor shapes (never
unpickling anything unless the caller allows it) and refuses one that does not fit the loaded
base; a different `base_model_name_or_path` with fitting shapes is only a warning.

This module does not load adapters into a model (engine.py does, through PEFT, so a non-uniform
`rank_pattern` / `alpha_pattern` is served exactly as PEFT serves it) and keeps no state.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from adapters.errors import LoraEqError
from adapters.limits import Limits, env_name

CONFIG = "adapter_config.json"
SAFETENSORS = "adapter_model.safetensors"
PICKLE = "adapter_model.bin"
ADAPTER_FILES = (CONFIG, SAFETENSORS, PICKLE, "README.md", "variant.json", "metrics.json")  # what a copy keeps
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
RESERVED = ("base",)
ROOTS_ENV = "LORAEQ_ADAPTER_ROOTS"
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?P<part>lora_(?:embedding_)?[AB]|lora_\w+)"
                       r"(?:\.[^.]+)?(?:\.weight)?$")


@dataclass(frozen=True)
class AdapterSpec:
    """One `NAME=SOURCE` a user gave."""

    name: str
    source: str

    @classmethod
    def parse(cls, text: str) -> AdapterSpec:
        name, sep, source = str(text).partition("=")
        if not sep or not name.strip() or not source.strip():
            raise LoraEqError(f"--adapter expects NAME=SOURCE (a run variant, folder, .zip or Hub id), got {text!r}")
        return cls(check_name(name.strip()), source.strip())


def check_name(name, taken=()) -> str:
    """A column name for an adapter: short, safe in a path, not the base's, not already used."""
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        shown = str(name)[:60]
        raise LoraEqError(f"adapter name {shown!r}: use 1-40 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit")
    if name.lower() in RESERVED or name.endswith("@eq"):
        raise LoraEqError(f"adapter name {name!r} is reserved (the original model's column): choose another")
    if name in taken:
        raise LoraEqError(f"adapter name {name!r} is already used: choose another")
    return name


def configured_roots(environ: dict | None = None) -> tuple[Path, ...]:
    """The server folders a web user may take adapters from (`LORAEQ_ADAPTER_ROOTS`, os.pathsep-separated)."""
    raw = (os.environ if environ is None else environ).get(ROOTS_ENV, "")
    return tuple(Path(p).resolve() for p in raw.split(os.pathsep) if p.strip())


# ---- where an adapter comes from ------------------------------------------------------------------


def resolve(source: str, work: Path, *, runs: Path | None = None, roots: tuple[Path, ...] | None = None,
            limits: Limits | None = None, allow_pickle: bool = False) -> Path:
    """The folder holding the adapter `source` names. A `.zip` is extracted into `work` (a fresh
    folder for this adapter), a Hub id downloaded into the Hugging Face cache (at most
    `limits.adapter_bytes` either way). `roots=None` allows any local folder; a tuple
    allows only folders under those roots (an empty tuple: none). `runs` is the runs area
    `RUN/VARIANT` is looked up in. Prefixes `run:`, `hub:` force a kind."""
    limits = limits or Limits.from_env()
    kind, _, rest = source.partition(":")
    if kind in ("run", "hub") and rest:
        return run_variant(rest, runs) if kind == "run" else hub_adapter(rest, allow_pickle, limits.adapter_bytes)
    if source.lower().endswith(".zip"):
        return extract_zip(local_path(source, roots), work, limits.adapter_bytes)
    if runs is not None and _looks_like_run_variant(source, runs):
        return run_variant(source, runs)
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        return adapter_folder(local_path(source, roots))
    if HUB_ID.match(source):
        return hub_adapter(source, allow_pickle, limits.adapter_bytes)
    raise LoraEqError(f"adapter source {source[:120]!r}: no such folder, .zip, run variant or Hub id")


def resolve_spec(spec: AdapterSpec, work: Path, **kwargs) -> Path:
    """`resolve` for a named adapter: an error names the adapter."""
    try:
        return resolve(spec.source, work, **kwargs)
    except LoraEqError as e:
        raise LoraEqError(f"adapter {spec.name!r}: {e}") from None


def local_path(source: str, roots: tuple[Path, ...] | None) -> Path:
    """`source` resolved (links followed), refused unless it lies under one of `roots` (None: anywhere)."""
    path = Path(source).expanduser().resolve()
    if roots is not None and not any(path == r or r in path.parents for r in roots):
        raise LoraEqError(f"{source[:120]!r}: not under a folder adapters may be taken from on this server")
    if not path.exists():
        raise LoraEqError(f"{source[:120]!r}: no such file or folder")
    return path


def adapter_folder(path: Path) -> Path:
    """`path` if it holds a PEFT adapter (adapter_config.json), else its one subfolder that does."""
    if not path.is_dir():
        raise LoraEqError(f"{path.name}: not a folder")
    if (path / CONFIG).is_file():
        return path
    found = sorted(p.parent for p in path.rglob(CONFIG) if p.is_file())
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} adapters' "
        raise LoraEqError(f"{path.name}: {what} adapter_config.json found (one PEFT adapter per source)")
    return found[0]


def _looks_like_run_variant(source: str, runs: Path) -> bool:
    parts = PurePosixPath(source).parts
    return len(parts) == 2 and ".." not in parts and (Path(runs) / parts[0]).is_dir()


def run_variant(source: str, runs: Path | None) -> Path:
    """The folder of `RUN/VARIANT`, a finished variant of a run inside the runs area `runs`."""
    from adapters.train.runfolder import RunFolder

    parts = PurePosixPath(source).parts
    if runs is None or len(parts) != 2 or any(p in ("..", ".") or p.startswith("/") for p in parts):
        raise LoraEqError(f"run variant {source[:120]!r}: expected RUN/VARIANT inside the runs folder")
    root = Path(runs).resolve()
    run = (root / parts[0]).resolve()
    if root not in run.parents or not run.is_dir():
        raise LoraEqError(f"run variant {source[:120]!r}: no run {parts[0]!r} in the runs folder")
    finished = RunFolder.open(run).adapters()
    if parts[1] not in finished:
        names = ", ".join(finished) or "none"
        raise LoraEqError(f"run {parts[0]!r} has no finished variant {parts[1]!r} (finished: {names})")
    return Path(finished[parts[1]])


def extract_zip(path: Path, work: Path, limit: int, max_members: int | None = None) -> Path:
    """Extract an adapter zip into `work`, refusing anything that could land outside it, be too big
    or hold more than `max_members` entries (default `Limits.adapter_members`)."""
    max_members = Limits.from_env().adapter_members if max_members is None else max_members
    if path.stat().st_size > limit:
        raise LoraEqError(f"{path.name}: {path.stat().st_size:,} bytes, over the adapter limit of {limit:,}")
    _check_count(path, zip_entries(path), max_members)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise LoraEqError(f"{path.name}: not a readable zip ({e})") from None
    with archive:
        _check_count(path, len(archive.infolist()), max_members)  # the end record may lie
        members = [m for m in archive.infolist() if not m.is_dir()]
        for m in archive.infolist():
            _check_member(path.name, m)
        total = sum(m.file_size for m in members)
        if total > limit:
            raise LoraEqError(f"{path.name}: {total:,} bytes unpacked, over the adapter limit of {limit:,}")
        work.mkdir(parents=True, exist_ok=True)
        budget = limit
        for m in members:
            budget -= _extract_member(archive, m, work, budget, path.name)
    return adapter_folder(work)


def zip_entries(path: Path) -> int | None:
    """How many entries a zip's end-of-central-directory record says it holds (zip64 too); None
    when no such record is found (the zip reader then says what is wrong)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - (22 + 0xFFFF)))  # the record, and a comment of at most 64 KB
            tail = f.read()
    except OSError:
        return None
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries = int.from_bytes(tail[at + 10:at + 12], "little")
    zip64 = tail.rfind(b"PK\x06\x06", 0, at)
    if entries == 0xFFFF and zip64 >= 0 and at - zip64 >= 56:
        entries = int.from_bytes(tail[zip64 + 32:zip64 + 40], "little")
    return entries


def _check_count(path: Path, entries: int | None, limit: int) -> None:
    if entries is not None and entries > limit:
        raise LoraEqError(f"{path.name}: {entries:,} files in the zip, over the limit of {limit:,} "
                          f"({env_name('adapter_members')}): an adapter has a handful")


def _check_member(zip_name: str, member: zipfile.ZipInfo) -> None:
    name = member.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
        raise LoraEqError(f"{zip_name}: member {name[:80]!r} would land outside the adapter folder")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise LoraEqError(f"{zip_name}: member {name[:80]!r} is a link (refused)")


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, work: Path, budget: int, zip_name: str) -> int:
    """Write one member under `work`, counting the bytes actually inflated (a header may lie)."""
    target = work.joinpath(*PurePosixPath(member.filename.replace("\\", "/")).parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with archive.open(member) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > budget:
                    raise LoraEqError(f"{zip_name}: more bytes unpacked than its header says, over the adapter limit")
                dst.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise LoraEqError(f"{zip_name}: member {member.filename[:80]!r} is damaged ({e})") from None
    return written


def _hub_bytes(repo_id: str, files: list[str]) -> int | None:
    """The size of a Hub repository's `files` as the Hub lists them; None when offline or unknown."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except Exception:  # any failure here (network, auth, no such repo) is reported by the download itself
        return None
    return sum(s.size or 0 for s in info.siblings or [] if s.rfilename in files)


def hub_adapter(repo_id: str, allow_pickle: bool = False, limit: int | None = None) -> Path:
    """A Hub adapter's files (config and weights only, at most `limit` bytes as the Hub lists them),
    downloaded into the Hugging Face cache (or found there when offline): its snapshot folder,
    which callers copy from, never write to."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    if not HUB_ID.match(repo_id):
        raise LoraEqError(f"{repo_id[:120]!r}: not a Hub id (owner/name)")
    patterns = [CONFIG, SAFETENSORS] + ([PICKLE] if allow_pickle else [])
    size = _hub_bytes(repo_id, patterns) if limit else None
    if size is not None and size > limit:
        raise LoraEqError(f"Hub adapter {repo_id!r}: {size:,} bytes, over the adapter limit of {limit:,}")
    try:
        folder = snapshot_download(repo_id, allow_patterns=patterns)
    except LocalEntryNotFoundError:
        raise LoraEqError(f"Hub adapter {repo_id!r}: not in the local cache and the Hub cannot be reached "
                          "(offline): download it where the Hub is reachable, or give a folder or .zip") from None
    except RepositoryNotFoundError:
        raise LoraEqError(f"Hub adapter {repo_id!r}: no such repository (or it is private)") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise LoraEqError(f"Hub adapter {repo_id!r}: cannot download ({type(e).__name__}: {e})") from None
    return adapter_folder(Path(folder))


# ---- does it fit the base ---------------------------------------------------------------------------


def read_config(folder: Path) -> dict:
    """adapter_config.json of a LoRA adapter, with its rank and pattern fields checked."""
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoraEqError(f"{folder.name}: no adapter_config.json (not a PEFT adapter)") from None
    except (OSError, ValueError) as e:
        raise LoraEqError(f"{folder.name}: adapter_config.json is broken ({e})") from None
    if not isinstance(config, dict):
        raise LoraEqError(f"{folder.name}: adapter_config.json is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise LoraEqError(f"{folder.name}: peft_type {config.get('peft_type')!r}: only LoRA adapters are supported")
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise LoraEqError(f"{folder.name}: adapter_config.json r={r!r}: must be a whole number >= 1")
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key) or {}
        if not isinstance(pattern, dict) or not all(isinstance(v, (int, float)) for v in pattern.values()):
            raise LoraEqError(f"{folder.name}: adapter_config.json {key} must map module patterns to numbers")
    targets = config.get("target_modules")
    if not (isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))):
        raise LoraEqError(f"{folder.name}: adapter_config.json target_modules must be a name list or a pattern")
    try:
        from peft import LoraConfig

        LoraConfig.from_peft_type(**config)
    except (TypeError, ValueError) as e:
        raise LoraEqError(f"{folder.name}: adapter_config.json is not a valid LoRA config ({e})") from None
    return config


def read_shapes(folder: Path, allow_pickle: bool = False) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the adapter's weights, read from safetensors headers (no code runs);
    a pickled adapter_model.bin only when allowed."""
    if (folder / SAFETENSORS).is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(folder / SAFETENSORS, framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise LoraEqError(f"{folder.name}: adapter_model.safetensors is unreadable ({e})") from None
    if (folder / PICKLE).is_file():
        if not allow_pickle:
            raise LoraEqError(f"{folder.name}: only a pickled adapter_model.bin (it could run code when loaded); "
                              "convert it to safetensors, or allow pickles explicitly if you trust it")
        import torch

        try:
            state = torch.load(folder / PICKLE, map_location="cpu", weights_only=True)
        except Exception as e:  # any unpickling failure is a bad file
            raise LoraEqError(f"{folder.name}: adapter_model.bin is unreadable ({type(e).__name__})") from None
        return {k: tuple(v.shape) for k, v in state.items()}
    raise LoraEqError(f"{folder.name}: no adapter weights (adapter_model.safetensors)")


def check_adapter(folder: str | Path, base, allow_pickle: bool = False) -> list[str]:
    """Warnings about an adapter that fits `base` (a LoadedModel or a model), or a LoraEqError
    naming what does not fit: its config, its weights' format, a target module the base lacks,
    a tensor whose shape does not fit the base module or the config's rank."""
    folder = Path(folder)
    config = read_config(folder)
    shapes = read_shapes(folder, allow_pickle)
    model = getattr(base, "model", base)
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    modules = dict(model.named_modules())
    _check_targets(folder, config, modules)
    lora = 0
    for key, shape in shapes.items():
        lora += _check_tensor(folder, config, modules, key, shape)
    if not lora:
        raise LoraEqError(f"{folder.name}: the weights hold no LoRA tensors")
    return _name_warnings(folder, config, base, model)


def _check_targets(folder: Path, config: dict, modules: dict) -> None:
    targets = config["target_modules"]
    names = [n for n in modules if n]
    if targets == "all-linear":  # PEFT's shorthand: the tensors' own checks cover it
        return
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, n) for n in names):
            raise LoraEqError(f"{folder.name}: target_modules pattern {targets!r} matches no module of the base")
        return
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise LoraEqError(f"{folder.name}: target module {t!r} does not exist in the base (another architecture?)")


def _check_tensor(folder: Path, config: dict, modules: dict, key: str, shape: tuple) -> int:
    """Check one saved tensor against the base; 1 when it is a LoRA factor, 0 otherwise."""
    m = _LORA_KEY.match(key)
    if not m:
        path = key.removeprefix("base_model.model.")
        owner = path.rsplit(".", 1)[0]
        if owner not in modules and path.rsplit(".", 2)[0] not in modules:
            raise LoraEqError(f"{folder.name}: tensor {key!r} belongs to no module of the base")
        return 0
    name, part = m.group("module"), m.group("part")
    module = modules.get(name)
    if module is None:
        raise LoraEqError(f"{folder.name}: tensor {key!r}: the base has no module {name!r} (another architecture?)")
    if part not in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
        return 0  # e.g. DoRA's magnitude vector: PEFT checks it when loading
    _check_factor(folder, config, name, module, part, shape)
    return 1


def _module_dims(module) -> tuple[int, int] | None:
    """(in, out) of a linear-like or embedding module, wrapped or not."""
    module = getattr(module, "base_layer", module)
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    if hasattr(module, "num_embeddings"):
        return int(module.num_embeddings), int(module.embedding_dim)
    weight = getattr(module, "weight", None)
    if weight is not None and weight.dim() == 2 and type(module).__name__ == "Conv1D":
        return int(weight.shape[0]), int(weight.shape[1])  # GPT-2's Conv1D stores (in, out)
    return None


def _check_factor(folder: Path, config: dict, name: str, module, part: str, shape: tuple) -> None:
    from peft.utils.other import get_pattern_key

    dims = _module_dims(module)
    if dims is None:
        raise LoraEqError(f"{folder.name}: module {name!r} of the base is not a layer LoRA can adapt here")
    pattern = config.get("rank_pattern") or {}
    r = pattern.get(get_pattern_key(pattern.keys(), name), config["r"])
    d_in, d_out = dims
    expected = {"lora_A": (r, d_in), "lora_B": (d_out, r), "lora_embedding_A": (r, d_in),
                "lora_embedding_B": (d_out, r)}[part]
    if len(shape) != 2:
        raise LoraEqError(f"{folder.name}: {name} {part} has shape {list(shape)}: the fused check needs a matrix")
    if tuple(shape) != expected:
        raise LoraEqError(f"{folder.name}: {name} {part} has shape {list(shape)}, the base and rank {r} "
                          f"need {list(expected)} (made for another model?)")


def _name_warnings(folder: Path, config: dict, base, model) -> list[str]:
    named = config.get("base_model_name_or_path")
    source = getattr(base, "source", None)
    ours = {str(x) for x in (getattr(source, "id", None), getattr(source, "hub_id", None),
                             getattr(getattr(model, "config", None), "_name_or_path", None)) if x}
    if named and ours and named not in ours and Path(str(named)).name not in {Path(o).name for o in ours}:
        return [f"{folder.name}: made for {named!r}, loaded on {sorted(ours)[0]!r} (the shapes fit)"]
    return []


def check_adapters(adapters: dict[str, str | Path], base, allow_pickle: bool = False, taken=()) -> dict[str, list[str]]:
    """`check_adapter` for each named adapter, names checked too: name -> warnings."""
    out: dict[str, list[str]] = {}
    for name, folder in adapters.items():
        check_name(name, tuple(taken) + tuple(out))
        try:
            out[name] = check_adapter(folder, base, allow_pickle)
        except LoraEqError as e:
            raise LoraEqError(f"adapter {name!r}: {e}") from None
    return out


def adapter_fingerprint(folder: Path) -> str:
    """A hash of an outside adapter's config and weights (votes on its column carry it)."""
    import hashlib

    digest = hashlib.sha256()
    for name in (CONFIG, SAFETENSORS, PICKLE):
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return "outside-" + digest.hexdigest()[:16]


def keep_copy(folder: Path, target: Path, allow_pickle: bool = False) -> Path:
    """Copy an accepted adapter's files (config, weights, card; a pickle only when allowed) to `target`."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ADAPTER_FILES:
        if (folder / name).is_file() and (name != PICKLE or allow_pickle):
            shutil.copyfile(folder / name, target / name)
    return target


def accept(name: str, fetch: Callable[[Path], Path], base, into: Path, *, allow_pickle: bool = False,
           taken=()) -> tuple[Path, list[str]]:
    """Fetch (`fetch(work)` returns the adapter folder, using `work` for anything it unpacks),
    check and keep one adapter: its copy at `into/NAME` and the warnings. Nothing is left behind
    when it is refused."""
    check_name(name, taken)
    work = Path(into) / f".incoming-{name}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        folder = fetch(work)
        warnings = check_adapter(folder, base, allow_pickle)
        return keep_copy(folder, Path(into) / name, allow_pickle), warnings
    except LoraEqError as e:
        raise LoraEqError(f"adapter {name!r}: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
