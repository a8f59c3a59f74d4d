"""End-to-end: the Prefect flow over the bundled sample, and larger inputs through the library."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from conftest import SAMPLE

from pipeline.classify import load_classifier
from pipeline.config import Settings
from pipeline.schema import DIM_LABELS, DIMENSIONS, REVIEWS_SCHEMA, SENTIMENTS
from pipeline.scorer import ScoreRun


def test_sample_outputs_follow_the_contract(sample_run):
    out, _record = sample_run
    for name in ("reviews.parquet", "rejected.parquet", "satisfaction.parquet", "report.html",
                 "revsat.duckdb"):
        assert (out / name).is_file(), name
    assert pq.read_schema(out / "reviews.parquet").remove_metadata() == REVIEWS_SCHEMA
    reviews = pd.read_parquet(out / "reviews.parquet")
    assert set(reviews["sentiment"]) <= set(SENTIMENTS)
    probs = reviews[["p_positive", "p_negative", "p_neutral"]].sum(axis=1)
    assert np.allclose(probs, 1.0)
    for dim in DIMENSIONS:
        assert set(reviews[dim]) <= set(DIM_LABELS)
        assert reviews[f"{dim}_confidence"].between(0, 1).all()
    assert set(reviews["lang"]) <= {"zh", "en", "mixed", "other"}
    assert {"zh", "en", "mixed"} <= set(reviews["lang"])
    assert reviews["review_id"].is_unique
    zh = reviews[reviews["lang"] == "zh"]
    assert zh["tokens"].map(len).gt(0).all()


def test_sample_rows_are_conserved(sample_run):
    out, record = sample_run
    physical_rows = len(pd.read_csv(SAMPLE, dtype=str, keep_default_na=False))
    reviews = pd.read_parquet(out / "reviews.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert record["rows_in"] == physical_rows
    assert len(reviews) + len(rejected) == physical_rows
    assert rejected["reason"].str.len().gt(0).all()
    assert rejected["reason"].str.contains("empty text").any()
    assert rejected["reason"].str.contains("duplicate review_id").any()


def test_duckdb_holds_the_same_tables(sample_run):
    out, _ = sample_run
    con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
    try:
        for table in ("reviews", "rejected", "satisfaction", "warnings"):
            n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert n == len(pd.read_parquet(out / f"{table}.parquet")), table
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] >= 1
    finally:
        con.close()


def test_report_has_sections_and_escapes_text(sample_run):
    out, _ = sample_run
    html = (out / "report.html").read_text(encoding="utf-8")
    for anchor in ('id="indices"', 'id="polarity"', 'id="categories"', 'id="rejected"'):
        assert anchor in html
    assert html.count("data:image/png;base64,") >= 3
    assert "<script" not in html


def test_satisfaction_covers_groups_and_dimensions(sample_run):
    out, _ = sample_run
    sat = pd.read_parquet(out / "satisfaction.parquet")
    assert set(sat["grouping"]) == {"all", "product_id", "category", "day", "lang"}
    assert set(sat["dimension"]) == {*DIMENSIONS, "overall"}
    assert sat["index"].between(0, 100).all()


def big_export(path, n: int) -> int:
    """A synthetic export of ``n`` rows made from the sample, with every 500th text empty."""
    base = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    base = base[base["text"].str.strip() != ""]
    rows = base.sample(n=n, replace=True, random_state=1).reset_index(drop=True)
    rows["review_id"] = [f"B{i:06d}" for i in range(n)]
    rows.loc[rows.index % 500 == 0, "text"] = ""
    rows.to_csv(path, index=False)
    return int((rows.index % 500 == 0).sum())


def test_ten_thousand_rows_conserve(tmp_path, tiny_baseline_dir):
    export = tmp_path / "big.csv"
    empty = big_export(export, 10_000)
    settings = Settings(chunk_rows=2_000, progress=False)
    run = ScoreRun(tmp_path / "out", load_classifier(str(tiny_baseline_dir), settings), settings)
    for chunk in run.chunks(export):
        run.score_chunk(chunk)
    run.finish()
    assert run.stats.rows_in == 10_000
    assert run.stats.rows_rejected == empty
    assert len(pd.read_parquet(tmp_path / "out" / "reviews.parquet")) == 10_000 - empty


def test_unreadable_file_fails_alone(tmp_path, tiny_baseline_dir):
    bad = tmp_path / "corrupt.parquet"
    bad.write_bytes(b"garbage" * 20)
    settings = Settings(progress=False)
    run = ScoreRun(tmp_path / "out", load_classifier(str(tiny_baseline_dir), settings), settings)
    for path in (bad, SAMPLE):
        for chunk in run.chunks(path):
            run.score_chunk(chunk)
    run.close_tables()
    assert str(bad) in run.stats.failed_files
    assert run.stats.rows_scored > 200


def test_rerun_gives_identical_results(tmp_path, tiny_baseline_dir):
    settings = Settings(progress=False)
    outputs = []
    for _ in range(2):
        run = ScoreRun(tmp_path / "out", load_classifier(str(tiny_baseline_dir), settings),
                       settings)
        for chunk in run.chunks(SAMPLE):
            run.score_chunk(chunk)
        run.finish()
        outputs.append(pd.read_parquet(tmp_path / "out" / "reviews.parquet").drop(
            columns=["run_id"]))
    pd.testing.assert_frame_equal(outputs[0], outputs[1])
    assert not list((tmp_path / "out").glob(".staging-*"))


def test_cli_reports_missing_input(tmp_path, tiny_baseline_dir):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "score", str(tmp_path / "missing.csv"),
         "--out", str(tmp_path / "o"), "--model", str(tiny_baseline_dir), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "no such file" in result.stderr
