"""The satisfaction table recomputes exactly from reviews.parquet with the documented formulas."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.schema import DIMENSIONS
from pipeline.scoring import count_mentions, satisfaction_table


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
        "complaint_rate": neg / len(group),
    }


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
