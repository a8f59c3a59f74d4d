"""Complaint terms: the words that mark a dimension's complaints, with example reviews.

For each dimension, the *target* reviews are those labelled ``negative`` on it and the
*background* is every other review of the run. Terms are the review ``tokens`` (jieba words for
Chinese and mixed text, plain words for English), each counted once per review (document
frequency), after dropping stop words — function words and bare negations, which mark
negativity in every dimension but name no theme — digits and one-letter Latin tokens.

Terms are ranked by the log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi
& Quinn 2008, "Fightin' Words", eq. 16-22). With ``y_t``/``y_b`` the term's target/background
counts, ``n_t``/``n_b`` all term counts of each side, ``f`` the term's share of all counts
and ``a0`` the prior size (``prior_size``, default 1000 pseudo-counts), ``a = a0 * f``::

    delta = log((y_t + a) / (n_t + a0 - y_t - a)) - log((y_b + a) / (n_b + a0 - y_b - a))
    var   = 1 / (y_t + a) + 1 / (y_b + a)
    z     = delta / sqrt(var)

The top ``top_n`` terms by ``z`` with at least ``min_count`` target reviews are kept; each gets up
to three example reviews: target reviews containing the term, most confident label first.
Unlike raw counts this ignores words that are merely frequent everywhere, and unlike a plain
ratio it does not crown words seen twice.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.catalog import COMPLAINT_TERMS_SCHEMA, DIMENSIONS
from pipeline.config import DEFAULT_DUCKDB_MEMORY
from pipeline.store import duck

#: Tokens never reported as complaint terms (see the module docstring).
STOP_WORDS = frozenset(
    """的 了 是 我 也 都 就 还 在 有 和 与 就是 这个 那个 一个 我们 你
    你们 他 她 它 他们 吧 啊 呢 吗 嘛 呀 哦 着 过 把 被 给 又 要 会
    说 这 那 买 个 很 太 非常 特别 比较 真的 真 感觉 觉得 东西 没 没有
    不 不是 不会 不能 不要 一 一下 一点 什么 怎么 还是 但是 但 而且 然后
    因为 所以 可以 可能 已经 这样 这么 那么 自己 没什么 地 得 之 以 到
    去 来 上 下 中 后 前 再 才 只 让 对 从 等 能 用 次 点 些
    the a an and or but to of in on at for with from by as is are was were be been being it its
    it's this that these those i me my we our you your he she they them their his her so too
    very not no nor never don't didn't doesn't isn't wasn't won't can't cannot would could should
    will just than then there here have has had do does did am if when what which who how all
    any some also only again after before about into out up down over more most one get got
    really even still much would've i'm i've it'll they're""".split()
)


def _keep(term: str) -> bool:
    if term in STOP_WORDS or term.isdigit():
        return False
    return not (len(term) == 1 and term.isascii())


def term_counts(reviews_parquet: Path, memory_limit: str = DEFAULT_DUCKDB_MEMORY
                ) -> tuple[pd.DataFrame, dict[str, int], int]:
    """Per term: reviews containing it, overall and among each dimension's negative reviews.

    Returns the term table, the number of negative reviews per dimension and the review count.
    """
    neg = ", ".join(f"count(*) FILTER (WHERE {d} = 'negative') AS {d}" for d in DIMENSIONS)
    with duck.connect(memory_limit) as con:
        duck.register_parquet(con, "reviews", reviews_parquet)
        terms = con.execute(
            f"""WITH t AS (SELECT unnest(list_distinct(tokens)) AS term, {", ".join(DIMENSIONS)}
                           FROM reviews)
                SELECT term, count(*) AS total, {neg} FROM t
                WHERE term IS NOT NULL AND length(term) > 0 GROUP BY term"""
        ).df()
        row = con.execute(f"SELECT count(*), {neg} FROM reviews").fetchone()
    assert row is not None
    # .loc with a bool mask: an empty object mask would select columns instead of rows
    terms = terms.loc[terms["term"].map(_keep).astype(bool)].reset_index(drop=True)
    return terms, dict(zip(DIMENSIONS, map(int, row[1:]), strict=True)), int(row[0])


