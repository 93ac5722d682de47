"""Does an answer say what the reference says? A per-row yes/no a person can check by eye.

An answer matches its reference when it contains at least half of the reference's key words:
the words of the reference that are neither in the question nor common function words (for
"What is the capital of Veloria?" -> "The capital of Veloria is Marnholt." the key word is
"marnholt"). Embedding similarity alone cannot make this call: MiniLM puts "The capital of
Veloria is Paris." as close to that reference as the right answer. When a reference has no key
word (it only repeats the question), the similarity threshold decides. Both were measured on
two invented fact sets the tests do not use (benchmarks/calibrate_proof.py, seeds 11 and 12,
140 answers of base and trained variant): "contains half the key words" agreed with "contains
the fact's answer" on 97% and 94% of the answers; similarity >= 0.85 separated right from wrong
answers on all 140 (0.80: 98%, 0.70: 96%). This module does not decide verdicts (`verdict.py`).
"""

from __future__ import annotations

import re

KEY_RECALL = 0.5  # share of the reference's key words an answer must contain
SIMILARITY_MATCH = 0.85  # cosine to the reference, when the reference has no key word

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
COMMON = frozenset("""
a an the and or but if of to in on at by for from with without into onto over under about as is are was were be been
being am do does did done have has had having it its this that these those there here what which who whom whose when
where why how not no yes so than then too very can could will would shall should may might must i you he she we they
me him her us them my your his our their mine yours also just only up down out off again more most some any each every
all both few other such own same s t don doesn didn isn aren wasn weren won wouldn shouldn couldn called known name
tell please one
""".split())


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text or "")]


def key_words(reference: str, question: str = "") -> set[str]:
    """The words that carry the reference's content: not in the question, not common."""
    asked = set(words(question))
    return {w for w in words(reference) if w not in COMMON and w not in asked and (len(w) > 2 or w.isdigit())}


def key_recall(answer: str, reference: str, question: str = "") -> float | None:
    """Share of the reference's key words found in the answer; None when it has none."""
    keys = key_words(reference, question)
    if not keys:
        return None
    said = set(words(answer))
    return len(keys & said) / len(keys)


def matches(answer: str, reference: str, question: str = "", similarity: float | None = None) -> bool:
    """Whether the answer says what the reference says (see the module docstring)."""
    recall = key_recall(answer, reference, question)
    if recall is not None:
        return recall >= KEY_RECALL
    return similarity is not None and similarity >= SIMILARITY_MATCH
