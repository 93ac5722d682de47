"""The real MiniLM embedder: similar sentences score higher than unrelated ones."""

from __future__ import annotations

import numpy as np
import pytest

from evals.similarity import cosine_pairs, embed

pytestmark = pytest.mark.integration


def test_paraphrase_scores_higher_than_unrelated_text():
    same, other = cosine_pairs(
        ["The capital of Varnis is Teskel.", "The capital of Varnis is Teskel."],
        ["Teskel is the capital city of Varnis.", "Bake the bread for forty minutes."],
    )
    assert same > 0.8 and other < 0.3 and same > other


def test_identical_texts_score_one_and_vectors_are_unit_length():
    assert cosine_pairs(["crisp autumn air"], ["crisp autumn air"])[0] == pytest.approx(1.0, abs=1e-5)
    vectors = embed(["a", "b c"])
    assert vectors.shape == (2, 384)
    assert (abs((vectors**2).sum(axis=1) - 1) < 1e-4).all()


def test_pairs_need_equal_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        cosine_pairs(["a"], [])


def test_a_repeated_text_is_embedded_once_and_keeps_its_place():
    vectors = embed(["the sky is blue", "a cat sat", "the sky is blue", ""])
    assert vectors.shape == (4, 384)
    assert np.array_equal(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
