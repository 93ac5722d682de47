"""What a session works on, for every tab: its base (`current`), its validated data (`session_spec`,
`session_dataset`) and its uploads (`upload_source`, `receive`). Tabs import these from here, never
from each other; nothing here builds a page.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from adapters.errors import LoraEqError
from adapters.train.dataspec import DataSpec
from playground.bounded import bounded
from playground.sessions import Session
from playground.shared import Loaded, Shared

SAMPLES = Path(__file__).resolve().parents[1] / "datasets"
SAMPLE_NAMES = ["fictional-facts.jsonl", "autumn-voice.jsonl", "dolly-15k-sample.jsonl"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def current(shared: Shared, session: Session) -> Loaded:
    """The session's base model (loaded once, shared read-only with other sessions)."""
    return shared.registry.get(session.model or shared.default_model, session.precision or shared.default_precision)


def session_spec(shared: Shared, state: Session) -> DataSpec:
    """The session's data spec: the file it validated, with the format and mapping it was validated with."""
    if not state.data:
        raise LoraEqError("validate a data file in the Data tab first")
    spec = DataSpec.from_json({**state.data, "mix": state.mix or {}})
    shared.area.inside(state, spec.path)
    return spec


def session_dataset(shared: Shared, state: Session, with_tokens: bool = False):
    """The session's validated data, read again through its spec (token counts on request), in a
    child process within the parse limits (`bounded.py`): a big file never holds the server."""
    spec = session_spec(shared, state)
    tokenizer = current(shared, state).model.tokenizer if with_tokens else None
    return bounded(spec.load, tokenizer, limits=shared.limits, what=f"reading {Path(spec.path).name}")


def parse_mapping(text: str) -> dict[str, str]:
    mapping = {}
    for item in filter(None, (p.strip() for p in (text or "").replace("\n", ",").split(","))):
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise LoraEqError(f"column mapping {item!r}: write it as their_column=our_field")
        mapping[src.strip()] = dst.strip()
    return mapping


def upload_source(file, sample_name) -> Path:
    if file:
        return Path(file if isinstance(file, str) else file.name)
    if sample_name:
        if sample_name not in SAMPLE_NAMES:
            raise LoraEqError(f"sample {str(sample_name)[:80]!r}: choose one of {', '.join(SAMPLE_NAMES)}")
        return SAMPLES / sample_name
    raise LoraEqError("upload a file or choose a sample dataset first")


def receive(shared: Shared, state: Session, source: Path) -> Path:
    """The session's own copy of an upload, within the upload limits (uploads of others never mix in)."""
    size = source.stat().st_size
    limits = shared.limits
    if size > limits.upload_bytes:
        raise LoraEqError(f"{source.name}: {size / 2**20:.0f} MB, over the upload limit of {limits.upload_bytes / 2**20:.0f} MB")
    own = shared.area.uploads(state) / upload_name(source.name)
    replaced = own.stat().st_size if own.is_file() else 0
    if shared.area.uploaded_bytes(state) - replaced + size > limits.session_bytes:
        raise LoraEqError(f"this session's uploads would pass its quota of {limits.session_bytes / 2**20:.0f} MB: "
                          "delete runs or start a new session")
    shutil.copyfile(source, own)
    return own


def upload_name(name: str) -> str:
    clean = _UNSAFE.sub("_", Path(name).name).lstrip(".")[-100:]
    return clean or "upload.jsonl"
