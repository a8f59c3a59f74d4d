"""Trends across runs, and alerts: this run's satisfaction rows against earlier runs' rows
(read from the history by :func:`pipeline.store.history.load_history`).

Trends (``trends.parquet``)
    For each (grouping, group, dimension) of the run in the groupings ``alert_groupings``
    (review-date groupings ``day``/``week`` are calendar buckets, not populations to follow):

    - against the *previous run*: the latest run date in the history before this one.
      ``delta_prev = index - prev_index``; significance from the two Beta posteriors taken as
      normal: ``z = delta_prev / sqrt(index_se**2 + prev_index_se**2)``, ``p_prev`` two-sided.
      The complaint rate is compared with a pooled two-proportion z-test on
      ``complaint_rate * reviews`` complaints out of ``reviews`` (``p_complaint_prev``).
    - against the *trailing window*: the last ``trend_window`` run dates before this one, of
      which ``window_runs`` = k contain the group. ``window_index`` is the group's mean index
      over those k runs, with standard error ``sqrt(sum se**2) / k``; ``delta_window`` and
      ``p_window`` as above.

    Runs are treated as independent samples; overlapping exports make the tests optimistic.

Alerts (``alerts.parquet``)
    A trend row raises an alert of kind

    - ``index_drop`` when ``delta_prev <= -alert_drop`` (index points) and
    - ``complaint_spike`` when the complaint rate rose by at least ``alert_complaint_rise``
      (absolute, 0.03 = 3 points),

    in each case only when the test is significant: its Benjamini-Hochberg adjusted p-value
    (``q_value``) is below ``alert_alpha``. The adjustment runs over all tests of one grouping
    (both kinds, every group and dimension), so the expected share of false alerts among a
    grouping's alerts stays at ``alert_alpha`` however many products are tracked, while a
    change over all reviews is not drowned by hundreds of product tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd
from scipy import special

from pipeline.catalog import ALERTS_SCHEMA, TRENDS_SCHEMA

#: Keys of a trend row / an alert.
KEYS = ["grouping", "group", "dimension"]

def _two_sided(z: pd.Series) -> pd.Series:
    return pd.Series(2 * special.ndtr(-np.abs(z.to_numpy(dtype=float))), index=z.index)


def _normal_test(delta: pd.Series, se_a: pd.Series, se_b: pd.Series) -> pd.Series:
    """Two-sided p-value of a difference of two independent normal estimates (NaN if unknown)."""
    se = np.sqrt(se_a.astype(float) ** 2 + se_b.astype(float) ** 2)
    return _two_sided(delta.astype(float) / se.where(se > 0))


def two_proportion_p(x1: pd.Series, n1: pd.Series, x0: pd.Series, n0: pd.Series) -> pd.Series:
    """Two-sided p-value of the pooled two-proportion z-test (1.0 when both rates are 0 or 1)."""
    n1, n0 = n1.astype(float), n0.astype(float)
    pooled = (x1 + x0) / (n1 + n0)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    p = _two_sided((x1 / n1 - x0 / n0) / se.where(se > 0))
    return p.where(se > 0, 1.0).where(x0.notna() & n0.gt(0), np.nan)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values, as
    :func:`scipy.stats.false_discovery_control` computes them, without importing scipy.stats:
    seconds of start-up); NaN stays NaN and is not counted."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = _bh(p[ok])
    return q


def _bh(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.clip(ranked, 0, 1)
    return out


def trends(
    sat: pd.DataFrame,
    history: pd.DataFrame,
    run_date: date,
    run_id: str,
    window: int = 7,
    groupings: Sequence[str] = ("all", "category", "product_id", "lang"),
) -> pd.DataFrame:
    """Trend rows of this run's ``sat`` against ``history`` (earlier runs); see module doc."""
    cur = sat[sat["grouping"].isin(list(groupings))][
        [*KEYS, "reviews", "mentions", "index", "index_se", "complaint_rate", "low_confidence"]
    ].copy()
    out = cur.copy()
    cols = ["prev_run_date", "prev_reviews", "prev_index", "prev_index_se",
            "prev_complaint_rate", "window_runs", "window_index", "window_index_se"]
    if history.empty:
        for c in cols:
            out[c] = None if c == "prev_run_date" else np.nan
    else:
        hist = history[history["grouping"].isin(list(groupings))].copy()
        hist["run_date"] = pd.to_datetime(hist["run_date"]).dt.date
        dates = sorted(hist["run_date"].unique())
        prev_date = dates[-1] if dates else None
        prev = hist[hist["run_date"] == prev_date][
            [*KEYS, "reviews", "index", "index_se", "complaint_rate"]
        ].rename(columns={"reviews": "prev_reviews", "index": "prev_index",
                          "index_se": "prev_index_se", "complaint_rate": "prev_complaint_rate"})
        prev["prev_run_date"] = prev_date
        win = hist[hist["run_date"].isin(dates[-window:])]
        win = win.assign(var=win["index_se"] ** 2).groupby(KEYS).agg(
            window_runs=("index", "size"), window_index=("index", "mean"), var=("var", "sum"),
        ).reset_index()
        win["window_index_se"] = np.sqrt(win.pop("var")) / win["window_runs"]
        out = out.merge(prev, on=KEYS, how="left").merge(win, on=KEYS, how="left")
    out["delta_prev"] = out["index"] - out["prev_index"]
    out["p_prev"] = _normal_test(out["delta_prev"], out["index_se"], out["prev_index_se"])
    out["complaint_delta_prev"] = out["complaint_rate"] - out["prev_complaint_rate"]
    out["p_complaint_prev"] = two_proportion_p(
        out["complaint_rate"] * out["reviews"], out["reviews"],
        out["prev_complaint_rate"] * out["prev_reviews"], out["prev_reviews"],
    )
    out["delta_window"] = out["index"] - out["window_index"]
    out["p_window"] = _normal_test(out["delta_window"], out["index_se"], out["window_index_se"])
    out["window_runs"] = out["window_runs"].fillna(0)
    out["run_date"] = run_date
    out["run_id"] = run_id
    return out.sort_values(KEYS).reset_index(drop=True)[TRENDS_SCHEMA.names]


