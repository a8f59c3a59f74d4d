"""Complaint terms: log-odds with an informative Dirichlet prior, stop words, and examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.analytics.evidence import complaint_terms, log_odds_z
from pipeline.catalog import COMPLAINT_TERMS_SCHEMA, DIMENSIONS, REVIEWS_SCHEMA


def reviews_with_terms(tmp_path, n: int = 600, seed: int = 0):
    """Logistics complaints say 慢/late/快递; everyone says 的/good/质量; quality complaints
    say 坏了."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        labels = dict.fromkeys(DIMENSIONS, "none")
        tokens = ["的", "good", "质量"] if rng.random() < 0.7 else ["还行"]
        if i % 5 == 0:
            labels["logistics"] = "negative"
            tokens += ["慢", "快递"] + (["late"] if i % 10 == 0 else [])
        elif i % 7 == 0:
            labels["quality"] = "negative"
            tokens += ["坏了", "快递"]
        rows.append({"review_id": f"r{i:04d}", "text": " ".join(tokens), "tokens": tokens,
                     **labels, **{f"{d}_confidence": 0.5 + (i % 50) / 100 for d in DIMENSIONS}})
    frame = pd.DataFrame(rows)
    path = tmp_path / "reviews.parquet"
    frame.to_parquet(path)
    return frame, path


def test_top_terms_and_examples(tmp_path):
    frame, path = reviews_with_terms(tmp_path)
    terms = complaint_terms(path, "run1", pd.Timestamp("2026-11-14").date(), top_n=5)
    assert list(terms.columns) == COMPLAINT_TERMS_SCHEMA.names
    logistics = terms[terms.dimension == "logistics"].sort_values("rank")
    assert logistics["term"].iloc[0] == "慢"
    # 快递 also appears in quality complaints (the background), so it ranks below late.
    assert list(logistics["term"][1:3]) == ["late", "快递"]
    assert "的" not in set(terms["term"])  # stop word
    assert "good" not in set(logistics["term"])  # as common everywhere: not a complaint term
    assert terms[terms.dimension == "quality"]["term"].iloc[0] == "坏了"
    assert terms[terms.dimension == "service"].empty
    for row in terms.itertuples():
        assert 1 <= len(row.example_ids) <= 3
        assert len(set(row.example_texts)) == len(row.example_texts)  # no repeated text
        ex = frame.set_index("review_id").loc[list(row.example_ids)]
        assert (ex[row.dimension] == "negative").all()
        assert ex["tokens"].map(lambda t, term=row.term: term in t).all()
        conf = ex[f"{row.dimension}_confidence"].to_numpy()
        assert (np.diff(conf) <= 0).all()  # most confident first
    slow = logistics.iloc[0]
    assert slow.target_reviews == (frame["logistics"] == "negative").sum()
    assert slow.target_share == pytest.approx(1.0)


def test_log_odds_formula():
    target = np.array([30.0, 5.0, 100.0])
    background = np.array([10.0, 50.0, 900.0])
    delta, z = log_odds_z(target, background, prior_size=100.0)
    a = 100.0 * (target + background) / (target + background).sum()
    n_t, n_b = target.sum(), background.sum()
    want = (np.log((target + a) / (n_t + 100 - target - a))
            - np.log((background + a) / (n_b + 100 - background - a)))
    assert np.allclose(delta, want)
    assert np.allclose(z, want / np.sqrt(1 / (target + a) + 1 / (background + a)))
    assert z[0] > 0 > z[1]


def test_no_complaints_gives_an_empty_table(tmp_path):
    frame = pd.DataFrame({"review_id": ["a", "b"], "text": ["x", "y"],
                          "tokens": [["好"], ["好"]],
                          **{d: ["none", "none"] for d in DIMENSIONS},
                          **{f"{d}_confidence": [0.9, 0.9] for d in DIMENSIONS}})
    frame.to_parquet(tmp_path / "r.parquet")
    terms = complaint_terms(tmp_path / "r.parquet", "r", pd.Timestamp("2026-11-14").date())
    assert terms.empty and list(terms.columns) == COMPLAINT_TERMS_SCHEMA.names


def test_a_run_without_reviews_has_no_complaint_terms(tmp_path):
    # every row rejected: the table is empty (it used to fail on a column-selecting mask)
    path = tmp_path / "reviews.parquet"
    import pyarrow.parquet as pq

    pq.write_table(REVIEWS_SCHEMA.empty_table(), path)
    terms = complaint_terms(path, "r1", pd.Timestamp("2026-11-14").date())
    assert terms.empty and list(terms.columns) == COMPLAINT_TERMS_SCHEMA.names
