"""Driver analysis: how strongly each dimension moves overall sentiment, as composite weights.

The weights of the ``composite`` index (see :mod:`pipeline.analytics.indices`) come, by
default, from a regression over the run's reviews:

- response ``y``: overall sentiment, ``positive`` = +1, ``neutral`` = 0, ``negative`` = -1;
- one predictor per dimension ``x_d``: ``positive`` = +1, ``negative`` = -1, ``neutral`` and
  ``none`` (not mentioned) = 0, so a coefficient is the change in ``y`` per step from a
  neutral/absent mention to a positive one (and minus that to a negative one);
- ridge regression (L2 penalty ``driver_alpha``, with intercept) over every scored review;
- ``weight_d = max(coef_d, 0) / sum_k max(coef_k, 0)``: dimensions whose polarity does not
  raise overall sentiment get weight 0.

Equal weights (1/4 each) are used instead, with the reason recorded, when the run has fewer
than ``driver_min_reviews`` reviews, when a dimension has fewer than ``driver_min_mentions``
mentions, or when no coefficient is positive. ``composite_weights`` in the settings overrides
all of this (method ``configured``).

The fit runs on the counts of each distinct (sentiment, labels) combination (at most 243)
with those counts as sample weights, which gives the same coefficients as one row per review
and keeps the step fast for millions of reviews.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from pipeline.catalog import DIMENSIONS
from pipeline.config import DEFAULT_DUCKDB_MEMORY
from pipeline.store import duck

#: Polarity encodings of the response and the predictors (see the module docstring).
SENTIMENT_SCORE = {"positive": 1.0, "neutral": 0.0, "negative": -1.0}
POLARITY_SCORE = {"positive": 1.0, "negative": -1.0, "neutral": 0.0, "none": 0.0}


@dataclass
class DriverWeights:
    """Composite weights of one run and how they were found."""

    weights: dict[str, float]
    method: str  # "ridge", "equal" or "configured"
    reason: str
    coefficients: dict[str, float] = field(default_factory=dict)
    mentions: dict[str, int] = field(default_factory=dict)
    reviews: int = 0
    r2: float | None = None
    alpha: float | None = None

    def table(self) -> pd.DataFrame:
        """One row per dimension: the ``drivers`` table (without run_id/run_date)."""
        return pd.DataFrame(
            {
                "dimension": list(DIMENSIONS),
                "weight": [self.weights[d] for d in DIMENSIONS],
                "coefficient": [self.coefficients.get(d, np.nan) for d in DIMENSIONS],
                "mentions": [int(self.mentions.get(d, 0)) for d in DIMENSIONS],
                "method": self.method,
                "reason": self.reason,
                "reviews": int(self.reviews),
                "r2": np.nan if self.r2 is None else float(self.r2),
                "alpha": np.nan if self.alpha is None else float(self.alpha),
            }
        )


def equal_weights() -> dict[str, float]:
    """1/4 per dimension."""
    return {d: 1.0 / len(DIMENSIONS) for d in DIMENSIONS}


def normalise(weights: dict[str, float]) -> dict[str, float]:
    """Weights over :data:`DIMENSIONS` scaled to sum to 1 (missing dimensions get 0)."""
    unknown = sorted(set(weights) - set(DIMENSIONS))
    if unknown:
        raise ValueError(f"unknown dimensions in composite weights: {unknown}")
    values = {d: float(weights.get(d, 0.0)) for d in DIMENSIONS}
    total = sum(values.values())
    if any(v < 0 for v in values.values()) or total <= 0:
        raise ValueError(f"composite weights must be non-negative with a positive sum: {weights}")
    return {d: v / total for d, v in values.items()}


def label_combinations(reviews_parquet: Path,
                       memory_limit: str = DEFAULT_DUCKDB_MEMORY) -> pd.DataFrame:
    """Count reviews per distinct (sentiment, dimension labels) combination, in DuckDB."""
    cols = ", ".join(["sentiment", *DIMENSIONS])
    with duck.connect(memory_limit) as con:
        duck.register_parquet(con, "reviews", reviews_parquet)
        return con.execute(
            f"SELECT {cols}, count(*) AS n FROM reviews GROUP BY ALL ORDER BY ALL"
        ).df()


def fit_drivers(
    combos: pd.DataFrame,
    alpha: float = 1.0,
    min_mentions: int = 30,
    min_reviews: int = 200,
) -> DriverWeights:
    """Driver weights from :func:`label_combinations` output (or one row per review with n=1).

    See the module docstring for the encoding, the model and the fallbacks.
    """
    n = combos["n"].to_numpy(dtype=float) if "n" in combos else np.ones(len(combos))
    reviews = int(n.sum())
    mentions = {d: int(n[(combos[d] != "none").to_numpy()].sum()) for d in DIMENSIONS}
    few = [d for d in DIMENSIONS if mentions[d] < min_mentions]
    if reviews < min_reviews:
        return DriverWeights(equal_weights(), "equal",
                             f"only {reviews} reviews (< {min_reviews})",
                             mentions=mentions, reviews=reviews)
    if few:
        return DriverWeights(
            equal_weights(), "equal",
            f"fewer than {min_mentions} mentions of {', '.join(few)}",
            mentions=mentions, reviews=reviews,
        )
    x = np.column_stack([combos[d].map(POLARITY_SCORE).to_numpy(dtype=float) for d in DIMENSIONS])
    y = combos["sentiment"].map(SENTIMENT_SCORE).to_numpy(dtype=float)
    model = Ridge(alpha=alpha).fit(x, y, sample_weight=n)
    coefs = {d: float(c) for d, c in zip(DIMENSIONS, model.coef_, strict=True)}
    r2 = float(model.score(x, y, sample_weight=n))
    positive = {d: max(c, 0.0) for d, c in coefs.items()}
    if sum(positive.values()) <= 0:
        return DriverWeights(equal_weights(), "equal", "no dimension has a positive coefficient",
                             coefs, mentions, reviews, r2, alpha)
    dropped = [d for d, c in coefs.items() if c <= 0]
    reason = (
        f"ridge regression of overall sentiment on dimension polarity over {reviews} reviews"
        + (f"; {', '.join(dropped)} had no positive effect (weight 0)" if dropped else "")
    )
    return DriverWeights(normalise(positive), "ridge", reason, coefs, mentions, reviews, r2, alpha)


def driver_weights(
    reviews_parquet: Path,
    configured: dict[str, float] | None = None,
    alpha: float = 1.0,
    min_mentions: int = 30,
    min_reviews: int = 200,
    memory_limit: str = DEFAULT_DUCKDB_MEMORY,
) -> DriverWeights:
    """The run's composite weights: ``configured`` when given, else :func:`fit_drivers`."""
    combos = label_combinations(reviews_parquet, memory_limit)
    fitted = fit_drivers(combos, alpha, min_mentions, min_reviews)
    if configured:
        # Keep the fitted coefficients for reference: they show what the data would suggest.
        return DriverWeights(normalise(configured), "configured",
                             "composite_weights set in the configuration",
                             fitted.coefficients, fitted.mentions, fitted.reviews, fitted.r2,
                             fitted.alpha)
    return fitted
