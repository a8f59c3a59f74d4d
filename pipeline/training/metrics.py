"""Model-quality metrics shared by ``revsat evaluate``, the baseline and the model card.

Definitions:
- sentiment: accuracy and macro-F1 over the classes present in the gold labels;
- dimension *mention detection*: binary F1 of "mentioned" (label != none), per dimension;
  ``mention_f1_macro`` averages the four;
- dimension *polarity accuracy*: over rows whose gold label is a polarity, whether the model's
  most likely polarity (positive/negative/neutral, ignoring ``none``) matches; pooled over the
  four dimensions. This isolates polarity from detection.

- aspect-category sentiment (ACSA) *tuple* precision / recall / F1: over (review, dimension,
  polarity) tuples with polarity not ``none``, pooled (micro) over reviews and dimensions;
- *complaint* F1: the same over negative tuples only (the complaint themes);
- *contrast accuracy*: over gold dimension polarities that differ from the review's gold
  overall sentiment, the share predicted exactly (a model that copies the tone scores 0).

The dimension test rows are few (a few hundred, some dimensions with a few dozen mentions), so
both dimension figures come with a 95 % bootstrap interval over rows (``*_ci``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS


def sentiment_metrics(gold: pd.Series, probs: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of overall sentiment (``probs`` in SENTIMENTS order)."""
    pred = np.asarray(SENTIMENTS)[probs.argmax(axis=1)]
    labels = sorted(set(gold))
    return {
        "n": len(gold),
        "accuracy": round(float(accuracy_score(gold, pred)), 4),
        "macro_f1": round(float(f1_score(gold, pred, labels=labels, average="macro")), 4),
    }


def sentiment_hits(gold: pd.Series, probs: np.ndarray) -> np.ndarray:
    """Per-row correctness behind the accuracy ``revsat evaluate`` reports: positive vs
    negative on two-class rows (:func:`binary_sentiment_accuracy`), else the argmax."""
    gold = gold.to_numpy()
    if set(gold) <= {"positive", "negative"}:
        return _positive_or_negative(probs) == gold
    return np.asarray(SENTIMENTS)[probs.argmax(axis=1)] == gold


def _positive_or_negative(probs: np.ndarray) -> np.ndarray:
    pos, neg = SENTIMENTS.index("positive"), SENTIMENTS.index("negative")
    return np.where(probs[:, pos] >= probs[:, neg], "positive", "negative")


def binary_sentiment_accuracy(gold: pd.Series, probs: np.ndarray) -> float:
    """Accuracy on positive/negative corpora where the model's neutral is not an option."""
    return round(float((_positive_or_negative(probs) == gold.to_numpy()).mean()), 4)


