"""History tables, trends and alerts: replace-by-run-date, the documented tests, and alerts
raised by a real shift in the data (library level and through the Prefect flow)."""

from __future__ import annotations

import shutil
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURE_ALERT_ALPHA, SAMPLE
from scipy import stats
from typer.testing import CliRunner

from pipeline.analytics import incidents as inc
from pipeline.analytics import trends as history
from pipeline.analytics.indices import count_mentions, satisfaction_table, with_composite
from pipeline.catalog import DIMENSIONS, TABLES
from pipeline.store import history as store
from pipeline.store.duck import tables
from pipeline.store.writers import duckdb_transaction

EQUAL = {d: 0.25 for d in DIMENSIONS}


def synthetic_run(tmp_path, name: str, n: int = 3000, logistics_negative: float = 0.1,
                  seed: int = 0, days: int = 1, late_negative: float | None = None
                  ) -> pd.DataFrame:
    """Satisfaction table of synthetic reviews whose logistics complaint share is given
    (``late_negative`` on the last two of ``days`` review days, when given)."""
    rng = np.random.default_rng(seed)
    day = rng.integers(0, days, n)
    frame = pd.DataFrame({
        "review_id": [f"{name}-{i}" for i in range(n)],
        "sentiment": rng.choice(["positive", "negative", "neutral"], n),
        "product_id": rng.choice(["p1", "p2"], n),
        "category": rng.choice(["food", "tech"], n),
        "lang": "zh",
        "created_at": pd.Timestamp("2026-11-10") + pd.to_timedelta(day, unit="D"),
    })
    for dim in DIMENSIONS:
        frame[dim] = rng.choice(["none", "positive", "negative", "neutral"], n,
                                p=[0.6, 0.25, 0.1, 0.05])
    share = np.full(n, logistics_negative)
    if late_negative is not None:
        share[day >= days - 2] = late_negative
    neg = rng.random(n) < share
    frame["logistics"] = np.where(neg, "negative",
                                  np.where(frame["logistics"] == "negative", "none",
                                           frame["logistics"]))
    path = tmp_path / f"{name}.parquet"
    frame.to_parquet(path)
    return with_composite(satisfaction_table(count_mentions(path)), EQUAL)


def nights(tmp_path, shares: list[float]) -> pd.DataFrame:
    """History rows of synthetic nights 2026-11-01, -02, … with these logistics shares."""
    return pd.concat([
        synthetic_run(tmp_path, f"n{i}", logistics_negative=share, seed=100 + i)
        .assign(run_date=pd.Timestamp(date(2026, 11, 1 + i))) for i, share in enumerate(shares)
    ], ignore_index=True)


def test_tripled_logistics_complaints_raise_one_logistics_incident(tmp_path):
    past = nights(tmp_path, [0.1] * 5)
    tonight = synthetic_run(tmp_path, "d6", logistics_negative=0.3, seed=2)
    tests, alerts, groups = history.detect(tonight, past, None, date(2026, 11, 6), "r6")
    assert len(alerts) == 1
    a = alerts.iloc[0]
    assert (a.dimension, a.status, a.grouping, a.pattern) == ("logistics", "new", "all", "step")
    assert a.started == "2026-11-06" and a.first_alerted == date(2026, 11, 6)
    assert a.q_value < 0.01 and a.change <= -5
    assert a.mentions > 0 and a.baseline_mentions > 0 and a.baseline_points == 5
    assert a.groups == len(groups[groups.incident_id == a.incident_id]) >= 5
    assert {"category", "product_id", "all"} <= set(groups["grouping"])
    # The composite moved because logistics did: it is part of the logistics incident.
    assert set(groups["dimension"]) <= {"logistics", "composite", "overall"}
    assert (groups["rank"] == range(1, len(groups) + 1)).all()
    assert a.q_value == pytest.approx(
        stats.false_discovery_control(tests["p_value"].to_numpy())[
            (tests["grouping"] == "all") & (tests["dimension"] == "logistics")
            & (tests["source"] == "runs")][0])
    # The next night, still down: the same incident, ongoing, started the night before.
    tomorrow = synthetic_run(tmp_path, "d7", logistics_negative=0.3, seed=3)
    past7 = pd.concat([past, tonight.assign(run_date=pd.Timestamp(date(2026, 11, 6)))])
    _, alerts7, _ = history.detect(tomorrow, past7, alerts, date(2026, 11, 7), "r7")
    assert len(alerts7) == 1
    b = alerts7.iloc[0]
    assert (b.status, b.incident_id, b.started) == ("ongoing", a.incident_id, "2026-11-06")
    assert b.first_alerted == date(2026, 11, 6)
    # Same data as the baseline: nothing.
    same = synthetic_run(tmp_path, "d6b", logistics_negative=0.1, seed=5)
    assert history.detect(same, past, None, date(2026, 11, 6), "r6")[1].empty


