"""Where LoRA EQ keeps derived files (converted models, analyses), atomic JSON writes and the JSON reader.

The cache is only ever written by us; user model files are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "LORAEQ_CACHE"


def cache_dir(*parts: str) -> Path:
    """`$LORAEQ_CACHE` (default `~/.cache/loraeq`) joined with `parts`, created."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "loraeq").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON so that a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict:
    """The JSON object in `path`, or {} when it is missing, unreadable or not an object (a stale
    cache entry, a file being written): the one reader of our own JSON files."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place; a concurrent winner is kept."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
