"""What every classifier produces: probabilities per head, and the output columns they become.

A classifier (transformer, baseline or their ensemble) follows one small protocol
(:class:`Classifier`), like scikit-learn's ``predict_proba``: probabilities for overall
sentiment in :data:`~pipeline.catalog.SENTIMENTS` order and for each dimension in
:data:`~pipeline.catalog.DIM_LABELS` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.catalog import DIM_LABELS, DIMENSIONS, PREDICTION_COLUMNS, SENTIMENTS

#: Output heads and their number of classes, in the order of the model's logits.
HEADS: dict[str, int] = {"sentiment": len(SENTIMENTS), **{d: len(DIM_LABELS) for d in DIMENSIONS}}


class Classifier(Protocol):
    """What the scoring run needs from a model."""

    version: str

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        """Probabilities for ``reviews`` (columns ``text_norm``, ``tokens``, ``lang``):
        ``sentiment`` (n, 3) in SENTIMENTS order and each dimension (n, 4) in DIM_LABELS order.
        """
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, classes)`` logits (max subtracted first, for stability)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def split_heads(logits: Any) -> dict[str, Any]:
    """``(batch, sum(HEADS))`` logits (tensor or array) -> one block per head."""
    out, start = {}, 0
    for name, size in HEADS.items():
        out[name] = logits[:, start : start + size]
        start += size
    return out


def label_columns(probs: dict[str, np.ndarray]) -> pd.DataFrame:
    """Probabilities -> ``sentiment``, ``p_*``, and per dimension the label + confidence (the
    prediction columns of ``reviews``, :data:`pipeline.catalog.PREDICTION_COLUMNS`)."""
    sent = probs["sentiment"]
    out = {"sentiment": np.asarray(SENTIMENTS, dtype=object)[sent.argmax(axis=1)]}
    for i, name in enumerate(SENTIMENTS):
        out[f"p_{name}"] = sent[:, i].astype(np.float64)
    for dim in DIMENSIONS:
        p = probs[dim]
        out[dim] = np.asarray(DIM_LABELS, dtype=object)[p.argmax(axis=1)]
        out[f"{dim}_confidence"] = p.max(axis=1).astype(np.float64)
    return pd.DataFrame(out)[list(PREDICTION_COLUMNS)]  # the catalog's columns, in its order


def length_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices of ``lengths`` in batches of at most ``batch_size``, shortest first (a stable
    sort, so equal lengths keep their order): each batch pads to little more than its own
    length, as sentence-transformers' ``encode`` does. Callers restore the input order."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
