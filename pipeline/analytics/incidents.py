"""Drop detection and incidents: frames in, frames out (no I/O, no Prefect).

Method (README "Alerting")
    Every followed series — a (grouping, group, dimension) across nightly runs, or a
    dimension's ``day``/``week`` groups inside one run — is watched by a one-sided,
    standardised CUSUM control chart for a *fall* of the index (Page 1954; Montgomery,
    *Introduction to Statistical Quality Control*, ch. 9). For night (or day) t with index
    ``x_t`` and posterior standard deviation ``s_t``:

    - the *baseline* ``mu`` is the precision-weighted mean of the last ``window`` valid points
      before the current excursion started (it is frozen while the chart is above 0, so a drop
      that persists is still measured against the level before it began), with
      ``var(mu) = phi / sum(1/s_j**2)``;
    - ``phi = max(1, chi2 / (n - 1))`` is the baseline's over-dispersion (its scatter around
      its mean beyond what the posterior deviations explain; 1 with fewer than 2 points);
    - ``z_t = (mu - x_t) / sqrt(phi * s_t**2 + var(mu))`` and
      ``C_t = max(0, C_{t-1} + z_t - k)`` with reference value ``k`` (:data:`K`);
    - a point is *valid* when its group has at least ``min_mentions`` mentions; an invalid or
      missing point leaves the chart as it was;
    - ``started`` is the first point of the current excursion (the chart's last rise from 0).

    The chart says *whether and since when* a series is out of control; its significance is
    the test of the excursion's precision-weighted mean ``xbar`` (its ``L`` points since
    ``started``) against the frozen baseline, both estimated, so their shared error is in the
    variance::

        Z = (mu - xbar) / sqrt(phi / sum_exc(1/s**2) + var(mu))
        p_value = min(1, L * (1 - Phi(Z)))      (Bonferroni over the L possible start points)

    and 1 while the chart is at 0 or there is no baseline yet.

    One night tests every valid series at once; ``q_value`` is the Benjamini-Hochberg
    adjustment (``scipy.stats.false_discovery_control``) over all of them. Under the complete
    null (nothing changed anywhere) BH with valid p-values rejects nothing with probability
    at least ``1 - alpha``, so **a stable night raises an incident with probability at most
    ``alert_alpha``** (the stated false-alarm rate). The data-chosen start makes the p-values
    approximately valid only; ``tests/analytics/test_alerting.py`` measures the rate on simulated
    stable nights (0.6 % at ``alpha`` = 1 %). A series is *in alarm* when
    ``q_value < alpha``, its group has at least ``min_mentions`` mentions tonight, and it is
    at least ``drop`` index points below its baseline tonight.

Incidents
    The series in alarm are grouped by dimension: one incident per dimension and night (the
    ``composite`` and ``overall`` summaries join the largest dimension incident of the night,
    when there is one). Inside an incident, each group's *loss* is the satisfied mentions it
    lost against its baseline, ``-change * mentions / 100``. A product, category or language
    carrying at least half of the incident's loss on its own, and falling at least 1.5 times as
    far as all reviews did, drives it (most specific grouping first); then all reviews, then
    the other groups by loss. The first group is the incident's lead:
    its figures are the incident's. An incident open on the previous run date stays the same
    incident (``status = ongoing``, same ``incident_id`` and ``first_alerted``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special  # scipy.stats alone costs about a second of start-up

#: CUSUM reference value, in standard deviations: a point starts (or extends) an excursion
#: when it is more than K sd below the baseline. 2 keeps excursions of a stable series short
#: (see tests/analytics/test_alerting.py: 1 gave 1.2 % false-alarm nights, over the stated 1 %).
K = 2.0

#: Groupings in order of specificity (drivers are listed most specific first).
SPECIFICITY = {"product_id": 0, "category": 1, "lang": 2, "day": 3, "week": 3, "all": 4}

#: Dimensions that summarise the others: they join a dimension incident of the same night.
SUMMARIES = ("composite", "overall")

SERIES_COLUMNS = ["baseline", "baseline_se", "baseline_points", "baseline_mentions",
                  "phi", "z", "cusum", "started", "first_change", "p_value"]


def _chart(frame: pd.DataFrame, keys: list[str], time: str, window: int, min_mentions: int,
           k: float) -> dict:
    """The chart of every series at every point, as (series x point) matrices."""
    data = frame.reset_index(drop=True)
    series = data.groupby(keys, sort=True, dropna=False).ngroup().to_numpy()
    times = np.sort(data[time].unique())
    col = np.searchsorted(times, data[time].to_numpy())
    n_s, n_t = int(series.max()) + 1, len(times)
    x = np.full((n_s, n_t), np.nan)
    se = np.full((n_s, n_t), np.nan)
    men = np.zeros((n_s, n_t))
    row = np.full((n_s, n_t), -1)
    x[series, col] = data["index"].to_numpy(dtype=float)
    se[series, col] = data["index_se"].to_numpy(dtype=float)
    men[series, col] = data["mentions"].to_numpy(dtype=float)
    row[series, col] = np.arange(len(data))
    valid = np.isfinite(x) & np.isfinite(se) & (se > 0) & (men >= min_mentions)
    rank = np.cumsum(valid, axis=1) - valid  # valid points of the series before each point
    w = np.where(valid, 1.0 / np.where(valid, se, 1.0) ** 2, 0.0)
    xv = np.where(valid, x, 0.0)
    names = ("baseline", "baseline_se", "baseline_points", "baseline_mentions", "phi", "z",
             "cusum", "first_change")
    out = {name: np.full((n_s, n_t), np.nan) for name in names}
    out["start"] = np.full((n_s, n_t), -1)
    out["p_value"] = np.full((n_s, n_t), np.nan)
    out["points"] = np.zeros((n_s, n_t))
    c = np.zeros(n_s)
    start = np.full(n_s, -1)  # point where the current excursion began (-1: none)
    first = np.full(n_s, np.nan)
    ew = np.zeros(n_s)  # the excursion's sum of weights, weighted sum and length
    ewx = np.zeros(n_s)
    length = np.zeros(n_s)
    cols = np.arange(n_t)
    every = np.arange(n_s)
    for t in range(n_t):
        ok = valid[:, t]
        # The baseline: the last `window` valid points before the excursion (or before t).
        until = np.where(start >= 0, start, t)
        lo = rank[every, until] - window
        inwin = valid & (cols[None, :] < until[:, None]) & (rank >= lo[:, None])
        sw = (w * inwin).sum(axis=1)
        n = inwin.sum(axis=1)
        has = ok & (n > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = (w * xv * inwin).sum(axis=1) / sw
            chi2 = (w * (xv - mu[:, None]) ** 2 * inwin).sum(axis=1)
            phi = np.where(n > 1, np.maximum(1.0, chi2 / np.maximum(n - 1, 1)), 1.0)
            z = (mu - x[:, t]) / np.sqrt(phi * se[:, t] ** 2 + phi / sw)
        new_c = np.where(has, np.maximum(0.0, c + np.where(has, z, 0.0) - k), c)
        rising = has & (c == 0) & (new_c > 0)
        ending = has & (new_c == 0)
        first = np.where(rising, x[:, t] - mu, np.where(ending, np.nan, first))
        start = np.where(ending, -1, np.where(rising, t, start))
        grow = has & (new_c > 0)
        ew = np.where(ending, 0.0, ew + np.where(grow, w[:, t], 0.0))
        ewx = np.where(ending, 0.0, ewx + np.where(grow, w[:, t] * xv[:, t], 0.0))
        length = np.where(ending, 0.0, length + grow)
        c = new_c
        # The excursion's mean against the baseline, both estimated (the shared baseline error
        # is in the variance), Bonferroni over the excursion's possible start points.
        with np.errstate(invalid="ignore", divide="ignore"):
            z_exc = (mu - ewx / ew) / np.sqrt(phi / ew + phi / sw)
            p = np.minimum(1.0, length * special.ndtr(-z_exc))
        out["p_value"][:, t] = np.where(has, np.where(grow, p, 1.0), np.nan)
        with np.errstate(divide="ignore"):
            base_se = np.sqrt(phi / sw)
        for name, value in (("baseline", mu), ("baseline_se", base_se),
                            ("baseline_points", n), ("phi", phi), ("z", z),
                            ("baseline_mentions", (men * inwin).sum(axis=1))):
            out[name][:, t] = np.where(has, value, np.nan)
        out["cusum"][:, t] = np.where(ok, c, np.nan)
        out["points"][:, t] = np.where(ok, length, 0)
        out["first_change"][:, t] = np.where(ok, first, np.nan)
        out["start"][:, t] = np.where(ok, start, -1)
    return {"out": out, "row": row, "valid": valid, "times": times, "data": data}


def _frame(chart: dict, s: np.ndarray, t: np.ndarray, k: float) -> pd.DataFrame:
    """Rows of the chart at the points (s, t)."""
    out, times = chart["out"], chart["times"]
    result = chart["data"].iloc[chart["row"][s, t]].reset_index(drop=True)
    for name in ("baseline", "baseline_se", "phi", "z", "cusum", "first_change"):
        result[name] = out[name][s, t]
    for name in ("baseline_points", "baseline_mentions"):
        result[name] = np.nan_to_num(out[name][s, t]).astype("int64")
    st = out["start"][s, t]
    result["started"] = pd.Series([times[i] if i >= 0 else None for i in st], dtype=object)
    # No baseline yet: nothing to test.
    result["p_value"] = np.nan_to_num(out["p_value"][s, t], nan=1.0)
    result["excursion_points"] = out["points"][s, t].astype("int64")
    return result


def cusum(
    frame: pd.DataFrame,
    keys: Sequence[str],
    time: str,
    *,
    window: int = 7,
    min_mentions: int = 50,
    k: float = K,
    path: bool = False,
) -> pd.DataFrame:
    """The CUSUM chart of each series of ``frame`` (see the module docstring).

    ``frame`` has one row per series and point: the ``keys`` columns, the ordered ``time``
    column, ``index``, ``index_se``, ``mentions`` (other columns are kept). Returns one row per
    series, at its last valid point, with :data:`SERIES_COLUMNS` added (``started`` holds a
    ``time`` value or None; ``p_value`` is 1 without a baseline) — or, with ``path``, one row
    per valid point. Vectorised over series; loops over the distinct points only.
    """
    if frame.empty:
        return frame.assign(**{c: pd.Series(dtype=float) for c in SERIES_COLUMNS})
    chart = _chart(frame, list(keys), time, window, min_mentions, k)
    valid = chart["valid"]
    if path:
        s, t = np.nonzero(valid)
    else:
        s = np.flatnonzero(valid.any(axis=1))
        t = valid.shape[1] - 1 - np.argmax(valid[s, ::-1], axis=1)
    return _frame(chart, s, t, k)


def adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values over one night's tests, as
    ``scipy.stats.false_discovery_control`` computes them (tested equal) without importing
    scipy.stats, which costs a second of every run's start-up; NaN stays NaN and is not
    counted."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        kept = np.clip(p[ok], 0.0, 1.0)
        order = np.argsort(kept)
        ranked = kept[order] * len(kept) / np.arange(1, len(kept) + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]  # step-up: monotone from the top
        out = np.empty_like(kept)
        out[order] = np.clip(ranked, 0.0, 1.0)
        q[ok] = out
    return q


def in_alarm(tests: pd.DataFrame, *, alpha: float = 0.01, drop: float = 5.0,
             min_mentions: int = 50) -> pd.Series:
    """Boolean mask of the tested series in alarm (module docstring): q < ``alpha``, at least
    ``drop`` points below the baseline and ``min_mentions`` mentions tonight."""
    change = tests["index"] - tests["baseline"]
    return ((tests["q_value"] < alpha) & (change <= -drop)
            & (tests["mentions"] >= min_mentions)).fillna(False).astype(bool)


def assemble(members: pd.DataFrame, previous: pd.DataFrame | None = None
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Incidents from the series in alarm (module docstring).

    ``members`` holds the tests in alarm: ``grouping``, ``group``, ``dimension``, ``source``,
    ``index``, ``baseline``, ``q_value`` … as :func:`cusum` and :func:`adjust` leave them.
    ``previous`` is the previous run date's incidents (``dimension``, ``incident_id``,
    ``first_alerted``), or None. Returns ``(incidents, groups)``: one row per incident, and
    its groups in order (``rank`` 1 = lead) with the incident's ``incident_id``.
    """
    if members.empty:
        return pd.DataFrame(), pd.DataFrame()
    m = members.copy()
    m["change"] = m["index"] - m["baseline"]
    m["loss"] = (-m["change"]).clip(lower=0) * m["mentions"] / 100
    dims = m[~m["dimension"].isin(SUMMARIES)]
    if not dims.empty:
        # Summary dimensions join the night's largest dimension incident.
        biggest = dims.groupby("dimension")["loss"].max().idxmax()
        m["incident_dimension"] = np.where(m["dimension"].isin(SUMMARIES), biggest,
                                           m["dimension"])
    else:
        m["incident_dimension"] = m["dimension"]
    frames = []
    for dim, g in m.groupby("incident_dimension", sort=True):
        own = g[g["dimension"] == dim]
        total = own.loc[own["grouping"] == "all", "loss"].max() if (
            own["grouping"] == "all").any() else own["loss"].sum()
        share = own["loss"] / total if total and total > 0 else own["loss"] * 0
        g = g.assign(share=share.reindex(g.index).fillna(0.0))
        # A driver carries half the loss and fell clearly more (1.5x) than all reviews did:
        # when every product fell alike, all reviews lead.
        all_change = own.loc[own["grouping"] == "all", "change"]
        sharper = (g["change"] <= 1.5 * all_change.iloc[0]) if len(all_change) else True
        g["driver"] = ((g["dimension"] == dim) & (g["grouping"] != "all")
                       & (g["share"] >= 0.5) & sharper)
        g["_spec"] = g["grouping"].map(SPECIFICITY).fillna(3)
        g["_own"] = g["dimension"] != dim
        g = g.sort_values(["_own", "driver", "_spec", "loss", "q_value"],
                          ascending=[True, False, True, False, True])
        # Non-drivers: by loss, whatever their grouping.
        drivers, rest = g[g["driver"]], g[~g["driver"]]
        # Without a driver, all reviews lead: the fall is broad.
        rest = rest.assign(_notall=rest["grouping"] != "all").sort_values(
            ["_own", "_notall", "loss", "q_value"], ascending=[True, True, False, True]
        ).drop(columns="_notall")
        g = pd.concat([drivers, rest]).drop(columns=["_spec", "_own"])
        g["rank"] = np.arange(1, len(g) + 1)
        frames.append(g)
    groups = pd.concat(frames, ignore_index=True)
    lead = groups[groups["rank"] == 1].set_index("incident_dimension")
    prev = (previous.drop_duplicates("dimension").set_index("dimension")
            if previous is not None and not previous.empty else None)
    rows = []
    for dim, r in lead.iterrows():
        g = groups[groups["incident_dimension"] == dim]
        ongoing = prev is not None and dim in prev.index
        step = (r["excursion_points"] <= 1) or (
            pd.notna(r["first_change"]) and r["change"] < 0
            and r["first_change"] / r["change"] >= 2 / 3)
        rows.append({
            "dimension": dim, "status": "ongoing" if ongoing else "new",
            "pattern": "step" if step else "gradual",
            "incident_id": prev.loc[dim, "incident_id"] if ongoing else None,
            "first_alerted": prev.loc[dim, "first_alerted"] if ongoing else None,
            "started": r["started"], "source": r["source"],
            "grouping": r["grouping"], "group": r["group"], "lead_dimension": r["dimension"],
            "baseline": r["baseline"], "current": r["index"], "change": r["change"],
            "p_value": r["p_value"], "q_value": r["q_value"], "cusum": r["cusum"],
            "reviews": r["reviews"], "mentions": r["mentions"],
            "baseline_mentions": r["baseline_mentions"],
            "baseline_points": r["baseline_points"],
            "complaint_rate": r.get("complaint_rate", np.nan),
            "groups": len(g),
            "group_list": [_where(a, b, d) for a, b, d in
                           zip(g["grouping"], g["group"], g["dimension"], strict=True)],
        })
    incidents = pd.DataFrame(rows)
    return incidents, groups.rename(columns={"incident_dimension": "incident"})


def _where(grouping: str, group: str, dimension: str | None = None) -> str:
    text = "all reviews" if grouping == "all" else f"{grouping}={group}"
    return text if dimension is None else f"{text} ({dimension})"
