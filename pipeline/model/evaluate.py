"""Held-out evaluation of any classifier (``revsat evaluate``), next to the baseline.

Rows: the ``test`` split of every corpus (sentiment) and of the seed labels (dimensions); the
split is by normalised text, so no evaluated text was trained on. Metric definitions are in
:mod:`pipeline.evaluation`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.classify import Classifier, load_classifier
from pipeline.config import Settings
from pipeline.evaluation import binary_sentiment_accuracy, dimension_metrics, sentiment_metrics
from pipeline.preprocess import preprocess
from pipeline.training_data import dimension_rows, require_shared, sentiment_rows


def held_out(shared: Path, max_per_corpus: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Preprocessed test rows: (sentiment rows, dimension rows)."""
    sent = sentiment_rows(shared, max_train=0)
    sent = sent[sent["split"] == "test"]
    if max_per_corpus:
        # a seeded shuffle, then the first rows of each corpus: the same rows every time
        sent = sent.sample(frac=1.0, random_state=0).groupby("corpus").head(max_per_corpus)
    dims = dimension_rows(shared)
    dims = dims[dims["split"] == "test"]
    return preprocess(sent.reset_index(drop=True)), preprocess(dims.reset_index(drop=True))


def evaluate_classifier(clf: Classifier, sent: pd.DataFrame, dims: pd.DataFrame) -> dict:
    """Per-corpus and per-language sentiment metrics and dimension metrics."""
    t0 = time.perf_counter()
    probs = clf.predict_batch(sent)["sentiment"]
    out: dict = {"sentiment": {}, "sentiment_by_lang": {}}
    frame = sent if "lang_gold" in sent else sent.assign(lang_gold=sent["lang"])
    for key, column in (("sentiment", "corpus"), ("sentiment_by_lang", "lang_gold")):
        for name, idx in frame.groupby(column).indices.items():
            part = frame.iloc[idx]
            metrics = sentiment_metrics(part["sentiment"], probs[idx])
            if set(part["sentiment"]) <= {"positive", "negative"}:
                metrics["binary_accuracy"] = binary_sentiment_accuracy(part["sentiment"],
                                                                       probs[idx])
            out[key][str(name)] = metrics
    dim_probs = clf.predict_batch(dims)
    out["dimensions"] = dimension_metrics(dims, dim_probs)
    # The seed rows also carry a 3-class overall label written to the guidelines (neutral
    # included), unlike the mostly two-class corpora.
    seed = dims["sentiment"].notna().to_numpy()
    if seed.any():
        out["sentiment"]["seed labels (3-class)"] = sentiment_metrics(
            dims.loc[seed, "sentiment"], dim_probs["sentiment"][seed])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def evaluate_models(specs: list[str], shared: Path | None,
                    max_per_corpus: int | None = None,
                    quantize: bool | None = None) -> dict[str, dict]:
    """Evaluate each model spec on the same held-out rows (``quantize``: int8 on/off/as the
    model folder says)."""
    shared = require_shared(shared)
    sent, dims = held_out(shared, max_per_corpus)
    # Gold language from the corpus (zh/en), not from the detector.
    sent = sent.assign(lang_gold=sent["lang"])
    results = {}
    for spec in specs:
        clf = load_classifier(spec, Settings(quantize=quantize))
        results[spec] = {"version": clf.version, **evaluate_classifier(clf, sent, dims)}
    return results


def summary_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per metric, one column per model: what ``revsat evaluate`` prints."""
    rows = {}
    for spec, res in results.items():
        col = {}
        for corpus, m in res["sentiment"].items():
            col[f"sentiment acc {corpus}"] = m.get("binary_accuracy", m["accuracy"])
            col[f"sentiment macro-F1 {corpus}"] = m["macro_f1"]
        for lang, m in res["sentiment_by_lang"].items():
            col[f"sentiment acc lang={lang}"] = m["accuracy"]
        d = res["dimensions"]
        col["dimension mention F1 (macro)"] = d["mention_f1_macro"]
        col["dimension polarity accuracy"] = d["polarity_accuracy"]
        for key, label in (("mention_f1_macro_ci", "mention F1"),
                           ("polarity_accuracy_ci", "polarity accuracy")):
            if key in d:
                col[f"  {label} 95% interval"] = "{:.3f}-{:.3f}".format(*d[key])
        for dim in ("logistics", "quality", "service", "privacy"):
            col[f"  {dim} mention F1"] = d[dim]["mention_f1"]
            col[f"  {dim} polarity acc"] = d[dim]["polarity_accuracy"]
        rows[f"{spec} ({res['version']})"] = col
    return pd.DataFrame(rows).replace({np.nan: None})
