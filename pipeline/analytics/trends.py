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

Drop detection, incidents and alerts
    See :mod:`pipeline.analytics.incidents` (the method) and :func:`detect` (how a run uses it):
    every (grouping, group, dimension) of ``alert_groupings`` is followed across run dates, and
    a dimension's ``day`` and ``week`` groups are followed inside the run; the night's tests
    share one Benjamini-Hochberg adjustment; the series in alarm become one incident per
    dimension (``alerts``, one row each) with its groups in ``alert_groups``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd
from scipy import special

from pipeline.analytics import incidents as inc
from pipeline.catalog import ALERT_GROUPS_SCHEMA, ALERTS_SCHEMA, TRENDS_SCHEMA

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
    # The detector's columns are added by with_detection.
    return out.sort_values(KEYS).reset_index(drop=True)[
        [c for c in TRENDS_SCHEMA.names if c in out]]


#: Run dates of history the drop detector reads (an incident longer than this, less the
#: window, loses its pre-incident baseline).
LOOKBACK_RUNS = 90


#: Columns of the satisfaction rows the drop detector reads.
DETECT_COLUMNS = ["run_date", *KEYS, "reviews", "mentions", "index", "index_se",
                  "complaint_rate", "low_confidence"]


def _tests(sat: pd.DataFrame, history: pd.DataFrame, run_date: date, window: int,
           min_mentions: int, groupings: Sequence[str]) -> pd.DataFrame:
    """The drop detector's chart of every series tonight: across runs, and inside the run."""
    cols = [c for c in DETECT_COLUMNS if c != "run_date"]
    cur = sat[sat["grouping"].isin(list(groupings))][cols].assign(run_date=run_date)
    past = pd.DataFrame(columns=cur.columns)
    if not history.empty:
        past = history[history["grouping"].isin(list(groupings))][cur.columns.tolist()].copy()
        past["run_date"] = pd.to_datetime(past["run_date"]).dt.date
    frame = pd.concat([past, cur], ignore_index=True) if len(past) else cur
    across = inc.cusum(frame, KEYS, "run_date", window=window, min_mentions=min_mentions)
    across = across[across["run_date"] == run_date].assign(source="runs")
    inside = []
    for grouping, source in (("day", "days"), ("week", "weeks")):
        rows = sat[sat["grouping"] == grouping][cols]
        if rows["group"].nunique() > 1:
            chart = inc.cusum(rows.assign(point=rows["group"]), ["grouping", "dimension"],
                              "point", window=window, min_mentions=min_mentions)
            inside.append(chart.drop(columns="point").assign(source=source))
    tests = pd.concat([across, *inside], ignore_index=True)
    tests["started"] = tests["started"].map(lambda v: None if v is None else str(v))
    tests["q_value"] = inc.adjust(tests["p_value"].to_numpy())
    return tests


def _message(r: pd.Series) -> str:
    where = inc._where(r["grouping"], r["group"])
    more = f" and {r['groups'] - 1} more group{'s' if r['groups'] != 2 else ''}" if (
        r["groups"] > 1) else ""
    scope = {"runs": "run dates", "days": "review days of this run",
             "weeks": "review weeks of this run"}[r["source"]]
    state = (f"ongoing, first alerted {r['first_alerted']}" if r["status"] == "ongoing"
             else "new")
    return (f"{r['lead_dimension']} index of {where}{more} fell {-r['change']:.1f} points "
            f"({r['baseline']:.1f} → {r['current']:.1f}, {r['pattern']}) since {r['started']} "
            f"({scope}; {state}); q = {r['q_value']:.2g}; {r['reviews']:,} reviews, "
            f"{r['mentions']:,} mentions (baseline {r['baseline_mentions']:,})")