def log_odds_z(
    target: np.ndarray, background: np.ndarray, prior_size: float = 1000.0
) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds ratio and its z-score per term, informative Dirichlet prior (module docstring)."""
    target = np.asarray(target, dtype=float)
    background = np.asarray(background, dtype=float)
    total = target + background
    a = prior_size * total / max(total.sum(), 1.0)
    n_t, n_b = target.sum(), background.sum()
    # A side with no counts, or a single term, has no odds: those terms come out NaN/inf.
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (np.log((target + a) / (n_t + prior_size - target - a))
                 - np.log((background + a) / (n_b + prior_size - background - a)))
        var = 1 / (target + a) + 1 / (background + a)
        return delta, delta / np.sqrt(var)


def top_terms(
    terms: pd.DataFrame,
    negatives: dict[str, int],
    reviews: int,
    top_n: int = 10,
    min_count: int = 3,
    prior_size: float = 1000.0,
) -> pd.DataFrame:
    """The ``top_n`` complaint terms per dimension (without examples)."""
    frames = []
    for dim in DIMENSIONS:
        target = terms[dim].to_numpy(dtype=float)
        background = terms["total"].to_numpy(dtype=float) - target
        delta, z = log_odds_z(target, background, prior_size)
        frame = pd.DataFrame({
            "dimension": dim, "term": terms["term"], "z": z, "log_odds": delta,
            "target_reviews": target.astype("int64"),
            "background_reviews": background.astype("int64"),
        })
        frame = frame[(frame["target_reviews"] >= min_count) & (frame["z"] > 0)
                      & np.isfinite(frame["z"])]
        frame = frame.sort_values(["z", "term"], ascending=[False, True]).head(top_n)
        frame["rank"] = np.arange(1, len(frame) + 1)
        frame["target_share"] = frame["target_reviews"] / max(negatives[dim], 1)
        frame["background_share"] = frame["background_reviews"] / max(
            reviews - negatives[dim], 1)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def add_examples(
    top: pd.DataFrame, reviews_parquet: Path, per_term: int = 3, max_chars: int = 300,
    memory_limit: str = DEFAULT_DUCKDB_MEMORY,
) -> pd.DataFrame:
    """Attach ``example_ids``/``example_texts``: the term's most confidently labelled target
    reviews with distinct texts (cut to ``max_chars``)."""
    out = top.copy()
    if top.empty:
        out["example_ids"] = pd.Series(dtype=object)
        out["example_texts"] = pd.Series(dtype=object)
        return out
    label = "CASE k.dimension " + " ".join(
        f"WHEN '{d}' THEN r.{d}" for d in DIMENSIONS) + " END"
    conf = "CASE k.dimension " + " ".join(
        f"WHEN '{d}' THEN r.{d}_confidence" for d in DIMENSIONS) + " END"
    with duck.connect(memory_limit) as con:
        con.register("k", top[["dimension", "term"]])
        duck.register_parquet(con, "reviews", reviews_parquet)
        # Distinct texts only: exports often repeat a review under several ids.
        hits = con.execute(
            f"""WITH hits AS (
                  SELECT k.dimension, k.term, r.review_id, left(r.text, {int(max_chars)}) AS text,
                         {conf} AS conf
                  FROM reviews r JOIN k
                    ON {label} = 'negative' AND list_contains(r.tokens, k.term)),
                uniq AS (
                  SELECT *, row_number() OVER (PARTITION BY dimension, term, text
                                               ORDER BY conf DESC, review_id) AS dup
                  FROM hits),
                ranked AS (
                  SELECT *, row_number() OVER (PARTITION BY dimension, term
                                               ORDER BY conf DESC, review_id) AS rn
                  FROM uniq WHERE dup = 1)
                SELECT dimension, term, review_id, text FROM ranked
                WHERE rn <= {int(per_term)} ORDER BY dimension, term, rn"""
        ).df()
    grouped = hits.groupby(["dimension", "term"], sort=False)
    ids = grouped["review_id"].agg(list)
    texts = grouped["text"].agg(list)
    key = list(zip(out["dimension"], out["term"], strict=True))
    out["example_ids"] = [ids.get(k, []) for k in key]
    out["example_texts"] = [texts.get(k, []) for k in key]
    return out


def complaint_terms(
    reviews_parquet: Path, run_id: str, run_date: date, top_n: int = 10,
    min_count: int = 3, prior_size: float = 1000.0, per_term: int = 3, max_chars: int = 300,
    memory_limit: str = DEFAULT_DUCKDB_MEMORY,
) -> pd.DataFrame:
    """The ``complaint_terms`` table of a run: top terms per dimension with up to
    ``per_term`` examples each (cut to ``max_chars``)."""
    terms, negatives, reviews = term_counts(reviews_parquet, memory_limit)
    top = add_examples(top_terms(terms, negatives, reviews, top_n, min_count, prior_size),
                       reviews_parquet, per_term, max_chars, memory_limit)
    top["run_id"] = run_id
    top["run_date"] = run_date
    names = COMPLAINT_TERMS_SCHEMA.names
    return top[names] if not top.empty else pd.DataFrame(columns=names)
