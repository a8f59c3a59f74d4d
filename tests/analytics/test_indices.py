"""The satisfaction table recomputes exactly from reviews.parquet with the documented formulas
(pipeline/scoring.py docstring, README "Index definitions"), composite included."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.analytics.indices import count_mentions, satisfaction_table, with_composite
from pipeline.catalog import DIMENSIONS

GROUP_KEYS = {
    "all": lambda f: pd.Series("all", index=f.index),
    "product_id": lambda f: f["product_id"],
    "category": lambda f: f["category"],
    "lang": lambda f: f["lang"],
    "day": lambda f: f["created_at"].dt.strftime("%Y-%m-%d"),
    "week": lambda f: f["created_at"].dt.isocalendar().pipe(
        lambda c: c["year"].astype(str) + "-W" + c["week"].astype(str).str.zfill(2)),
}


def make_reviews(tmp_path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = ["none", "positive", "negative", "neutral"]
    frame = pd.DataFrame(
        {
            "review_id": [str(i) for i in range(n)],
            "sentiment": rng.choice(["positive", "negative", "neutral"], n),
            "product_id": rng.choice(["p1", "p2", "p3"], n),
            "category": rng.choice(["food", "tech"], n),
            "lang": rng.choice(["zh", "en"], n),
            "created_at": pd.to_datetime("2026-11-01")
            + pd.to_timedelta(rng.integers(0, 5, n), "D"),
        }
    )
    for dim in DIMENSIONS:
        frame[dim] = rng.choice(labels, n, p=[0.6, 0.2, 0.15, 0.05])
    path = tmp_path / "reviews.parquet"
    frame.to_parquet(path)
    return frame, path


def expected_row(group: pd.DataFrame, dim: str, prior_mean: float, strength: float) -> dict:
    col = "sentiment" if dim == "overall" else dim
    pos = int((group[col] == "positive").sum())
    neg = int((group[col] == "negative").sum())
    neu = int((group[col] == "neutral").sum())
    a = strength * prior_mean / 100 + pos + neu / 2
    b = strength * (1 - prior_mean / 100) + neg + neu / 2
    return {
        "reviews": len(group),
        "mentions": pos + neg + neu,
        "index": 100 * a / (a + b),
        "index_low": 100 * stats.beta.ppf(0.025, a, b),
        "index_high": 100 * stats.beta.ppf(0.975, a, b),
        "index_se": 100 * np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))),
        "complaint_rate": neg / len(group),
    }


def recompute(frame: pd.DataFrame, weights: dict[str, float], strength: float = 10.0
              ) -> dict[tuple[str, str, str], dict]:
    """Every row of the satisfaction table from review rows, with the documented formulas."""
    want = {}
    for grouping, key in GROUP_KEYS.items():
        keys = key(frame)
        for name, group in frame[keys.notna()].groupby(keys[keys.notna()]):
            for dim in (*DIMENSIONS, "overall"):
                col = "sentiment" if dim == "overall" else dim
                mentioned = frame[frame[col] != "none"]
                prior = 100 * ((mentioned[col] == "positive").sum()
                               + (mentioned[col] == "neutral").sum() / 2) / len(mentioned)
                want[grouping, str(name), dim] = (
                    expected_row(group, dim, 50.0, 2.0) if grouping == "all"
                    else expected_row(group, dim, prior, strength))
            rows = [want[grouping, str(name), d] for d in DIMENSIONS]
            w = [weights[d] for d in DIMENSIONS]
            index = sum(wi * r["index"] for wi, r in zip(w, rows, strict=True))
            se = np.sqrt(sum(wi**2 * r["index_se"] ** 2 for wi, r in zip(w, rows, strict=True)))
            want[grouping, str(name), "composite"] = {
                "reviews": len(group),
                "mentions": sum(r["mentions"] for r in rows),
                "index": index, "index_se": se,
                "index_low": max(0.0, index - 1.96 * se),
                "index_high": min(100.0, index + 1.96 * se),
                "complaint_rate": sum(wi * r["complaint_rate"]
                                      for wi, r in zip(w, rows, strict=True)),
            }
    return want


def assert_matches(sat: pd.DataFrame, want: dict) -> None:
    got = sat.set_index(["grouping", "group", "dimension"])
    assert len(got) == len(want)
    for key, values in want.items():
        row = got.loc[key]
        for col, value in values.items():
            assert row[col] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, col)


@pytest.mark.parametrize("grouping", ["all", "product_id", "category", "lang"])
def test_index_recomputes_from_reviews(tmp_path, grouping):
    frame, path = make_reviews(tmp_path)
    sat = satisfaction_table(count_mentions(path), prior_strength=10, min_mentions=30)
    for dim in (*DIMENSIONS, "overall"):
        col = "sentiment" if dim == "overall" else dim
        mentioned = frame[frame[col] != "none"]
        pos = (mentioned[col] == "positive").sum()
        neu = (mentioned[col] == "neutral").sum()
        prior = 100 * (pos + neu / 2) / len(mentioned)
        groups = [("all", frame)] if grouping == "all" else list(frame.groupby(grouping))
        for name, group in groups:
            row = sat[(sat.grouping == grouping) & (sat.group == str(name))
                      & (sat.dimension == dim)].iloc[0]
            want = (expected_row(group, dim, 50.0, 2.0) if grouping == "all"
                    else expected_row(group, dim, prior, 10.0))
            for key, value in want.items():
                assert row[key] == pytest.approx(value, rel=1e-9), (grouping, name, dim, key)


def test_shrinkage_pulls_small_groups_and_flags_them(tmp_path):
    _frame, path = make_reviews(tmp_path, n=60)
    sat = satisfaction_table(count_mentions(path), prior_strength=10, min_mentions=30)
    day = sat[(sat.grouping == "day") & (sat.dimension == "logistics")]
    assert day["low_confidence"].all()
    # Shrunk index lies between the raw index and the prior.
    for _, r in day.dropna(subset=["raw_index"]).iterrows():
        lo, hi = sorted([r.raw_index, r.prior_mean])
        assert lo - 1e-9 <= r["index"] <= hi + 1e-9
    assert (sat["index_low"] <= sat["index"]).all() and (sat["index"] <= sat["index_high"]).all()


def test_day_groups_use_review_dates(tmp_path):
    frame, path = make_reviews(tmp_path)
    sat = satisfaction_table(count_mentions(path))
    days = sorted(sat[sat.grouping == "day"]["group"].unique())
    assert days == sorted(frame["created_at"].dt.strftime("%Y-%m-%d").unique())


def test_composite_and_week_recompute_from_reviews(tmp_path):
    frame, path = make_reviews(tmp_path)
    weights = {"logistics": 0.4, "quality": 0.3, "service": 0.2, "privacy": 0.1}
    sat = with_composite(satisfaction_table(count_mentions(path)), weights)
    assert set(sat["grouping"]) == set(GROUP_KEYS)
    assert set(sat["dimension"]) == {*DIMENSIONS, "overall", "composite"}
    assert_matches(sat, recompute(frame, weights))
    weeks = sorted(sat[sat.grouping == "week"]["group"].unique())
    assert weeks == ["2026-W44", "2026-W45"]  # 2026-11-01 is a Sunday


def test_published_indices_recompute_from_reviews_parquet(sample_run):
    """The pipeline's own outputs: satisfaction.parquet from reviews.parquet and the
    published driver weights, every grouping, dimension and column the README defines."""
    out, _ = sample_run
    reviews = pd.read_parquet(out / "reviews.parquet")
    sat = pd.read_parquet(out / "satisfaction.parquet")
    drivers = pd.read_parquet(out / "drivers.parquet").set_index("dimension")["weight"]
    assert drivers.sum() == pytest.approx(1.0)
    assert_matches(sat, recompute(reviews, drivers.to_dict()))
