"""Driver weights: known weights are recovered, fallbacks and configured weights behave as
documented, and the grouped fit equals the fit over one row per review."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from pipeline.analytics.drivers import (
    POLARITY_SCORE,
    SENTIMENT_SCORE,
    driver_weights,
    fit_drivers,
    label_combinations,
    normalise,
)
from pipeline.catalog import DIMENSIONS

TRUE = {"logistics": 0.4, "quality": 0.3, "service": 0.2, "privacy": 0.1}


def synthetic_reviews(n: int = 20_000, beta: dict[str, float] = TRUE, seed: int = 0):
    """Reviews whose expected overall score is sum_d beta_d * x_d (linear by construction)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        d: rng.choice(["none", "positive", "negative", "neutral"], n, p=[0.4, 0.25, 0.25, 0.1])
        for d in DIMENSIONS
    })
    mean = sum(beta[d] * frame[d].map(POLARITY_SCORE) for d in DIMENSIONS).to_numpy()
    u = rng.random(n)
    # E[y] = mean with y in {-1, 0, +1}: +1 with prob. mean (if >= 0), -1 with prob. -mean.
    y = np.where(mean >= 0, np.where(u < mean, 1, 0), np.where(u < -mean, -1, 0))
    frame["sentiment"] = pd.Series(y).map({1: "positive", 0: "neutral", -1: "negative"})
    return frame


def test_recovers_known_weights(tmp_path):
    reviews = synthetic_reviews()
    path = tmp_path / "reviews.parquet"
    reviews.to_parquet(path)
    found = driver_weights(path)
    assert found.method == "ridge"
    for d in DIMENSIONS:
        assert found.weights[d] == pytest.approx(TRUE[d], abs=0.03), d
    assert sum(found.weights.values()) == pytest.approx(1.0)
    table = found.table()
    assert list(table["dimension"]) == list(DIMENSIONS)
    assert table["reviews"].iloc[0] == len(reviews)


def test_grouped_fit_equals_per_review_fit(tmp_path):
    reviews = synthetic_reviews(n=3000, seed=3)
    path = tmp_path / "reviews.parquet"
    reviews.to_parquet(path)
    combos = label_combinations(path)
    assert combos["n"].sum() == len(reviews) and len(combos) <= 3 * 4 ** 4
    grouped = fit_drivers(combos, alpha=5.0)
    x = np.column_stack([reviews[d].map(POLARITY_SCORE) for d in DIMENSIONS])
    y = reviews["sentiment"].map(SENTIMENT_SCORE)
    direct = Ridge(alpha=5.0).fit(x, y)
    assert np.allclose([grouped.coefficients[d] for d in DIMENSIONS], direct.coef_)
    assert grouped.r2 == pytest.approx(direct.score(x, y))


def test_negative_effect_gets_zero_weight():
    reviews = synthetic_reviews(beta={"logistics": 0.5, "quality": 0.4, "service": 0.0,
                                      "privacy": -0.1}, seed=1).assign(n=1)
    found = fit_drivers(reviews)
    assert found.weights["privacy"] == 0.0
    assert "privacy" in found.reason
    assert found.weights["logistics"] > found.weights["quality"] > 0


def test_equal_weights_when_data_are_too_few():
    few = synthetic_reviews(n=150).assign(n=1)
    found = fit_drivers(few, min_reviews=200)
    assert found.method == "equal" and "150 reviews" in found.reason
    assert found.weights == {d: 0.25 for d in DIMENSIONS}
    rare = synthetic_reviews(n=2000).assign(n=1)
    rare.loc[rare.index[20:], "privacy"] = "none"
    found = fit_drivers(rare, min_mentions=30)
    assert found.method == "equal" and "privacy" in found.reason


def test_configured_weights_override(tmp_path):
    path = tmp_path / "reviews.parquet"
    synthetic_reviews(n=1000).to_parquet(path)
    found = driver_weights(path, configured={"logistics": 2, "quality": 2})
    assert found.method == "configured"
    assert found.weights == {"logistics": 0.5, "quality": 0.5, "service": 0.0, "privacy": 0.0}
    assert found.coefficients  # the fitted coefficients stay for reference
    with pytest.raises(ValueError, match="unknown"):
        normalise({"price": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        normalise({"logistics": -1.0, "quality": 2.0})


def test_settings_accept_weights_from_the_environment(monkeypatch):
    from pipeline.config import Settings

    monkeypatch.setenv("REVSAT_COMPOSITE_WEIGHTS", '{"logistics": 1, "quality": 3}')
    assert Settings().composite_weights == {"logistics": 1.0, "quality": 3.0}
