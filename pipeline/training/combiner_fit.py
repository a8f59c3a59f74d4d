"""Fit a model folder's polarity combiner (:mod:`pipeline.models.transformer.combiner`).

Rows: the dev splits of the contrast set (mixed reviews) and of the seed labels (mostly
single-topic reviews), none of them trained on by the network; the test splits stay untouched
for ``revsat evaluate``. Per language, a grid of regularisation strengths and seed-row weights
is scored by 5-fold cross-validation over reviews; the choice maximises the contrast dev
figures (mean of contrast accuracy, tuple F1 and complaint F1) among the settings whose seed
dev tuple F1 stays within ``max_seed_drop`` of the clause rule's, so single-topic reviews (most
of a real export) pay nothing for the mixed ones. A language where no setting beats the clause
rule gets no combiner.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.catalog import DIMENSIONS
from pipeline.config import Settings
from pipeline.models.load import load
from pipeline.models.transformer.combiner import POLARITIES, Combiner, Reading, features
from pipeline.text.preprocess import preprocess
from pipeline.training.data import contrast_rows, dimension_rows, require_shared
from pipeline.training.metrics import acsa_counts, acsa_metrics, predicted_labels

log = logging.getLogger("revsat")

GRID_C: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
GRID_SEED_WEIGHT: tuple[float, ...] = (1.0, 3.0, 10.0)


def dev_rows(shared: Path) -> pd.DataFrame:
    """Contrast dev and seed dev rows, preprocessed, with ``set`` (``contrast`` / ``seed``)."""
    contrast = contrast_rows(shared)
    contrast = contrast[contrast["split"] == "dev"].assign(set="contrast")
    seed = dimension_rows(shared)
    seed = seed[seed["split"] == "dev"].assign(set="seed")
    return preprocess(pd.concat([contrast, seed], ignore_index=True)).reset_index(drop=True)


def _language(rows: pd.DataFrame) -> np.ndarray:
    """The language the combiner keys on: the detector's, with mixed zh/en counted as zh."""
    return np.where(rows["lang"].to_numpy() == "en", "en", "zh")


def _figures(rows: pd.DataFrame, probs: dict[str, np.ndarray], keep: np.ndarray) -> dict:
    """Contrast and seed dev figures of ``probs`` on the rows ``keep``."""
    pred = predicted_labels(probs)
    out = {}
    for name in ("contrast", "seed"):
        part = keep & (rows["set"].to_numpy() == name)
        out[name] = acsa_metrics(acsa_counts(rows[part].reset_index(drop=True),
                                             pred[part].reset_index(drop=True)))
    return out


def _contrast_score(fig: dict) -> float:
    c = fig["contrast"]
    return (c["contrast_accuracy"] + c["tuple_f1"] + c["complaint_f1"]) / 3


def _with_shares(reading: Reading, shares: dict[str, np.ndarray], rows: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """The clause rule's probabilities with ``shares`` (per dimension, for ``rows``) as the
    polarity split of each dimension's mention mass."""
    out = {k: v.copy() for k, v in reading.combined.items()}
    for dim in DIMENSIONS:
        mention = 1.0 - out[dim][rows, 0]
        out[dim][rows, 1:] = mention[:, None] * shares[dim]
    return out


def _fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=3000).fit(x, y, sample_weight=weight)
    order = [list(model.classes_).index(p) for p in POLARITIES]
    return model.coef_[order], model.intercept_[order]


def fit_combiner(model: str | Path, shared: Path | str | None = None, *,
                 max_seed_drop: float = 0.01, folds: int = 5, seed: int = 0) -> Combiner:
    """Fit the combiner of ``model`` (a folder or name) on the dev rows (see module doc)."""
    shared = require_shared(shared)
    rows = dev_rows(shared)
    clf = load(model, Settings(), ensemble=False, combiner=False)
    log.info("reading %d dev reviews (whole, clauses, sentences)", len(rows))
    reading = clf.read(rows, frozenset({"en"}))
    lang = _language(rows)
    x = {dim: features(reading, dim) for dim in DIMENSIONS}
    is_seed = rows["set"].to_numpy() == "seed"
    rng = np.random.default_rng(seed)
    coef, intercept, info = {}, {}, {"fitted": date.today().isoformat(),
                                     "model": clf.version, "rows": {}, "languages": {}}
    for code in ("zh", "en"):
        mine = np.flatnonzero(lang == code)
        if not len(mine):
            continue
        fold = rng.permutation(len(mine)) % folds  # by review: all its dimensions together
        base = _figures(rows, reading.combined, lang == code)
        tried = []
        for c in GRID_C:
            for w in GRID_SEED_WEIGHT:
                shares = {dim: np.zeros((len(mine), 3)) for dim in DIMENSIONS}
                for k in range(folds):
                    train, held = mine[fold != k], mine[fold == k]
                    xs, ys, ws = _stack(x, rows, train, is_seed, w)
                    b, a = _fit(xs, ys, ws, c)
                    for dim in DIMENSIONS:
                        z = x[dim][held] @ b.T + a
                        z = np.exp(z - z.max(axis=1, keepdims=True))
                        shares[dim][fold == k] = z / z.sum(axis=1, keepdims=True)
                fig = _figures(rows, _with_shares(reading, shares, mine), lang == code)
                tried.append((c, w, fig))
        allowed = [t for t in tried
                   if t[2]["seed"]["tuple_f1"] >= base["seed"]["tuple_f1"] - max_seed_drop]
        best = max(allowed, key=lambda t: _contrast_score(t[2]), default=None)
        summary = {"clause_rule": _brief(base), "grid": [
            {"C": c, "seed_weight": w, **_brief(f)} for c, w, f in tried]}
        if best is None or _contrast_score(best[2]) <= _contrast_score(base):
            summary["chosen"] = None
            log.info("%s: no setting beats the clause rule; no combiner", code)
        else:
            c, w, fig = best
            xs, ys, ws = _stack(x, rows, mine, is_seed, w)
            coef[code], intercept[code] = _fit(xs, ys, ws, c)
            summary["chosen"] = {"C": c, "seed_weight": w, **_brief(fig)}
            log.info("%s: C=%g, seed weight %g; cross-validated dev %s (clause rule %s)",
                     code, c, w, _brief(fig), _brief(base))
        info["languages"][code] = summary
        info["rows"][code] = {"contrast_dev": int((~is_seed[mine]).sum()),
                              "seed_dev": int(is_seed[mine].sum())}
    return Combiner(coef, intercept, info)


def _stack(x: dict[str, np.ndarray], rows: pd.DataFrame, reviews: np.ndarray,
           is_seed: np.ndarray, seed_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows for the combiner: each (review, dimension) of ``reviews`` whose gold
    polarity is not ``none``."""
    xs, ys, ws = [], [], []
    for dim in DIMENSIONS:
        gold = rows[dim].to_numpy()[reviews]
        keep = np.isin(gold, POLARITIES)
        xs.append(x[dim][reviews][keep])
        ys.append(gold[keep])
        ws.append(np.where(is_seed[reviews][keep], seed_weight, 1.0))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)


def _brief(fig: dict) -> dict:
    c, s = fig["contrast"], fig["seed"]
    return {"contrast_accuracy": c["contrast_accuracy"], "contrast_tuple_f1": c["tuple_f1"],
            "contrast_complaint_f1": c["complaint_f1"], "seed_tuple_f1": s["tuple_f1"],
            "seed_complaint_f1": s["complaint_f1"]}
