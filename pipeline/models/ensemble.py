"""The transformer's calibrated probabilities averaged with the TF-IDF baseline's."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from pipeline.models.heads import HEADS, Classifier


class EnsembleClassifier:
    """p = w * p_transformer + (1 - w) * p_baseline, with one weight for every head or one per
    head.

    Set by ``"ensemble": {"baseline": "<folder, relative to the model>", "weight": w}`` in
    ``revsat_model.json``, ``w`` a number or ``{head: w}`` (heads not named take 1: the
    transformer alone). The two models make different errors (subwords in context vs jieba
    n-grams), so for overall sentiment the mix beats each alone on held-out rows; for the
    dimensions of mixed reviews the bag of n-grams copies the overall tone, so a model card
    may keep them to the transformer (see the card).
    """

    def __init__(self, transformer, baseline: Classifier, weight: float | dict[str, float]) -> None:
        self.transformer = transformer
        self.baseline = baseline
        self.weights = (dict(weight) if isinstance(weight, dict)
                        else dict.fromkeys(HEADS, float(weight)))
        label = (f"{float(weight):g}" if not isinstance(weight, dict) else
                 ",".join(f"{k}={v:g}" for k, v in self.weights.items()))
        self.version = f"{transformer.version}+{baseline.version}@{label}"
        self.seconds = transformer.seconds

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        """The weighted mean of both models' probabilities (the baseline's time is counted
        as ``baseline`` seconds)."""
        t0 = time.perf_counter()
        base = self.baseline.predict_batch(reviews)
        other = time.perf_counter() - t0
        deep = self.transformer.predict_batch(reviews)
        self.seconds["baseline"] = self.seconds.get("baseline", 0.0) + other
        out = {}
        for head, probs in deep.items():
            w = self.weights.get(head, 1.0)
            out[head] = probs if w == 1.0 else w * probs + (1 - w) * base[head]
        return out