def test_gradual_decline_over_nights_alerts(tmp_path):
    """The issue's scenario: logistics complaints 10 → 18 → 26 → 34 … % over nights."""
    shares = [0.10, 0.10, 0.10, 0.18, 0.26, 0.34]
    past = nights(tmp_path, shares[:-1])
    found = []
    for night in range(3, len(shares)):
        hist = past[pd.to_datetime(past["run_date"]).dt.day <= night]
        tonight = synthetic_run(tmp_path, f"g{night}", logistics_negative=shares[night],
                                seed=200 + night)
        found.append(len(history.detect(tonight, hist, None, date(2026, 11, 1 + night),
                                        "r")[1]))
    assert found[-1] == 1


def test_drop_inside_one_run_alerts_on_review_days(tmp_path):
    sat = synthetic_run(tmp_path, "multi", n=6000, days=6, logistics_negative=0.1,
                        late_negative=0.35, seed=9)
    _, alerts, _ = history.detect(sat, pd.DataFrame(), None, date(2026, 11, 16), "r")
    assert len(alerts) == 1
    a = alerts.iloc[0]
    assert (a.dimension, a.source, a.grouping) == ("logistics", "days", "day")
    assert a.started == "2026-11-14" and a.group == "2026-11-15"
    stable = synthetic_run(tmp_path, "multi2", n=6000, days=6, logistics_negative=0.1, seed=8)
    assert history.detect(stable, pd.DataFrame(), None, date(2026, 11, 16), "r")[1].empty


def test_few_mentions_never_alert(tmp_path):
    past = nights(tmp_path, [0.1] * 5)
    tonight = synthetic_run(tmp_path, "tiny", n=100, logistics_negative=0.9, seed=4)
    tests, alerts, groups = history.detect(tonight, past, None, date(2026, 11, 6), "r",
                                           min_mentions=150)
    # Logistics collapsed on 90-odd mentions: not enough to alert on.
    assert "logistics" not in set(groups.get("dimension", []))
    assert (alerts["mentions"] >= 150).all() and (groups["mentions"] >= 150).all()
    assert not tests.loc[tests["mentions"] < 150, "in_alarm"].any()


def test_trend_formulas(tmp_path):
    runs = [synthetic_run(tmp_path, f"d{i}", n=800, logistics_negative=0.1 + 0.05 * i, seed=i)
            .assign(run_date=pd.Timestamp(f"2026-11-1{i}")) for i in range(4)]
    past = pd.concat(runs[:3], ignore_index=True)
    trend = history.trends(runs[3], past, date(2026, 11, 13), "r", window=2)
    row = trend[(trend.grouping == "all") & (trend.dimension == "logistics")].iloc[0]
    now = runs[3].query("grouping == 'all' and dimension == 'logistics'").iloc[0]
    prev = runs[2].query("grouping == 'all' and dimension == 'logistics'").iloc[0]
    before = runs[1].query("grouping == 'all' and dimension == 'logistics'").iloc[0]
    assert row.prev_run_date == date(2026, 11, 12)
    assert row.delta_prev == pytest.approx(now["index"] - prev["index"])
    z = (now["index"] - prev["index"]) / np.hypot(now["index_se"], prev["index_se"])
    assert row.p_prev == pytest.approx(2 * stats.norm.sf(abs(z)))
    # Trailing window of 2 runs: the mean of the last two earlier runs.
    assert row.window_runs == 2
    assert row.window_index == pytest.approx((prev["index"] + before["index"]) / 2)
    assert row.window_index_se == pytest.approx(np.hypot(prev["index_se"],
                                                         before["index_se"]) / 2)
    x1, n1 = now["negative"], now["reviews"]
    x0, n0 = prev["negative"], prev["reviews"]
    pooled = (x1 + x0) / (n1 + n0)
    z = (x1 / n1 - x0 / n0) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    assert row.p_complaint_prev == pytest.approx(2 * stats.norm.sf(abs(z)))
    # Review-date buckets are not followed across runs.
    assert set(trend["grouping"]) == {"all", "category", "product_id", "lang"}


def test_benjamini_hochberg_matches_scipy():
    p = np.array([0.001, 0.04, 0.03, np.nan, 0.5, 0.0001, 0.2])
    q = inc.adjust(p)
    ok = ~np.isnan(p)
    assert np.isnan(q[3])
    assert np.allclose(q[ok], stats.false_discovery_control(p[ok]))


def _append(db, run_date, sources) -> None:
    with duckdb_transaction(db) as con:
        store.write_history(con, run_date, sources)


