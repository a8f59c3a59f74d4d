"""The transformer's calibrated probabilities averaged with the TF-IDF baseline's."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from pipeline.models.heads import Classifier


class EnsembleClassifier:
    """p = w * p_transformer + (1 - w) * p_baseline for every head.

    Set by ``"ensemble": {"baseline": "<folder, relative to the model>", "weight": w}`` in
    ``revsat_model.json``. The two models make different errors (subwords in context vs jieba
    n-grams), so the mix beats each alone on held-out rows (see the model card).
    """

    def __init__(self, transformer, baseline: Classifier, weight: float) -> None:
        self.transformer = transformer
        self.baseline = baseline
        self.weight = weight
        self.version = f"{transformer.version}+{baseline.version}@{weight:g}"
        self.seconds = transformer.seconds

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        """The weighted mean of both models' probabilities (the baseline's time is counted
        as ``baseline`` seconds)."""
        t0 = time.perf_counter()
        base = self.baseline.predict_batch(reviews)
        other = time.perf_counter() - t0
        deep = self.transformer.predict_batch(reviews)
        self.seconds["baseline"] = self.seconds.get("baseline", 0.0) + other
        w = self.weight
        return {k: w * deep[k] + (1 - w) * base[k] for k in deep}
