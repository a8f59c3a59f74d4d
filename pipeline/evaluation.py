"""Model-quality metrics shared by ``revsat evaluate``, the baseline and the model card.

Definitions:
- sentiment: accuracy and macro-F1 over the classes present in the gold labels;
- dimension *mention detection*: binary F1 of "mentioned" (label != none), per dimension;
  ``mention_f1_macro`` averages the four;
- dimension *polarity accuracy*: over rows whose gold label is a polarity, whether the model's
  most likely polarity (positive/negative/neutral, ignoring ``none``) matches; pooled over the
  four dimensions. This isolates polarity from detection.

The dimension test rows are few (a few hundred, some dimensions with a few dozen mentions), so
both dimension figures come with a 95 % bootstrap interval over rows (``*_ci``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from pipeline.schema import DIM_LABELS, DIMENSIONS, SENTIMENTS


def sentiment_metrics(gold: pd.Series, probs: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of overall sentiment (``probs`` in SENTIMENTS order)."""
    pred = np.asarray(SENTIMENTS)[probs.argmax(axis=1)]
    labels = sorted(set(gold))
    return {
        "n": len(gold),
        "accuracy": round(float(accuracy_score(gold, pred)), 4),
        "macro_f1": round(float(f1_score(gold, pred, labels=labels, average="macro")), 4),
    }


def binary_sentiment_accuracy(gold: pd.Series, probs: np.ndarray) -> float:
    """Accuracy on positive/negative corpora where the model's neutral is not an option."""
    pos, neg = SENTIMENTS.index("positive"), SENTIMENTS.index("negative")
    pred = np.where(probs[:, pos] >= probs[:, neg], "positive", "negative")
    return round(float((pred == gold.to_numpy()).mean()), 4)


def dimension_metrics(gold: pd.DataFrame, probs: dict[str, np.ndarray]) -> dict[str, object]:
    """Mention-detection F1 per dimension and pooled polarity accuracy (see module doc)."""
    out: dict[str, object] = {"n": len(gold)}
    f1s = []
    hits = total = 0
    mentioned_gold, mentioned_pred, polarity_hit = [], [], []
    polar = [DIM_LABELS.index(p) for p in ("positive", "negative", "neutral")]
    for dim in DIMENSIONS:
        p = probs[dim]
        pred = np.asarray(DIM_LABELS)[p.argmax(axis=1)]
        g = gold[dim].to_numpy()
        f1 = f1_score(g != "none", pred != "none", zero_division=0.0)
        f1s.append(f1)
        mentioned = g != "none"
        pol_pred = np.asarray(["positive", "negative", "neutral"])[
            p[:, polar].argmax(axis=1)
        ]
        dim_hits = int((pol_pred[mentioned] == g[mentioned]).sum())
        mentioned_gold.append(mentioned)
        mentioned_pred.append(pred != "none")
        polarity_hit.append(mentioned & (pol_pred == g))
        hits += dim_hits
        total += int(mentioned.sum())
        out[dim] = {
            "mentions": int(mentioned.sum()),
            "mention_f1": round(float(f1), 4),
            "polarity_accuracy": round(dim_hits / max(int(mentioned.sum()), 1), 4),
        }
    out["mention_f1_macro"] = round(float(np.mean(f1s)), 4)
    out["polarity_accuracy"] = round(hits / max(total, 1), 4)
    f1_ci, polarity_ci = bootstrap_dimension_ci(np.stack(mentioned_gold, axis=1),
                                                np.stack(mentioned_pred, axis=1),
                                                np.stack(polarity_hit, axis=1))
    out["mention_f1_macro_ci"], out["polarity_accuracy_ci"] = f1_ci, polarity_ci
    return out


def bootstrap_dimension_ci(gold: np.ndarray, pred: np.ndarray, polarity_hit: np.ndarray,
                           reps: int = 2000, seed: int = 0) -> tuple[list[float], list[float]]:
    """95 % percentile-bootstrap intervals of macro mention F1 and pooled polarity accuracy.

    ``gold``/``pred``: (rows, dimensions) booleans "mentioned"; ``polarity_hit``: gold
    mentioned and polarity right. Rows are resampled with replacement (seeded, so the interval
    is the same on every run).
    """
    n = len(gold)
    if n == 0:
        return [0.0, 0.0], [0.0, 0.0]
    idx = np.random.default_rng(seed).integers(0, n, (reps, n))
    g, p = gold[idx], pred[idx]  # (reps, rows, dimensions)
    tp = (g & p).sum(axis=1)
    f1 = 2 * tp / np.maximum(g.sum(axis=1) + p.sum(axis=1), 1)
    mentions = g.sum(axis=(1, 2))
    polarity = polarity_hit[idx].sum(axis=(1, 2)) / np.maximum(mentions, 1)

    def interval(x: np.ndarray) -> list[float]:
        return [round(float(v), 4) for v in np.percentile(x, [2.5, 97.5])]

    return interval(f1.mean(axis=1)), interval(polarity)
