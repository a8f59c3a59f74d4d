"""Fit a model folder's polarity combiner (:mod:`pipeline.models.transformer.combiner`).

Rows, none of them trained on by the network: the dev splits of the contrast set (mixed
reviews) and of the seed labels (mostly single-topic reviews), the reviews of the corpora's
dev split labelled for this (``data/combiner_labels/``, half of them mixed), and the project's
written reviews (``data/train_extra/``) that the network's training manifest does not list;
the test splits stay untouched for ``revsat evaluate``. The combiner is fitted on the rows of
:data:`FIT_ON`; the others judge it. Per language, a grid of modes (:data:`GRID_CLASSES`),
regularisation strengths and seed-row weights is scored by 5-fold cross-validation over
reviews; the choice maximises the mixed-review figures (mean of contrast accuracy, tuple F1
and complaint F1, on the contrast dev rows, the labelled dev rows and the unseen written
rows, averaged) among the settings whose tuple F1 on the seed dev rows and on the labelled
dev rows stays within ``max_seed_drop`` of the clause rule's, so single-topic reviews (most
of a real export) pay nothing for the mixed ones. A language where no setting beats the
clause rule gets no combiner."""

from __future__ import annotations

import logging
from datetime import date
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.catalog import DIMENSIONS
from pipeline.config import Settings
from pipeline.models.load import load, resolve
from pipeline.models.transformer.combiner import (
    POLARITIES,
    Combiner,
    Reading,
    features,
    polarity_shares,
    resplit,
)
from pipeline.text.preprocess import preprocess
from pipeline.training.data import (
    combiner_labelled_rows,
    contrast_rows,
    dimension_rows,
    extra_rows,
    require_shared,
)
from pipeline.training.manifest import trained_ids
from pipeline.training.metrics import acsa_counts, acsa_metrics, predicted_labels

log = logging.getLogger("revsat")

GRID_C: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
GRID_SEED_WEIGHT: tuple[float, ...] = (1.0, 3.0, 10.0)
#: 3: the combiner decides positive, negative and neutral; 2: it only splits positive from
#: negative and keeps the clause rule's neutral share (where the two kinds of labels disagree
#: about neutral, README, Models).
GRID_CLASSES: tuple[int, ...] = (3, 2)
#: The sets whose dev rows the combiner is fitted on: the contrast set's (mixed reviews) and the
#: seed rows'. The labelled corpus dev rows are held out from the fit and judge it: the contrast
#: set keeps only reviews whose labels differ from their overall sentiment, so a fit on it can
#: learn that base rate and over-read neutral in ordinary reviews; the labelled rows, sampled
#: without looking at their labels, show where it does (README, Models). Written reviews the
#: network never saw are fitted on too: most of them praise one dimension and criticise
#: another, the case the combiner exists for, and the contrast set has few such in English.
FIT_ON: tuple[str, ...] = ("contrast", "seed", "written")
#: The sets a choice is judged on for mixed reviews (:func:`_mixed_score`).
MIXED_SETS: tuple[str, ...] = ("contrast", "labelled", "written")
#: Every set of :func:`dev_rows` (figures are reported for each).
SETS: tuple[str, ...] = ("contrast", "seed", "labelled", "written")


def dev_rows(shared: Path, trained: set[str] | None = None) -> pd.DataFrame:
    """Contrast dev, seed dev and labelled corpus dev rows, and the written reviews whose ids
    ``trained`` (the network's training manifest) does not hold, preprocessed, with ``set``
    (``contrast`` / ``seed`` / ``labelled`` / ``written``). Without a manifest no written
    review counts as unseen."""
    contrast = contrast_rows(shared)
    contrast = contrast[contrast["split"] == "dev"].assign(set="contrast")
    seed = dimension_rows(shared)
    seed = seed[seed["split"] == "dev"].assign(set="seed")
    labelled = combiner_labelled_rows(shared).assign(set="labelled")
    labelled = labelled[~labelled["id"].isin(set(seed["id"]))]
    written = extra_rows().assign(set="written")
    written = written[~written["id"].isin(trained)] if trained is not None else written[:0]
    return preprocess(pd.concat([contrast, seed, labelled, written],
                                ignore_index=True)).reset_index(drop=True)


def _language(rows: pd.DataFrame) -> np.ndarray:
    """The language the combiner keys on: the detector's, with mixed zh/en counted as zh."""
    return np.where(rows["lang"].to_numpy() == "en", "en", "zh")


def _figures(rows: pd.DataFrame, probs: dict[str, np.ndarray], keep: np.ndarray) -> dict:
    """Figures of ``probs`` per set of :data:`SETS` on the rows ``keep``."""
    pred = predicted_labels(probs)
    out = {}
    for name in SETS:
        part = keep & (rows["set"].to_numpy() == name)
        if not part.any():
            continue
        out[name] = acsa_metrics(acsa_counts(rows[part].reset_index(drop=True),
                                             pred[part].reset_index(drop=True)))
    return out


def _mixed_score(fig: dict) -> float:
    """Mean of contrast accuracy, tuple F1 and complaint F1, averaged over the sets of
    :data:`MIXED_SETS` present."""
    parts = [fig[k] for k in MIXED_SETS if k in fig]
    return float(np.mean([(c["contrast_accuracy"] + c["tuple_f1"] + c["complaint_f1"]) / 3
                          for c in parts]))


