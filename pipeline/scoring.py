"""Satisfaction indices: the documented formulas behind ``satisfaction.parquet``.

For a group of reviews (all, one product, category, day or language) and a dimension:

- ``reviews``: reviews in the group; ``mentions``: reviews whose label on the dimension is not
  ``none``; ``positive``/``negative``/``neutral``: mentions by polarity.
- ``complaint_rate`` = negative / reviews: the share of the group's reviews that complain about
  the dimension.
- ``index`` (0-100): the posterior mean of the satisfaction share, where a positive mention
  counts 1, a neutral mention 1/2 and a negative 0, under a Beta prior centred on the
  dimension's index over all reviews of the run (``prior_mean``) with ``prior_strength``
  pseudo-mentions::

      a = prior_strength * prior_mean/100 + positive + neutral/2
      b = prior_strength * (1 - prior_mean/100) + negative + neutral/2
      index = 100 * a / (a + b)

  ``index_low``/``index_high`` are the 2.5 % and 97.5 % quantiles of Beta(a, b) times 100.
  ``raw_index`` is the unshrunk 100 * (positive + neutral/2) / mentions.
  For the ``all`` group the prior is uninformative (Beta(1, 1) centred at 50).
- ``low_confidence`` is true when mentions < ``min_mentions``: the index is mostly the prior.
- The ``overall`` dimension applies the same formulas to overall review sentiment
  (every review is a mention).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from pipeline.schema import DIMENSIONS

GROUPINGS: dict[str, str] = {
    "all": "'all'",
    "product_id": "product_id",
    "category": "category",
    "day": "strftime(CAST(created_at AS DATE), '%Y-%m-%d')",
    "lang": "lang",
}


def count_mentions(reviews_parquet: Path) -> pd.DataFrame:
    """Per grouping, group and dimension: review, mention and polarity counts (in DuckDB)."""
    src = "read_parquet(" + "'" + str(reviews_parquet).replace("'", "''") + "')"
    parts = []
    for grouping, expr in GROUPINGS.items():
        for dim in (*DIMENSIONS, "overall"):
            col = "sentiment" if dim == "overall" else dim
            parts.append(
                f"""SELECT '{grouping}' AS grouping, CAST({expr} AS VARCHAR) AS "group",
                    '{dim}' AS dimension, count(*) AS reviews,
                    count(*) FILTER (WHERE {col} <> 'none') AS mentions,
                    count(*) FILTER (WHERE {col} = 'positive') AS positive,
                    count(*) FILTER (WHERE {col} = 'negative') AS negative,
                    count(*) FILTER (WHERE {col} = 'neutral') AS neutral
                FROM {src} WHERE {expr} IS NOT NULL GROUP BY 1, 2, 3"""
            )
    con = duckdb.connect()
    try:
        return con.execute(" UNION ALL ".join(parts)).df()
    finally:
        con.close()


def satisfaction_table(
    counts: pd.DataFrame, prior_strength: float = 10.0, min_mentions: int = 30
) -> pd.DataFrame:
    """Apply the module's formulas to mention counts; one row per grouping/group/dimension."""
    out = counts.copy()
    for col in ("reviews", "mentions", "positive", "negative", "neutral"):
        out[col] = out[col].astype("int64")
    overall = out[out["grouping"] == "all"].set_index("dimension")
    good = overall["positive"] + overall["neutral"] / 2
    prior_mean = (100 * good / overall["mentions"].where(overall["mentions"] > 0)).fillna(50.0)
    out["prior_mean"] = out["dimension"].map(prior_mean).astype(float)
    is_all = out["grouping"] == "all"
    strength = np.where(is_all, 2.0, prior_strength)
    centre = np.where(is_all, 50.0, out["prior_mean"]) / 100
    a = strength * centre + out["positive"] + out["neutral"] / 2
    b = strength * (1 - centre) + out["negative"] + out["neutral"] / 2
    out["index"] = 100 * a / (a + b)
    out["index_low"] = 100 * stats.beta.ppf(0.025, a, b)
    out["index_high"] = 100 * stats.beta.ppf(0.975, a, b)
    mentioned = out["mentions"].where(out["mentions"] > 0)
    out["raw_index"] = 100 * (out["positive"] + out["neutral"] / 2) / mentioned
    out["complaint_rate"] = out["negative"] / out["reviews"]
    out["low_confidence"] = out["mentions"] < min_mentions
    out["prior_strength"] = np.where(is_all, 2.0, prior_strength)
    return out.sort_values(["grouping", "group", "dimension"]).reset_index(drop=True)
