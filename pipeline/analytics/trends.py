"""Run history in the DuckDB file, trends across runs, and alerts.

History
    Every run appends its tables to ``history_*`` tables of ``--out/revsat.duckdb``, keyed by
    ``run_date`` (``--run-date``): ``history_runs`` (one row per run date),
    ``history_satisfaction``, ``history_drivers``, ``history_alerts`` and
    ``history_complaint_terms``. Re-running a date first deletes that date's rows, in the same
    transaction as the insert, so a date is never duplicated and a failed write changes nothing.

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

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import special

from pipeline.catalog import DIMENSIONS
from pipeline.store.writers import duckdb_transaction

#: Keys of a trend row / an alert.
KEYS = ["grouping", "group", "dimension"]

#: History tables and the run output each one accumulates.
HISTORY_TABLES = {
    "history_satisfaction": "satisfaction",
    "history_drivers": "drivers",
    "history_alerts": "alerts",
    "history_complaint_terms": "complaint_terms",
    "history_runs": "runs",
}

TRENDS_SCHEMA = pa.schema(
    [
        ("grouping", pa.string()), ("group", pa.string()), ("dimension", pa.string()),
        ("reviews", pa.int64()), ("mentions", pa.int64()),
        ("index", pa.float64()), ("index_se", pa.float64()), ("complaint_rate", pa.float64()),
        ("low_confidence", pa.bool_()),
        ("prev_run_date", pa.date32()), ("prev_reviews", pa.int64()),
        ("prev_index", pa.float64()), ("prev_index_se", pa.float64()),
        ("delta_prev", pa.float64()), ("p_prev", pa.float64()),
        ("prev_complaint_rate", pa.float64()), ("complaint_delta_prev", pa.float64()),
        ("p_complaint_prev", pa.float64()),
        ("window_runs", pa.int64()), ("window_index", pa.float64()),
        ("window_index_se", pa.float64()), ("delta_window", pa.float64()),
        ("p_window", pa.float64()),
        ("run_date", pa.date32()), ("run_id", pa.string()),
    ]
)

ALERTS_SCHEMA = pa.schema(
    [
        ("run_date", pa.date32()), ("run_id", pa.string()),
        ("grouping", pa.string()), ("group", pa.string()), ("dimension", pa.string()),
        ("kind", pa.string()), ("prev_run_date", pa.date32()),
        ("previous", pa.float64()), ("current", pa.float64()), ("change", pa.float64()),
        ("p_value", pa.float64()), ("q_value", pa.float64()),
        ("reviews", pa.int64()), ("mentions", pa.int64()), ("message", pa.string()),
    ]
)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
            .fetchall()}


def load_history(
    db: Path,
    before: date,
    table: str = "history_satisfaction",
    groupings: Sequence[str] | None = None,
    last_runs: int | None = None,
) -> pd.DataFrame:
    """Rows of a history table with ``run_date`` before ``before`` (empty when none), limited
    to ``groupings`` and to the ``last_runs`` latest run dates when given."""
    if not db.is_file():
        return pd.DataFrame()
    if not table.isidentifier():
        raise ValueError(f"bad table name {table!r}")
    con = duckdb.connect(str(db), read_only=True)
    try:
        if table not in _tables(con):
            return pd.DataFrame()
        where, params = ["run_date < ?"], [before]
        if groupings is not None:
            where.append(f"grouping IN ({', '.join('?' * len(groupings))})")
            params += list(groupings)
        if last_runs is not None:
            where.append(f"run_date IN (SELECT DISTINCT run_date FROM {table} WHERE run_date < ? "
                         f"ORDER BY run_date DESC LIMIT {int(last_runs)})")
            params.append(before)
        return con.execute(
            f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY run_date", params
        ).df()
    finally:
        con.close()


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
    """Benjamini-Hochberg adjusted p-values (q-values); NaN stays NaN and is not counted."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    vals = np.empty(m)
    vals[order] = ranked
    q[ok] = vals
    return q


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


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table of ``schema`` (works for empty frames too)."""
    if frame.empty:
        return schema.empty_table()
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def run_row(record: dict, overall: dict[str, float]) -> pa.Table:
    """The ``history_runs`` row of a run: its record plus the ``all``-group indices."""
    row = {
        "run_date": date.fromisoformat(record["run_date"]),
        **{k: record.get(k) for k in ("run_id", "started_at", "finished_at", "model_version",
                                       "tool_version", "rows_in", "rows_scored",
                                       "rows_rejected", "driver_method", "alerts")},
        "composite_weights": json.dumps(record.get("composite_weights")),
        **{f"{dim}_index": overall.get(dim) for dim in ("composite", "overall", *DIMENSIONS)},
    }
    return pa.Table.from_pylist([row])


def _insert(con: duckdb.DuckDBPyConnection, name: str, source: Path | pa.Table,
            existing: set[str], replace_date: date | None) -> None:
    """Create ``name`` if needed, add new columns, optionally delete ``replace_date``'s rows,
    then insert ``source`` by column name."""
    if not name.isidentifier():
        raise ValueError(f"bad table name {name!r}")
    if isinstance(source, pa.Table):
        con.register("_src", source)
        src = "_src"
    else:
        src = f"read_parquet({_sql_string(str(source))})"
    select = (f"SELECT * REPLACE (CAST(run_date AS DATE) AS run_date) FROM {src}"
              if replace_date is not None else f"SELECT * FROM {src}")
    if name not in existing:
        con.execute(f"CREATE TABLE {name} AS {select} LIMIT 0")
    have = {r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()}
    for col, typ, *_ in con.execute(f"DESCRIBE {select}").fetchall():
        if col not in have:
            con.execute(f'ALTER TABLE {name} ADD COLUMN "{col}" {typ}')
    if replace_date is not None:
        con.execute(f"DELETE FROM {name} WHERE run_date = ?", [replace_date])
    con.execute(f"INSERT INTO {name} BY NAME {select}")
    if isinstance(source, pa.Table):
        con.unregister("_src")


def write_history(con: duckdb.DuckDBPyConnection, run_date: date,
                  sources: dict[str, Path | pa.Table]) -> None:
    """Replace ``run_date``'s rows of each history table with ``sources`` on ``con`` (inside
    the caller's transaction).

    ``sources`` maps a history table name to a Parquet file or an Arrow table. Tables are
    created on first use; columns new to an existing table are added (older rows get null).
    ``run_date`` columns are stored as DATE.
    """
    existing = _tables(con)
    for name, source in sources.items():
        _insert(con, name, source, existing, run_date)


def write_log(con: duckdb.DuckDBPyConnection, name: str, source: Path | pa.Table) -> None:
    """Append ``source`` to table ``name`` as is (no replacement), adding new columns."""
    _insert(con, name, source, _tables(con), None)


def append_history(db: Path, run_date: date, sources: dict[str, Path | pa.Table]) -> None:
    """:func:`write_history` in a transaction of its own on the database file ``db``."""
    with duckdb_transaction(db) as con:
        write_history(con, run_date, sources)


def run_logged(db: Path, run_id: str) -> bool:
    """Whether ``db``'s ``runs`` log holds ``run_id`` (its publication transaction committed)."""
    if not db.is_file():
        return False
    con = duckdb.connect(str(db))  # not read-only: a killed writer's WAL may need replaying
    try:
        if "runs" not in _tables(con):
            return False
        return con.execute("SELECT count(*) FROM runs WHERE run_id = ?",
                           [run_id]).fetchone()[0] > 0
    finally:
        con.close()