def _keeps_single_topic(fig: dict, base: dict, drop: float) -> bool:
    """Tuple F1 on the seed and labelled rows within ``drop`` of the clause rule's."""
    return all(fig[k]["tuple_f1"] >= base[k]["tuple_f1"] - drop
               for k in ("seed", "labelled") if k in base)


def _with_shares(reading: Reading, shares: dict[str, np.ndarray], rows: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """The clause rule's probabilities with ``shares`` (per dimension, for ``rows``) as the
    polarity split of each dimension's mention mass."""
    out = {k: v.copy() for k, v in reading.combined.items()}
    for dim in DIMENSIONS:
        resplit(out[dim], rows, shares[dim])
    return out


def _fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray, c: float, classes: int = 3):
    """Coefficients for :func:`polarity_shares`: three classes, or (``classes=2``) positive
    against negative on the rows labelled either."""
    from sklearn.linear_model import LogisticRegression

    if classes == 2:
        keep = np.isin(y, POLARITIES[:2])
        model = LogisticRegression(C=c, max_iter=3000).fit(x[keep], y[keep] == "positive",
                                                           sample_weight=weight[keep])
        # P(positive) = sigmoid(w.x + b) = softmax([w.x + b, 0])[0]
        return (np.vstack([model.coef_[0], np.zeros_like(model.coef_[0])]),
                np.array([model.intercept_[0], 0.0]))
    model = LogisticRegression(C=c, max_iter=3000).fit(x, y, sample_weight=weight)
    order = [list(model.classes_).index(p) for p in POLARITIES]
    return model.coef_[order], model.intercept_[order]


def fit_combiner(model: str | Path, shared: Path | str | None = None, *,
                 fit_on: tuple[str, ...] = FIT_ON, max_seed_drop: float = 0.01, folds: int = 5,
                 seed: int = 0) -> Combiner:
    """Fit the combiner of ``model`` (a folder or name) on the dev rows of the sets ``fit_on``
    (see module doc); the other dev rows only judge the choice."""
    model = resolve(model)  # a missing model folder is reported before the corpora are read
    shared = require_shared(shared)
    rows = dev_rows(shared, trained_ids(model))
    clf = load(model, Settings(), ensemble=False, combiner=False)
    log.info("reading %d dev reviews (whole, clauses, sentences)", len(rows))
    reading = clf.read(rows, frozenset({"en"}))
    lang = _language(rows)
    x = {dim: features(reading, dim) for dim in DIMENSIONS}
    is_seed = rows["set"].to_numpy() == "seed"
    fitted_on = np.isin(rows["set"].to_numpy(), fit_on)
    rng = np.random.default_rng(seed)
    coef, intercept, info = {}, {}, {"fitted": date.today().isoformat(), "fit_on": list(fit_on),
                                     "model": clf.version, "rows": {}, "languages": {}}
    for code in ("zh", "en"):
        mine = np.flatnonzero((lang == code) & fitted_on)
        judge = np.flatnonzero((lang == code) & ~fitted_on)
        if not len(mine):
            continue
        fold = rng.permutation(len(mine)) % folds  # by review: all its dimensions together
        base = _figures(rows, reading.combined, lang == code)
        tried = []
        for classes, c, w in product(GRID_CLASSES, GRID_C, GRID_SEED_WEIGHT):
            # fitted rows: 5-fold cross-validated shares; the other rows: the full fit's
            shares = {dim: np.zeros((len(rows), 3)) for dim in DIMENSIONS}
            for k in [*range(folds), None]:
                train = mine if k is None else mine[fold != k]
                held = judge if k is None else mine[fold == k]
                b, a = _fit(*_stack(x, rows, train, is_seed, w), c, classes)
                for dim in DIMENSIONS:
                    shares[dim][held] = polarity_shares(b, a, x[dim][held],
                                                        reading.combined[dim][held])
            both = np.concatenate([mine, judge])
            fig = _figures(rows, _with_shares(reading, {d: v[both] for d, v in shares.items()},
                                              both), lang == code)
            tried.append(((classes, c, w), fig))
        allowed = [t for t in tried if _keeps_single_topic(t[1], base, max_seed_drop)]
        best = max(allowed, key=lambda t: _mixed_score(t[1]), default=None)
        summary = {"clause_rule": _brief(base), "grid": [
            {**_setting(t), **_brief(f)} for t, f in tried]}
        if best is None or _mixed_score(best[1]) <= _mixed_score(base):
            summary["chosen"] = None
            log.info("%s: no setting beats the clause rule; no combiner", code)
        else:
            (classes, c, w), fig = best
            coef[code], intercept[code] = _fit(*_stack(x, rows, mine, is_seed, w), c, classes)
            summary["chosen"] = {**_setting(best[0]), **_brief(fig)}
            log.info("%s: %s; dev %s (clause rule %s)", code, _setting(best[0]), _brief(fig),
                     _brief(base))
        info["languages"][code] = summary
        info["rows"][code] = {k: int((rows["set"].to_numpy()[lang == code] == k).sum())
                              for k in SETS}
    return Combiner(coef, intercept, info)


def _setting(key: tuple[int, float, float]) -> dict:
    classes, c, w = key
    return {"classes": classes, "C": c, "seed_weight": w}


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
    """The figures a choice is made on, flat (``contrast_tuple_f1``, ``seed_tuple_f1``...)."""
    return {f"{name}_{k}": part[k] for name, part in fig.items()
            for k in ("contrast_accuracy", "tuple_f1", "complaint_f1")}