def test_rerunning_a_date_replaces_it_atomically(tmp_path):
    db = tmp_path / "h.duckdb"
    sat = synthetic_run(tmp_path, "a", n=300)
    src = tmp_path / "sat.parquet"
    sat.assign(run_date=pd.Timestamp("2026-11-14")).to_parquet(src)
    for _ in range(2):
        _append(db, date(2026, 11, 14), {"history_satisfaction": src})
    src2 = tmp_path / "sat2.parquet"
    sat.assign(run_date=pd.Timestamp("2026-11-15"), extra=1).to_parquet(src2)
    _append(db, date(2026, 11, 15), {"history_satisfaction": src2})
    con = duckdb.connect(str(db))
    counts = dict(con.execute("SELECT run_date, count(*) FROM history_satisfaction GROUP BY 1")
                  .fetchall())
    con.close()
    assert counts == {date(2026, 11, 14): len(sat), date(2026, 11, 15): len(sat)}
    # A failing write inside the transaction leaves the table as it was.
    with pytest.raises(duckdb.Error):
        _append(db, date(2026, 11, 15), {
            "history_satisfaction": src2, "history_drivers": tmp_path / "missing.parquet"})
    con = duckdb.connect(str(db))
    assert con.execute("SELECT count(*) FROM history_satisfaction").fetchone()[0] == 2 * len(sat)
    assert "history_drivers" not in tables(con)
    con.close()


def _history_counts(db) -> dict[str, dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            table: dict(con.execute(f"SELECT run_date, count(*) FROM {table} GROUP BY 1")
                        .fetchall())
            for table in (t.history for t in TABLES.values() if t.history)
        }
    finally:
        con.close()


def test_two_days_through_the_flow(two_day_runs):
    out, records, _day2 = two_day_runs
    alerts = pd.read_parquet(out / "alerts.parquet")
    assert ("all", "logistics", "new") in set(
        zip(alerts["grouping"], alerts["dimension"], alerts["status"], strict=True))
    assert len(alerts) == alerts["dimension"].nunique()  # one incident per dimension
    assert records[1]["alerts"] == len(alerts) > 0
    groups = pd.read_parquet(out / "alert_groups.parquet")
    assert set(groups["incident_id"]) == set(alerts["incident_id"])
    counts = _history_counts(out / "revsat.duckdb")
    assert set(counts["history_runs"]) == {date(2026, 11, 14), date(2026, 11, 15)}
    assert all(n == 1 for n in counts["history_runs"].values())
    con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
    try:
        for table in ("alerts", "alert_groups", "trends", "drivers", "complaint_terms",
                      "satisfaction"):
            n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert n == len(pd.read_parquet(out / f"{table}.parquet")), table
        assert con.execute("SELECT count(*) FROM history_alerts WHERE run_date = DATE "
                           "'2026-11-15'").fetchone()[0] == len(alerts)
    finally:
        con.close()


def test_rerun_same_date_and_fail_on_alerts_exit_code(two_day_runs, tmp_path, tiny_baseline_dir):
    """Re-running 2026-11-15 via the CLI with --fail-on-alerts: exit 3, outputs published,
    and every history table holds each date once."""
    from revsat.cli import app

    src, _records, day2 = two_day_runs
    out = tmp_path / "copy"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns(".revsat"))
    before = _history_counts(out / "revsat.duckdb")
    # as the fixture ran (count_repeats: day 2 repeats day 1)
    env = {"REVSAT_ALERT_ALPHA": str(FIXTURE_ALERT_ALPHA), "REVSAT_COUNT_REPEATS": "true"}
    result = CliRunner().invoke(app, [
        "score", str(day2), "--out", str(out), "--model", str(tiny_baseline_dir),
        "--run-date", "2026-11-15", "--no-progress", "--fail-on-alerts",
    ], env=env)
    assert result.exit_code == 3, result.output
    assert "alert" in result.output
    after = _history_counts(out / "revsat.duckdb")
    assert after == before
    assert len(pd.read_parquet(out / "alerts.parquet")) > 0
    # Scoring day 1 again under its own date compares with nothing earlier: no alerts, exit 0.
    result = CliRunner().invoke(app, [
        "score", str(SAMPLE), "--out", str(out), "--model", str(tiny_baseline_dir),
        "--run-date", "2026-11-14", "--no-progress", "--fail-on-alerts",
    ], env=env)
    assert result.exit_code == 0, result.output
    assert _history_counts(out / "revsat.duckdb") == before


def test_readme_dashboard_sql_runs(two_day_runs):
    """Every query of the README's "Dashboard SQL" section runs and returns rows."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Dashboard SQL", 1)[1].split("\n## ", 1)[0]
    queries = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    assert len(queries) >= 4
    out, _, _ = two_day_runs
    con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
    try:
        for query in queries:
            rows = con.execute(query).fetchall()
            assert rows, query
    finally:
        con.close()