def alerts(
    trend: pd.DataFrame,
    drop: float = 5.0,
    complaint_rise: float = 0.03,
    alpha: float = 0.01,
) -> pd.DataFrame:
    """Alert rows from :func:`trends` output; see the module docstring for the rules."""
    # One family of tests per grouping: a dashboard reads the all-reviews figures, categories
    # and products separately, and pooling them would let hundreds of product tests drown a
    # real change over all reviews.
    trend = trend.reset_index(drop=True)
    q_index = np.full(len(trend), np.nan)
    q_complaint = np.full(len(trend), np.nan)
    for _, rows in trend.groupby("grouping", sort=False):
        pos = trend.index.get_indexer(rows.index)
        q = benjamini_hochberg(np.concatenate([rows["p_prev"].to_numpy(dtype=float),
                                               rows["p_complaint_prev"].to_numpy(dtype=float)]))
        q_index[pos], q_complaint[pos] = q[: len(rows)], q[len(rows):]
    rows = []
    for i, r in enumerate(trend.itertuples(index=False)):
        where = f"{r.grouping}={r.group}" if r.grouping != "all" else "all reviews"
        if r.delta_prev <= -drop and q_index[i] < alpha:
            rows.append({
                "kind": "index_drop", "previous": r.prev_index, "current": r.index,
                "change": r.delta_prev, "p_value": r.p_prev, "q_value": q_index[i],
                "message": f"{r.dimension} index of {where} fell {-r.delta_prev:.1f} points "
                           f"({r.prev_index:.1f} → {r.index:.1f}) since {r.prev_run_date}",
                **_alert_keys(r),
            })
        if r.complaint_delta_prev >= complaint_rise and q_complaint[i] < alpha:
            rows.append({
                "kind": "complaint_spike", "previous": r.prev_complaint_rate,
                "current": r.complaint_rate, "change": r.complaint_delta_prev,
                "p_value": r.p_complaint_prev, "q_value": q_complaint[i],
                "message": f"{r.dimension} complaint rate of {where} rose from "
                           f"{100 * r.prev_complaint_rate:.1f} % to {100 * r.complaint_rate:.1f} %"
                           f" since {r.prev_run_date}",
                **_alert_keys(r),
            })
    frame = pd.DataFrame(rows, columns=ALERTS_SCHEMA.names)
    # All reviews first, then the most significant: the report and the artifact show the top.
    frame["_all"] = frame["grouping"] != "all"
    return (frame.sort_values(["_all", "q_value", "grouping", "group"])
            .drop(columns="_all").reset_index(drop=True))


def _alert_keys(r) -> dict:
    return {"run_date": r.run_date, "run_id": r.run_id, "grouping": r.grouping,
            "group": r.group, "dimension": r.dimension, "prev_run_date": r.prev_run_date,
            "reviews": r.reviews, "mentions": r.mentions}