def detect(
    sat: pd.DataFrame,
    history: pd.DataFrame,
    previous: pd.DataFrame | None,
    run_date: date,
    run_id: str,
    *,
    window: int = 7,
    drop: float = 5.0,
    alpha: float = 0.01,
    min_mentions: int = 50,
    groupings: Sequence[str] = ("all", "category", "product_id", "lang"),
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tonight's drop tests, incidents and incident groups.

    ``sat`` is this run's satisfaction table, ``history`` the ``history_satisfaction`` rows of
    earlier run dates (:data:`DETECT_COLUMNS` suffice), ``previous`` the ``alerts`` rows of the
    previous run date (or None). Returns ``(tests, alerts, alert_groups)``: one row per tested
    series (the drill-down; merged into ``trends``), one per incident
    (:data:`ALERTS_SCHEMA`, without examples) and one per group of an incident
    (:data:`ALERT_GROUPS_SCHEMA`).
    """
    tests = _tests(sat, history, run_date, window, min_mentions, groupings)
    tests["in_alarm"] = inc.in_alarm(tests, alpha=alpha, drop=drop, min_mentions=min_mentions)
    if previous is not None and not previous.empty and "incident_id" in previous:
        previous = previous.dropna(subset=["incident_id"])
        previous = previous.assign(first_alerted=pd.to_datetime(
            previous["first_alerted"]).dt.date)
    else:
        previous = None
    incidents, groups = inc.assemble(tests[tests["in_alarm"]], previous)
    if incidents.empty:
        return (tests, pd.DataFrame(columns=ALERTS_SCHEMA.names),
                pd.DataFrame(columns=ALERT_GROUPS_SCHEMA.names))
    new = incidents["status"] == "new"
    incidents.loc[new, "incident_id"] = incidents.loc[new, "dimension"] + "-" + str(run_date)
    incidents.loc[new, "first_alerted"] = run_date
    incidents["run_date"], incidents["run_id"] = run_date, run_id
    incidents["message"] = incidents.apply(_message, axis=1)
    incidents["example_ids"] = [[] for _ in range(len(incidents))]
    incidents["example_texts"] = [[] for _ in range(len(incidents))]
    # Largest first: by the lead's lost satisfied mentions.
    incidents = incidents.assign(_loss=-incidents["change"] * incidents["mentions"]).sort_values(
        ["_loss", "dimension"], ascending=[False, True]).drop(columns="_loss")
    ids = dict(zip(incidents["dimension"], incidents["incident_id"], strict=True))
    groups = groups.assign(
        incident_id=groups["incident"].map(ids), run_date=run_date, run_id=run_id,
        current=groups["index"])
    return (tests, incidents.reset_index(drop=True)[ALERTS_SCHEMA.names],
            groups.sort_values(["incident_id", "rank"])[ALERT_GROUPS_SCHEMA.names]
            .reset_index(drop=True))


def with_detection(trend: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """The ``trends`` rows with the detector's columns, plus the within-run (day/week) rows."""
    det = tests.rename(columns={"baseline": "baseline_index", "baseline_se": "baseline_index_se",
                                "started": "excursion_started", "p_value": "p_drop",
                                "q_value": "q_drop"})
    cols = ["source", "baseline_index", "baseline_index_se", "baseline_points",
            "baseline_mentions", "cusum", "excursion_started", "p_drop", "q_drop", "in_alarm"]
    across = det[det["source"] == "runs"][[*KEYS, *cols]]
    out = trend.merge(across, on=KEYS, how="left")
    out["source"] = "runs"
    inside = det[det["source"] != "runs"]
    if len(inside):
        inside = inside.assign(run_date=trend["run_date"].iloc[0] if len(trend) else None,
                               run_id=trend["run_id"].iloc[0] if len(trend) else None)
        out = pd.concat([out, inside.reindex(columns=out.columns)], ignore_index=True)
    out["in_alarm"] = out["in_alarm"].fillna(False).astype(bool)
    for col in ("baseline_points", "baseline_mentions", "window_runs"):
        out[col] = out[col].fillna(0).astype("int64")
    return out[TRENDS_SCHEMA.names]
