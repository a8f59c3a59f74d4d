"""Held-out evaluation of any classifier (``revsat evaluate``), next to the baseline.

Rows: the ``test`` split of every corpus (sentiment) and of the seed labels (dimensions); the
split is by normalised text, so no evaluated text was trained on. Metric definitions are in
:mod:`pipeline.training.metrics`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Settings
from pipeline.models.heads import Classifier
from pipeline.models.load import load
from pipeline.text.preprocess import preprocess
from pipeline.training.data import (
    contrast_rows,
    dimension_rows,
    natural_test_rows,
    require_shared,
    sentiment_rows,
    written_dev_rows,
    written_test_rows,
)
from pipeline.training.metrics import (
    ACSA_STATS,
    acsa_counts,
    acsa_metrics,
    binary_sentiment_accuracy,
    dimension_hits,
    dimension_metrics,
    macro_mention_f1,
    paired_difference,
    pooled_polarity_accuracy,
    predicted_labels,
    row_accuracy,
    sentiment_hits,
    sentiment_metrics,
)


def held_out(shared: Path, max_per_corpus: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Preprocessed test rows: (sentiment rows, dimension rows). The dimension rows are the
    seed test rows, the contrast set's rows (dev and test), the natural test set and the written
    test and dev sets (column ``set`` says which: ``seed``, ``contrast-dev``, ``contrast-test``,
    ``natural-test``, ``written-test``, ``written-dev``)."""
    sent = sentiment_rows(shared, max_train=0)
    sent = sent[sent["split"] == "test"]
    if max_per_corpus:
        # a seeded shuffle, then the first rows of each corpus: the same rows every time
        sent = sent.sample(frac=1.0, random_state=0).groupby("corpus").head(max_per_corpus)
    dims = dimension_rows(shared)
    dims = dims[dims["split"] == "test"].assign(set="seed")
    contrast = contrast_rows(shared)
    contrast = contrast.assign(set="contrast-" + contrast["split"])
    natural = natural_test_rows(shared).assign(set="natural-test")
    # the corpus's language, not the detector's (which reads mixed zh/en reviews either way)
    dims = pd.concat([dims, contrast, natural],
                     ignore_index=True).assign(lang_gold=lambda d: d["lang"])
    written = pd.concat([written_test_rows().assign(set="written-test"),
                         written_dev_rows().assign(set="written-dev")], ignore_index=True)
    dims = pd.concat([dims, written], ignore_index=True)
    return preprocess(sent.reset_index(drop=True)), preprocess(dims)


