"""The retrieval core's fusion (``services/retrieval.py``): score-aware, never the rank-only trap of RRF."""

from __future__ import annotations

import pytest

from pirag.daemon.services.retrieval import Completed, Weights, fuse, within_budget

W = Weights(vector=0.5)


def pool(*keys: str, **extra: object) -> Completed[str]:
    return Completed(rows={key: key for key in keys}, **extra)  # type: ignore[arg-type]


def test_a_strong_keyword_only_hit_beats_items_both_sides_rank_weakly() -> None:
    # "zanzibar quokka": one chunk holds the rare words (BM25 12, similarity 0.30), the vector side's list is
    # noise (0.31-0.33) that matches a common word weakly. RRF put the keyword-only hit last (1/61).
    vector = [("noise1", 0.33), ("noise2", 0.32), ("noise3", 0.31)]
    keyword = [("edited", 12.0), ("noise3", 0.8), ("noise2", 0.7)]
    completed = pool("noise1", "noise2", "noise3", "edited", similarity={"edited": 0.30}, bm25={"noise1": 0.0})
    ranked = fuse(vector, keyword, completed, W, "hybrid")
    assert ranked[0].key == "edited"
    assert ranked[0].keyword_rank == 1 and ranked[0].vector_rank is None and ranked[0].similarity == 0.30


def test_true_scores_for_the_other_side_decide_between_near_ties() -> None:
    # both halves: "a" is best by meaning, "b" by words; the other side's true score (filled in by the
    # completing read) makes "c", second on both, the winner
    vector = [("a", 0.80), ("c", 0.78)]
    keyword = [("b", 10.0), ("c", 9.5)]
    completed = pool("a", "b", "c", similarity={"b": 0.40}, bm25={"a": 0.5})
    assert [item.key for item in fuse(vector, keyword, completed, W, "hybrid")][0] == "c"


def test_one_sided_modes_rank_by_their_own_score() -> None:
    vector = [("a", 0.9), ("b", 0.5)]
    keyword = [("b", 3.0), ("a", 1.0)]
    completed = pool("a", "b")
    assert [item.key for item in fuse(vector, [], completed, W, "vector")] == ["a", "b"]
    assert [item.key for item in fuse([], keyword, completed, W, "keyword")] == ["b", "a"]


def test_phrase_bonus_and_missing_rows() -> None:
    vector = [("a", 0.6), ("b", 0.6), ("gone", 0.99)]
    keyword = [("a", 2.0), ("b", 2.0)]
    ranked = fuse(vector, keyword, pool("a", "b", phrase={"b"}), W, "hybrid")
    assert [item.key for item in ranked] == ["b", "a"]   # "gone" was deleted since the index answered
    assert ranked[0].score - ranked[1].score == pytest.approx(W.phrase)


def test_budget() -> None:
    assert within_budget(["aaaa", "bbbb", "cc"], 0) == (3, None, False)
    assert within_budget(["aaaa", "bbbb", "cc"], 9) == (2, None, True)
    assert within_budget(["aaaa", "bbbb"], 3) == (1, "aaa", True)
