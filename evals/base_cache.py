"""The base model's share of a proof, kept between proofs: its greedy answers to the held-out
prompts and its scores on a train sample.

What the base answers and how it scores depend only on the base itself (its content fingerprint,
precision and device), the token ids it is given, and how they are batched, which is a function
of those ids alone (`answers.plan_answer_batches`, `losses.plan_batches`). So a second proof of a
run, or the proof of another run that shares its held-out split or train sample, reads them here
instead of computing them again, and its report has the very same numbers. The key also holds the
generation budget, the stop tokens and the torch / transformers versions; anything else is a
miss. Entries are small JSON files under `$LORAEQ_CACHE/proof-base`, written atomically; an
unreadable one is a miss. The base's held-out pass is not cached: the divergence of every variant
is measured against its logits, which are too large to keep.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from adapters.base.tokenize import Encoded
from adapters.cache import cache_dir, read_json, write_json_atomic

from .losses import Scores

VERSION = 1  # bump when what is stored, or how it is computed, changes


@dataclass(frozen=True)
class BaseCache:
    """Where one loaded base's proof results are kept."""

    fingerprint: str
    precision: str
    device: str

    @classmethod
    def for_base(cls, base) -> "BaseCache":
        """For a loaded base (`adapters.base.loading.LoadedModel`)."""
        return cls(base.fingerprint, base.precision, str(base.device))

    def _path(self, kind: str, payload: object):
        import torch
        import transformers

        key = json.dumps([VERSION, kind, self.fingerprint, self.precision, self.device, torch.__version__,
                          transformers.__version__, payload], separators=(",", ":"))
        return cache_dir("proof-base") / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def answers(self, ids: list[list[int]], max_new_tokens: int, batch_size: int, stop_ids: set[int]):
        """The cached greedy answers to these prompts, or None."""
        data = read_json(self._answers_path(ids, max_new_tokens, batch_size, stop_ids))
        answers = data.get("answers")
        if isinstance(answers, list) and len(answers) == len(ids) and all(isinstance(a, str) for a in answers):
            return answers
        return None

    def keep_answers(self, ids, max_new_tokens: int, batch_size: int, stop_ids: set[int], answers: list[str]) -> None:
        write_json_atomic(self._answers_path(ids, max_new_tokens, batch_size, stop_ids), {"answers": list(answers)})

    def _answers_path(self, ids, max_new_tokens, batch_size, stop_ids):
        return self._path("answers", [[list(x) for x in ids], max_new_tokens, batch_size, sorted(stop_ids)])

    def scores(self, encoded: list[Encoded]) -> Scores | None:
        """The cached scores on these conversations, or None."""
        data = read_json(self._scores_path(encoded))
        loss, logprobs = data.get("loss"), data.get("token_logprobs")
        if not (isinstance(loss, list) and isinstance(logprobs, list) and len(loss) == len(logprobs) == len(encoded)):
            return None
        return Scores(np.array(loss, dtype=np.float64), [np.array(x, dtype=np.float64) for x in logprobs])

    def keep_scores(self, encoded: list[Encoded], scores: Scores) -> None:
        # JSON writes a float64 as its shortest round-trip repr: read back, every bit is the same.
        write_json_atomic(self._scores_path(encoded), {"loss": [float(x) for x in scores.loss],
                                                       "token_logprobs": [x.tolist() for x in scores.token_logprobs]})

    def _scores_path(self, encoded: list[Encoded]):
        from .losses import MAX_ROWS, POSITION_BUDGET, TOKEN_BUDGET  # how the rows are batched

        return self._path("scores", [[MAX_ROWS, POSITION_BUDGET, TOKEN_BUDGET],
                                     [[list(e.input_ids), list(e.labels)] for e in encoded]])