def dimension_hits(gold: pd.DataFrame,
                   probs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row, per-dimension booleans ``(rows, dimensions)``: gold mentioned, predicted
    mentioned, and polarity right on a gold mention (the model's most likely polarity,
    ignoring ``none``)."""
    polar = [DIM_LABELS.index(p) for p in ("positive", "negative", "neutral")]
    g_cols, p_cols, hit_cols = [], [], []
    for dim in DIMENSIONS:
        p = probs[dim]
        g = gold[dim].to_numpy()
        pol_pred = np.asarray(["positive", "negative", "neutral"])[p[:, polar].argmax(axis=1)]
        g_cols.append(g != "none")
        p_cols.append(p.argmax(axis=1) != DIM_LABELS.index("none"))
        hit_cols.append((g != "none") & (pol_pred == g))
    return np.stack(g_cols, axis=1), np.stack(p_cols, axis=1), np.stack(hit_cols, axis=1)


def dimension_metrics(gold: pd.DataFrame, probs: dict[str, np.ndarray]) -> dict[str, object]:
    """Mention-detection F1 per dimension and pooled polarity accuracy (see module doc)."""
    mentioned, predicted, polarity_hit = dimension_hits(gold, probs)
    out: dict[str, object] = {"n": len(gold)}
    for j, dim in enumerate(DIMENSIONS):
        mentions = int(mentioned[:, j].sum())
        out[dim] = {
            "mentions": mentions,
            "mention_f1": round(float(f1_score(mentioned[:, j], predicted[:, j],
                                               zero_division=0.0)), 4),
            "polarity_accuracy": round(int(polarity_hit[:, j].sum()) / max(mentions, 1), 4),
        }
    out["mention_f1_macro"] = round(float(macro_mention_f1(mentioned, predicted)), 4)
    out["polarity_accuracy"] = round(float(pooled_polarity_accuracy(mentioned, polarity_hit)), 4)
    f1_ci, polarity_ci = bootstrap_dimension_ci(mentioned, predicted, polarity_hit)
    out["mention_f1_macro_ci"], out["polarity_accuracy_ci"] = f1_ci, polarity_ci
    return out


def macro_mention_f1(gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Macro mention F1 over the last axis (dimensions) of boolean ``(..., rows, dimensions)``
    arrays; one value per leading index (0 where a dimension is neither gold nor predicted)."""
    tp = (gold & pred).sum(axis=-2)
    f1 = 2 * tp / np.maximum(gold.sum(axis=-2) + pred.sum(axis=-2), 1)
    return f1.mean(axis=-1)


def pooled_polarity_accuracy(gold: np.ndarray, polarity_hit: np.ndarray) -> np.ndarray:
    """Right polarities over gold mentions, pooled over rows and dimensions (last two axes)."""
    return polarity_hit.sum(axis=(-2, -1)) / np.maximum(gold.sum(axis=(-2, -1)), 1)


def paired_bootstrap_ci(statistic: Callable[..., np.ndarray], arrays: tuple[np.ndarray, ...],
                        reps: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of ``statistic(*arrays)``: rows (the first axis of
    every array) are resampled with replacement, the same rows for every array (what
    :func:`scipy.stats.bootstrap` resamples is the row index; seeded: the same interval every
    run). ``statistic`` maps per-row arrays with a leading resample axis, ``(reps, rows,
    ...)``, to one value per resample."""
    n = len(arrays[0])
    if n < 2:  # nothing to resample: the interval is the point
        point = float(statistic(*(a[None] for a in arrays))[0])
        return [round(point, 4)] * 2

    def resampled(index: np.ndarray, axis: int = -1) -> np.ndarray:
        index = np.atleast_2d(index)  # (resamples, rows)
        return statistic(*(a[index] for a in arrays))

    result = stats.bootstrap((np.arange(n),), resampled, n_resamples=reps,
                             method="percentile", vectorized=True, confidence_level=0.95,
                             rng=np.random.default_rng(seed))
    ci = result.confidence_interval
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def bootstrap_dimension_ci(gold: np.ndarray, pred: np.ndarray, polarity_hit: np.ndarray,
                           reps: int = 2000, seed: int = 0) -> tuple[list[float], list[float]]:
    """95 % percentile-bootstrap intervals of macro mention F1 and pooled polarity accuracy.

    ``gold``/``pred``: (rows, dimensions) booleans "mentioned"; ``polarity_hit``: gold
    mentioned and polarity right. Rows are resampled with replacement (seeded, so the interval
    is the same on every run).
    """
    if len(gold) == 0:
        return [0.0, 0.0], [0.0, 0.0]
    return (paired_bootstrap_ci(macro_mention_f1, (gold, pred), reps, seed),
            paired_bootstrap_ci(pooled_polarity_accuracy, (gold, polarity_hit), reps, seed))


def paired_difference(stat: Callable[..., np.ndarray], reference: tuple[np.ndarray, ...],
                      other: tuple[np.ndarray, ...], reps: int = 2000,
                      seed: int = 0) -> dict[str, object]:
    """``stat(other) - stat(reference)`` on the same rows, with a 95 % paired bootstrap interval.

    Both models are scored on one resample of the rows at a time, so the interval reflects
    how much the *difference* varies, which is much less than each figure's own interval when
    two models agree on most rows. ``stat`` maps per-row arrays with a leading resample axis,
    ``(reps, rows, ...)``, to one value per resample.
    """
    n = len(reference[0])
    if n == 0:
        return {"delta": 0.0, "ci": [0.0, 0.0], "n": 0}
    k = len(other)

    def difference(*arrays: np.ndarray) -> np.ndarray:
        return stat(*arrays[:k]) - stat(*arrays[k:])

    point = difference(*(x[None] for x in (*other, *reference)))[0]
    return {"delta": round(float(point), 4),
            "ci": paired_bootstrap_ci(difference, (*other, *reference), reps, seed), "n": n}


def row_accuracy(hit: np.ndarray) -> np.ndarray:
    """Accuracy from per-row hits ``(..., rows)``: a :func:`paired_difference` statistic."""
    return hit.mean(axis=-1)


# ------------------------------------------------------------------ aspect-category tuples

_POLAR = ("positive", "negative", "neutral")


def predicted_labels(probs: dict[str, np.ndarray]) -> pd.DataFrame:
    """The most probable label per head, as a frame with ``sentiment`` and each dimension."""
    out = {"sentiment": np.asarray(SENTIMENTS)[probs["sentiment"].argmax(axis=1)]}
    for dim in DIMENSIONS:
        out[dim] = np.asarray(DIM_LABELS)[probs[dim].argmax(axis=1)]
    return pd.DataFrame(out)


def acsa_counts(gold: pd.DataFrame, pred: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-review counts behind the aspect-category figures (one value per row, so the
    figures can be bootstrapped and compared paired with :func:`paired_difference`).

    A tuple is (review, dimension, polarity) with polarity not ``none``; a complaint tuple is
    one with polarity ``negative``. A contrast label is a gold dimension polarity (not
    ``none``) that differs from the review's gold overall sentiment: where a model that copies
    the overall tone onto every dimension is wrong.
    """
    g = gold[list(DIMENSIONS)].to_numpy()
    p = pred[list(DIMENSIONS)].to_numpy()
    gold_tuple, pred_tuple = np.isin(g, _POLAR), np.isin(p, _POLAR)
    contrast = gold_tuple & (g != gold["sentiment"].to_numpy()[:, None])
    return {
        "tuple_tp": (gold_tuple & (g == p)).sum(axis=1),
        "tuple_gold": gold_tuple.sum(axis=1),
        "tuple_pred": pred_tuple.sum(axis=1),
        "complaint_tp": ((g == "negative") & (p == "negative")).sum(axis=1),
        "complaint_gold": (g == "negative").sum(axis=1),
        "complaint_pred": (p == "negative").sum(axis=1),
        "contrast_hit": (contrast & (g == p)).sum(axis=1),
        "contrast_n": contrast.sum(axis=1),
    }


def pooled_f1(tp: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Micro F1 from per-row true positives and gold/predicted counts (last axis: rows)."""
    return 2 * tp.sum(axis=-1) / np.maximum(gold.sum(axis=-1) + pred.sum(axis=-1), 1)


def pooled_ratio(hit: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Hits over cases pooled over rows (last axis): contrast accuracy from per-row counts."""
    return hit.sum(axis=-1) / np.maximum(n.sum(axis=-1), 1)


def acsa_metrics(counts: dict[str, np.ndarray]) -> dict[str, float]:
    """Contrast accuracy, tuple and complaint precision / recall / F1 from :func:`acsa_counts`."""
    out: dict[str, float] = {"reviews": len(counts["tuple_tp"])}
    for name in ("tuple", "complaint"):
        tp, gold, pred = (int(counts[f"{name}_{k}"].sum()) for k in ("tp", "gold", "pred"))
        out[f"{name}_precision"] = round(tp / pred, 4) if pred else 0.0
        out[f"{name}_recall"] = round(tp / gold, 4) if gold else 0.0
        out[f"{name}_f1"] = round(2 * tp / (gold + pred), 4) if gold + pred else 0.0
        out[f"{name}_gold"] = gold
    n = int(counts["contrast_n"].sum())
    out["contrast_accuracy"] = round(int(counts["contrast_hit"].sum()) / n, 4) if n else 0.0
    out["contrast_labels"] = n
    return out


#: The figures :func:`acsa_metrics` reports that a paired comparison bootstraps, with the
#: counts and statistic behind each.
ACSA_STATS: dict[str, tuple[tuple[str, ...], Callable[..., np.ndarray]]] = {
    "contrast_accuracy": (("contrast_hit", "contrast_n"), pooled_ratio),
    "tuple_f1": (("tuple_tp", "tuple_gold", "tuple_pred"), pooled_f1),
    "complaint_f1": (("complaint_tp", "complaint_gold", "complaint_pred"), pooled_f1),
}
