"""Held-out metric definitions, including the bootstrap intervals of the dimension figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.catalog import DIM_LABELS, DIMENSIONS
from pipeline.training.metrics import (
    dimension_hits,
    dimension_metrics,
    macro_mention_f1,
    paired_difference,
    row_accuracy,
)


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


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    hits = np.random.default_rng(0).random(500) < 0.8
    assert paired_difference(row_accuracy, (hits,), (hits,)) == {
        "delta": 0.0, "ci": [0.0, 0.0], "n": 500}


def test_paired_interval_is_narrower_than_the_figures_own_when_models_agree_on_most_rows():
    rng = np.random.default_rng(3)
    a = rng.random(800) < 0.85
    b = a.copy()
    b[np.flatnonzero(~a)[:24]] = True  # b fixes 24 of a's errors and keeps the rest
    diff = paired_difference(row_accuracy, (a,), (b,))
    assert diff["delta"] == 0.03
    lo, hi = diff["ci"]
    assert 0 < lo < 0.03 < hi  # a gain of 3 points that never turns into a loss
    # each accuracy alone is uncertain by about +-2.5 points: unpaired, the two intervals overlap
    own = paired_difference(row_accuracy, (np.zeros(800, bool),), (a,))["ci"]
    assert own[1] - own[0] > 1.5 * (hi - lo)


def test_paired_difference_of_mention_f1_matches_the_reported_figures():
    gold, good = _rows(300, 0.1, seed=4)
    _, worse = _rows(300, 0.4, seed=4)
    mentioned, pred_good, _ = dimension_hits(gold, good)
    _, pred_worse, _ = dimension_hits(gold, worse)
    diff = paired_difference(macro_mention_f1, (mentioned, pred_worse), (mentioned, pred_good))
    expected = (dimension_metrics(gold, good)["mention_f1_macro"]
                - dimension_metrics(gold, worse)["mention_f1_macro"])
    assert abs(diff["delta"] - expected) < 1e-3
    assert diff["ci"][0] > 0


def test_evaluate_prints_each_models_difference_from_the_first():
    from pipeline.training.evaluate import paired_differences, paired_table

    gold, good = _rows(300, 0.1, seed=5)
    _, worse = _rows(300, 0.4, seed=5)
    rows = {}
    for name, probs in (("worse", worse), ("good", good)):
        mentioned, predicted, hit = dimension_hits(gold, probs)
        rows[name] = {"dimension mention F1 (macro)": (mentioned, predicted),
                      "sentiment acc corpus": (hit[:, 1],)}
    results = {"worse": {}, "good": {"vs_first": {"reference": "worse",
                                                  **paired_differences(rows["worse"],
                                                                       rows["good"])}}}
    table = paired_table(results)
    assert list(table.columns) == ["good - worse"]
    assert list(table.index) == ["sentiment acc corpus", "dimension mention F1 (macro)"]
    delta = results["good"]["vs_first"]["dimension mention F1 (macro)"]["delta"]
    assert table.loc["dimension mention F1 (macro)", "good - worse"].startswith(
        f"{100 * delta:+.2f} (+")


def test_acsa_figures_by_hand():
    from pipeline.training.metrics import acsa_counts, acsa_metrics

    none = dict.fromkeys(("logistics", "quality", "service", "privacy"), "none")
    gold = pd.DataFrame([
        {"sentiment": "positive", **none, "quality": "positive", "logistics": "negative"},
        {"sentiment": "negative", **none, "service": "negative"},
        {"sentiment": "positive", **none},
    ])
    copy_tone = pd.DataFrame([
        {"sentiment": "positive", **none, "quality": "positive", "logistics": "positive"},
        {"sentiment": "negative", **none, "service": "negative"},
        {"sentiment": "positive", **none, "privacy": "negative"},
    ])
    m = acsa_metrics(acsa_counts(gold, copy_tone))
    # gold tuples: 3; predicted 4; right: quality+, service-
    assert (m["tuple_precision"], m["tuple_recall"]) == (0.5, round(2 / 3, 4))
    assert m["tuple_f1"] == round(2 * 2 / (3 + 4), 4)
    # complaints: gold {logistics-, service-}, predicted {service-, privacy-}
    assert m["complaint_f1"] == 0.5
    # the one contrast label (logistics- in a positive review) was copied from the tone
    assert (m["contrast_labels"], m["contrast_accuracy"]) == (1, 0.0)
    assert acsa_metrics(acsa_counts(gold, gold))["contrast_accuracy"] == 1.0


def test_acsa_paired_difference_matches_the_figures():
    from pipeline.training.metrics import ACSA_STATS, acsa_counts, acsa_metrics

    rng = np.random.default_rng(0)
    labels = np.array(["none", "positive", "negative", "neutral"])
    dims = ("logistics", "quality", "service", "privacy")

    def frame():
        return pd.DataFrame({"sentiment": rng.choice(["positive", "negative"], 200),
                             **{d: rng.choice(labels, 200) for d in dims}})

    gold, a, b = frame(), frame(), frame()
    ca, cb = acsa_counts(gold, a), acsa_counts(gold, b)
    for metric, (fields, stat) in ACSA_STATS.items():
        diff = paired_difference(stat, tuple(ca[f] for f in fields), tuple(cb[f] for f in fields))
        expected = acsa_metrics(cb)[metric] - acsa_metrics(ca)[metric]
        assert abs(diff["delta"] - expected) < 1e-3
        assert diff["ci"][0] <= diff["delta"] <= diff["ci"][1]
