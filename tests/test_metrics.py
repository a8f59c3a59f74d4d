"""Held-out metric definitions, including the bootstrap intervals of the dimension figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.evaluation import dimension_metrics
from pipeline.schema import DIM_LABELS, DIMENSIONS


def _rows(n: int, error_rate: float, seed: int = 1) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    gold = {d: rng.choice(DIM_LABELS, n, p=[0.6, 0.2, 0.15, 0.05]) for d in DIMENSIONS}
    probs = {}
    for d in DIMENSIONS:
        pred = np.array([DIM_LABELS.index(x) for x in gold[d]])
        wrong = rng.random(n) < error_rate
        pred[wrong] = rng.integers(0, len(DIM_LABELS), wrong.sum())
        probs[d] = np.eye(len(DIM_LABELS))[pred] * 0.9 + 0.025
    return pd.DataFrame(gold), probs


def test_perfect_predictions_give_a_point_interval():
    gold, probs = _rows(200, 0.0)
    m = dimension_metrics(gold, probs)
    assert m["mention_f1_macro"] == 1.0 and m["mention_f1_macro_ci"] == [1.0, 1.0]
    assert m["polarity_accuracy_ci"] == [1.0, 1.0]


def test_interval_brackets_the_estimate_and_narrows_with_more_rows():
    small = dimension_metrics(*_rows(150, 0.25))
    large = dimension_metrics(*_rows(3000, 0.25))
    for m in (small, large):
        lo, hi = m["mention_f1_macro_ci"]
        assert lo < m["mention_f1_macro"] < hi
        lo, hi = m["polarity_accuracy_ci"]
        assert lo < m["polarity_accuracy"] < hi
    width = lambda m, k: m[k][1] - m[k][0]  # noqa: E731
    assert width(large, "mention_f1_macro_ci") < width(small, "mention_f1_macro_ci") / 2
    assert dimension_metrics(*_rows(150, 0.25)) == small  # seeded: same interval every run
