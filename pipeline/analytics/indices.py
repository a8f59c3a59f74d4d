"""Satisfaction indices: the documented formulas behind ``satisfaction.parquet``.

Cite this docstring (or the README section "Index definitions", which repeats it) when building
a dashboard on the tables.

For a group of reviews (all, one product, category, review day, ISO review week such as
``2026-W46``, or language) and a dimension:

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

  ``index_low``/``index_high`` are the 2.5 % and 97.5 % quantiles of Beta(a, b) times 100, and
  ``index_se`` its standard deviation times 100: ``100 * sqrt(a*b / ((a+b)**2 * (a+b+1)))``.
  ``raw_index`` is the unshrunk 100 * (positive + neutral/2) / mentions.
  For the ``all`` group the prior is uninformative (Beta(1, 1) centred at 50).
- ``low_confidence`` is true when mentions < ``min_mentions``: the index is mostly the prior.
  Such groups stay in the table, flagged.
- The ``overall`` dimension applies the same formulas to overall review sentiment
  (every review is a mention).
- The ``composite`` dimension is the ACSI-style overall index: a weighted combination of the
  four dimension rows of the same group, with weights ``w`` summing to 1 (from
  :mod:`pipeline.analytics.drivers`, or ``composite_weights`` in the settings)::

      index       = sum_d w_d * index_d
      index_se    = sqrt(sum_d w_d**2 * index_se_d**2)   (dimensions taken as independent)
      index_low   = max(0,   index - 1.96 * index_se)
      index_high  = min(100, index + 1.96 * index_se)
      raw_index   = sum_d w_d * raw_index_d / sum_d w_d  over dimensions with mentions
      prior_mean  = sum_d w_d * prior_mean_d
      complaint_rate = sum_d w_d * complaint_rate_d

  ``mentions``, ``positive``, ``negative`` and ``neutral`` are summed over the four dimensions,
  ``reviews`` is the group's review count and ``low_confidence`` is mentions < ``min_mentions``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.catalog import DIMENSIONS
from pipeline.config import DEFAULT_DUCKDB_MEMORY
from pipeline.store import duck

GROUPINGS: dict[str, str] = {
    "all": "'all'",
    "product_id": "product_id",
    "category": "category",
    "day": "strftime(CAST(created_at AS DATE), '%Y-%m-%d')",
    # ISO 8601 week (Monday first; the week's year may differ from the calendar year).
    "week": "strftime(CAST(created_at AS DATE), '%G-W%V')",
    "lang": "lang",
}


def count_mentions(reviews_parquet: Path,
                   memory_limit: str = DEFAULT_DUCKDB_MEMORY) -> pd.DataFrame:
    """Per grouping, group and dimension: review, mention and polarity counts (in DuckDB)."""
    src = "reviews"
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
    with duck.connect(memory_limit) as con:
        duck.register_parquet(con, src, reviews_parquet)
        return con.execute(" UNION ALL ".join(parts)).df()


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
    out["index_se"] = 100 * np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    mentioned = out["mentions"].where(out["mentions"] > 0)
    out["raw_index"] = 100 * (out["positive"] + out["neutral"] / 2) / mentioned
    out["complaint_rate"] = out["negative"] / out["reviews"]
    out["low_confidence"] = out["mentions"] < min_mentions
    out["prior_strength"] = np.where(is_all, 2.0, prior_strength)
    return out.sort_values(["grouping", "group", "dimension"]).reset_index(drop=True)


#: Columns of the dimension rows that the composite combines with the weights.
_WEIGHTED = ("index", "prior_mean", "complaint_rate")
_SUMMED = ("mentions", "positive", "negative", "neutral")


def composite_rows(
    sat: pd.DataFrame, weights: dict[str, float], min_mentions: int = 30
) -> pd.DataFrame:
    """The ``composite`` rows (one per grouping/group) from the four dimension rows of ``sat``.

    ``weights`` maps each of :data:`DIMENSIONS` to a non-negative weight; they are normalised
    to sum to 1. Formulas: see the module docstring.
    """
    w = pd.Series({d: float(weights.get(d, 0.0)) for d in DIMENSIONS})
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"composite weights must be non-negative with a positive sum: {weights}")
    w = w / w.sum()
    dims = sat[sat["dimension"].isin(DIMENSIONS)].copy()
    dims["w"] = dims["dimension"].map(w)
    for col in _WEIGHTED:
        dims[f"w_{col}"] = dims["w"] * dims[col]
    dims["w2_var"] = dims["w"] ** 2 * dims["index_se"] ** 2
    has_raw = dims["raw_index"].notna()
    dims["w_raw"] = (dims["w"] * dims["raw_index"]).where(has_raw, 0.0)
    dims["w_has_raw"] = dims["w"].where(has_raw, 0.0)
    keys = ["grouping", "group"]
    agg = dims.groupby(keys, sort=True).agg(
        reviews=("reviews", "max"),
        **{col: (col, "sum") for col in _SUMMED},
        **{col: (f"w_{col}", "sum") for col in _WEIGHTED},
        var=("w2_var", "sum"),
        w_raw=("w_raw", "sum"),
        w_has_raw=("w_has_raw", "sum"),
        prior_strength=("prior_strength", "first"),
    ).reset_index()
    agg["dimension"] = "composite"
    agg["index_se"] = np.sqrt(agg.pop("var"))
    agg["index_low"] = (agg["index"] - 1.96 * agg["index_se"]).clip(lower=0.0)
    agg["index_high"] = (agg["index"] + 1.96 * agg["index_se"]).clip(upper=100.0)
    w_has_raw = agg.pop("w_has_raw")
    agg["raw_index"] = agg.pop("w_raw") / w_has_raw.where(w_has_raw > 0)
    agg["low_confidence"] = agg["mentions"] < min_mentions
    for col in ("reviews", *_SUMMED):
        agg[col] = agg[col].astype("int64")
    return agg[list(sat.columns.intersection(agg.columns))]


def with_composite(
    sat: pd.DataFrame, weights: dict[str, float], min_mentions: int = 30
) -> pd.DataFrame:
    """``sat`` plus its :func:`composite_rows`, sorted like :func:`satisfaction_table`."""
    rows = composite_rows(sat, weights, min_mentions)
    out = pd.concat([sat, rows], ignore_index=True)
    return out.sort_values(["grouping", "group", "dimension"]).reset_index(drop=True)