def evaluate_classifier(clf: Classifier, sent: pd.DataFrame, dims: pd.DataFrame,
                        rows: dict | None = None) -> dict:
    """Per-corpus and per-language sentiment metrics and dimension metrics.

    ``rows``, when given, receives the per-row hits behind each figure (for
    :func:`paired_differences`).
    """
    t0 = time.perf_counter()
    probs = clf.predict_batch(sent)["sentiment"]
    rows = {} if rows is None else rows
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
            if key == "sentiment":
                rows[f"sentiment acc {name}"] = (sentiment_hits(part["sentiment"], probs[idx]),)
    all_probs = clf.predict_batch(dims)
    sets = dims["set"].to_numpy() if "set" in dims else np.full(len(dims), "seed")
    out["acsa"] = acsa_by_set(dims, all_probs, sets, rows)
    seed_rows = sets == "seed"
    dims = dims[seed_rows].reset_index(drop=True)
    dim_probs = {k: v[seed_rows] for k, v in all_probs.items()}
    out["dimensions"] = dimension_metrics(dims, dim_probs)
    mentioned, predicted, polarity_hit = dimension_hits(dims, dim_probs)
    rows["dimension mention F1 (macro)"] = (mentioned, predicted)
    rows["dimension polarity accuracy"] = (mentioned, polarity_hit)
    # The seed rows also carry a 3-class overall label written to the guidelines (neutral
    # included), unlike the mostly two-class corpora.
    seed = dims["sentiment"].notna().to_numpy()
    if seed.any():
        out["sentiment"]["seed labels (3-class)"] = sentiment_metrics(
            dims.loc[seed, "sentiment"], dim_probs["sentiment"][seed])
        rows["sentiment acc seed labels (3-class)"] = (sentiment_hits(
            dims.loc[seed, "sentiment"], dim_probs["sentiment"][seed]),)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def acsa_by_set(dims: pd.DataFrame, probs: dict[str, np.ndarray], sets: np.ndarray,
                rows: dict) -> dict[str, dict]:
    """Contrast accuracy, tuple and complaint figures per labelled set and language (keys like
    ``contrast-test zh``); ``rows`` receives the per-review counts for paired comparisons."""
    pred = predicted_labels(probs)
    lang = dims["lang_gold" if "lang_gold" in dims else "lang"].to_numpy()
    out = {}
    for name in dict.fromkeys(sets):
        for code in ("zh", "en"):
            keep = (sets == name) & (lang == code)
            if not keep.any():
                continue
            counts = acsa_counts(dims[keep].reset_index(drop=True),
                                 pred[keep].reset_index(drop=True))
            key = f"{name} {code}"
            out[key] = acsa_metrics(counts)
            for metric, (fields, _) in ACSA_STATS.items():
                rows[f"{key} {metric}"] = tuple(counts[f] for f in fields)
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
    results, rows = {}, {}
    for spec in specs:
        # "default@int8": the model in that numeric format (see Settings.numeric_format)
        name, _, fmt = spec.partition("@")
        clf = load(name, Settings(quantize=quantize, **({"numeric_format": fmt} if fmt else {})))
        rows[spec] = {}
        results[spec] = {"version": clf.version,
                         **evaluate_classifier(clf, sent, dims, rows[spec])}
    reference = specs[0]
    for spec in specs[1:]:
        results[spec]["vs_first"] = {"reference": reference,
                                     **paired_differences(rows[reference], rows[spec])}
    return results


_STATS = {"dimension mention F1 (macro)": macro_mention_f1,
          "dimension polarity accuracy": pooled_polarity_accuracy}


def paired_differences(reference: dict, other: dict) -> dict[str, dict]:
    """Each figure of ``other`` minus the same figure of ``reference`` on the same held-out
    rows, with a 95 % paired bootstrap interval
    (:func:`pipeline.training.metrics.paired_difference`)."""
    return {metric: paired_difference(_statistic(metric), reference[metric], other[metric])
            for metric in reference if metric in other}


def _statistic(metric: str):
    if metric in _STATS:
        return _STATS[metric]
    for name, (_, stat) in ACSA_STATS.items():
        if metric.endswith(" " + name):
            return stat
    return row_accuracy


def paired_table(results: dict[str, dict]) -> pd.DataFrame:
    """Differences from the first model in points, with 95 % paired intervals: what
    ``revsat evaluate`` prints under the main table when it compares several models."""
    columns = {}
    for spec, res in results.items():
        if "vs_first" not in res:
            continue
        diffs = {k: v for k, v in res["vs_first"].items() if k != "reference"}
        columns[f"{spec} - {res['vs_first']['reference']}"] = {
            metric: "{:+.2f} ({:+.2f} to {:+.2f})".format(100 * d["delta"],
                                                          *(100 * x for x in d["ci"]))
            for metric, d in diffs.items()
        }
    table = pd.DataFrame(columns)
    # sentiment rows first, as in the main table
    return table.loc[sorted(table.index, key=lambda m: not m.startswith("sentiment"))]


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
        for key, m in res.get("acsa", {}).items():
            col[f"{key} contrast accuracy"] = m["contrast_accuracy"]
            col[f"{key} tuple F1"] = m["tuple_f1"]
            col[f"{key} complaint F1"] = m["complaint_f1"]
        rows[f"{spec} ({res['version']})"] = col
    return pd.DataFrame(rows).replace({np.nan: None})
