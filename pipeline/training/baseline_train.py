"""Train and evaluate the TF-IDF baseline (``revsat train-baseline``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from pipeline.catalog import DIMENSIONS
from pipeline.models.baseline import BaselineModel
from pipeline.text.preprocess import preprocess
from pipeline.training.data import dimension_rows, require_shared, sentiment_rows
from pipeline.training.metrics import (
    binary_sentiment_accuracy,
    dimension_metrics,
    sentiment_metrics,
)

log = logging.getLogger("revsat")


def evaluate_sentiment(predict, rows: pd.DataFrame) -> dict[str, dict]:
    """Per-corpus held-out sentiment metrics for a ``predict(frame) -> probs`` function."""
    out = {}
    for corpus, part in rows.groupby("corpus"):
        probs = predict(part)
        metrics = sentiment_metrics(part["sentiment"], probs)
        if set(part["sentiment"]) <= {"positive", "negative"}:
            metrics["binary_accuracy"] = binary_sentiment_accuracy(part["sentiment"], probs)
        out[str(corpus)] = metrics
    return out


def train_baseline(
    shared: Path | None, out_dir: Path, max_sentiment_rows: int = 120_000
) -> dict:
    """Fit on the train split, report held-out (test split) metrics, save into ``out_dir``."""
    shared = require_shared(shared)
    t0 = time.perf_counter()
    sent = preprocess(sentiment_rows(shared, max_sentiment_rows))
    dims = preprocess(dimension_rows(shared))
    log.info("preprocessed %d sentiment and %d dimension rows in %.0f s",
             len(sent), len(dims), time.perf_counter() - t0)
    sent_train = pd.concat([sent[sent["split"] == "train"], dims[dims["split"] == "train"]])
    dim_train = dims[dims["split"] != "test"]
    model = BaselineModel().fit(
        list(sent_train["tokens"]), list(sent_train["sentiment"]),
        list(dim_train["tokens"]), {d: list(dim_train[d]) for d in DIMENSIONS},
    )
    test_sent = sent[sent["split"] == "test"]
    test_dims = dims[dims["split"] == "test"]

    def predict(frame: pd.DataFrame):
        return model.predict_proba(list(frame["tokens"]))["sentiment"]

    metrics = {
        "sentiment_test": evaluate_sentiment(predict, test_sent),
        "dimensions_test": dimension_metrics(
            test_dims, model.predict_proba(list(test_dims["tokens"]))
        ),
        "train_rows": {"sentiment": len(sent_train), "dimensions": len(dim_train)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    model.metadata = {"version": "baseline-tfidf-lr-1", "metrics": metrics}
    model.save(out_dir)
    log.info("baseline saved to %s", out_dir)
    return metrics
