"""Cross-validated study of what helps the dimension heads when gold labels are few
(``revsat dimension-cv``).

Five folds over the seed-labelled rows (by normalised text, see
:func:`pipeline.training.corpora.add_split`), so every labelled row is scored once by a model that
never saw it. Training a transformer five times per variant does not fit on a 2-core CPU, so
the study holds the encoder fixed: every
variant fits the same per-dimension logistic-regression heads on mean-pooled sentence
embeddings of the pretrained base (``revsat base-model``), and only the *training data* of
the heads changes:

- ``gold``: the fold's training rows (seed labels plus the project's hand-written rows);
- ``+ weak labels``: plus unlabelled corpus reviews labelled by the jieba lexicon
  (:meth:`pipeline.text.lexicon.Lexicon.weak_labels`), at a lower sample weight;
- ``+ self-training``: plus the same unlabelled reviews labelled by the ``gold`` heads where
  they are confident (one round);
- ``baseline features``: the TF-IDF n-gram features of the walking-skeleton baseline on the
  gold rows, for reference.

Unlabelled reviews are drawn from the corpora's ``train`` split and never share a normalised
text with a seed row. Metrics are those of :mod:`pipeline.training.metrics`, averaged over folds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from pipeline.catalog import DIM_LABELS, DIMENSIONS
from pipeline.text.preprocess import preprocess
from pipeline.training.corpora import text_key
from pipeline.training.data import dimension_rows, sentiment_rows
from pipeline.training.metrics import dimension_metrics

log = logging.getLogger("revsat")

VARIANTS = ("gold", "+ weak labels", "+ self-training", "baseline features (gold)")


def _fit_heads(x: np.ndarray, labels: pd.DataFrame, weights: np.ndarray | None = None,
               c: float = 4.0) -> dict[str, LogisticRegression]:
    heads = {}
    for dim in DIMENSIONS:
        y = labels[dim].to_numpy()
        known = pd.notna(y)
        heads[dim] = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(
            x[known], y[known], sample_weight=None if weights is None else weights[known])
    return heads


def _probs(heads: dict[str, LogisticRegression], x: np.ndarray) -> dict[str, np.ndarray]:
    """Per dimension, probabilities in DIM_LABELS order (a class absent from training: 0)."""
    out = {}
    for dim, head in heads.items():
        p = np.zeros((len(x), len(DIM_LABELS)))
        got = head.predict_proba(x)
        for j, label in enumerate(head.classes_):
            p[:, DIM_LABELS.index(label)] = got[:, j]
        out[dim] = p
    return out


def _summary(per_fold: list[dict]) -> dict[str, float]:
    f1 = [m["mention_f1_macro"] for m in per_fold]
    pol = [m["polarity_accuracy"] for m in per_fold]
    return {"mention_f1_macro": round(float(np.mean(f1)), 4),
            "mention_f1_sd": round(float(np.std(f1)), 4),
            "polarity_accuracy": round(float(np.mean(pol)), 4),
            "polarity_sd": round(float(np.std(pol)), 4)}


def embed(base: Path, texts: list[str], num_layers: int | None, max_length: int = 128
          ) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings of the pretrained base for ``texts``."""
    from transformers import AutoModel, AutoTokenizer

    from pipeline.models.transformer.module import keep_layers
    from pipeline.training.base_model import encode_texts

    model = AutoModel.from_pretrained(str(base), add_pooling_layer=False).eval()
    if num_layers is not None and num_layers < model.config.num_hidden_layers:
        keep_layers(model, range(num_layers))
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    return encode_texts(model, tokenizer, texts, batch_size=64, max_length=max_length)


def run_dimension_cv(shared: Path, base: Path, unlabelled: int = 4000,
                     num_layers: int | None = 6, weak_weight: float = 0.3,
                     confidence: float = 0.9, seed: int = 0) -> dict:
    """Run every variant over the 5 folds; returns per-variant means and fold spreads."""
    from pipeline.models.baseline import BaselineModel
    from pipeline.text.lexicon import default_lexicon

    t0 = time.perf_counter()
    dims = dimension_rows(shared)
    gold = preprocess(dims.reset_index(drop=True))
    seeds = gold["fold"].to_numpy() >= 0
    seen = set(gold["text"].map(text_key))
    pool = sentiment_rows(shared)
    pool = pool[(pool["split"] == "train") & ~pool["text"].map(text_key).isin(seen)]
    pool = preprocess(pool.sample(n=min(unlabelled, len(pool)), random_state=seed)
                      .reset_index(drop=True))
    lexicon = default_lexicon()
    weak = pd.DataFrame([lexicon.weak_labels(list(t)) for t in pool["tokens"]])
    log.info("embedding %d labelled and %d unlabelled reviews", len(gold), len(pool))
    x_gold = embed(base, list(gold["text_norm"]), num_layers)
    x_pool = embed(base, list(pool["text_norm"]), num_layers)

    per_variant: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for fold in range(5):
        test = seeds & (gold["fold"].to_numpy() == fold)
        train = ~test  # other folds' seed rows plus the hand-written rows (fold -1)
        labels = gold.loc[train, list(DIMENSIONS)].reset_index(drop=True)
        heads = _fit_heads(x_gold[train], labels)
        truth = gold[test].reset_index(drop=True)
        per_variant["gold"].append(dimension_metrics(truth, _probs(heads, x_gold[test])))

        x_weak = np.vstack([x_gold[train], x_pool])
        w = np.concatenate([np.ones(train.sum()), np.full(len(pool), weak_weight)])
        weak_heads = _fit_heads(x_weak, pd.concat([labels, weak], ignore_index=True), w)
        per_variant["+ weak labels"].append(
            dimension_metrics(truth, _probs(weak_heads, x_gold[test])))

        pseudo_probs = _probs(heads, x_pool)
        pseudo = pd.DataFrame({
            dim: np.where(p.max(axis=1) >= confidence, np.asarray(DIM_LABELS)[p.argmax(axis=1)],
                          None)
            for dim, p in pseudo_probs.items()})
        self_heads = _fit_heads(x_weak, pd.concat([labels, pseudo], ignore_index=True))
        per_variant["+ self-training"].append(
            dimension_metrics(truth, _probs(self_heads, x_gold[test])))

        tr = gold[train & gold["sentiment"].notna().to_numpy()]
        tfidf = BaselineModel().fit(list(tr["tokens"]), list(tr["sentiment"]),
                                    list(tr["tokens"]), {d: list(tr[d]) for d in DIMENSIONS})
        per_variant["baseline features (gold)"].append(
            dimension_metrics(truth, tfidf.predict_proba(list(truth["tokens"]))))
        log.info("fold %d done (%.0f s)", fold, time.perf_counter() - t0)
    result = {v: _summary(m) for v, m in per_variant.items()}
    result["_setup"] = {"labelled_rows": int(seeds.sum()), "hand_written_rows": int((~seeds).sum()),
                        "unlabelled_rows": len(pool), "encoder_layers": num_layers,
                        "weak_weight": weak_weight, "self_training_confidence": confidence,
                        "seconds": round(time.perf_counter() - t0, 1)}
    return result
