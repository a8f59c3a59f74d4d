"""End-to-end: the Prefect flow over the bundled sample, and larger inputs through the library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE, big_export, score_all

from pipeline.catalog import DIM_LABELS, DIMENSIONS, REVIEWS_SCHEMA, SENTIMENTS
from pipeline.config import Settings
from pipeline.run.part import score_part
from pipeline.run.steps import execute, plan_run, read_chunks
from pipeline.store.writers import current_snapshot


def test_sample_outputs_follow_the_contract(sample_run):
    out, _record = sample_run
    for name in ("reviews.parquet", "rejected.parquet", "satisfaction.parquet", "report.html",
                 "revsat.duckdb"):
        assert (out / name).is_file(), name
    written = pq.read_schema(out / "reviews.parquet")
    assert [(f.name, f.type) for f in written] == [(f.name, f.type) for f in REVIEWS_SCHEMA]
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
    assert set(sat["grouping"]) >= {"all", "product_id", "category", "day", "lang"}
    assert set(sat["dimension"]) >= {*DIMENSIONS, "overall"}
    assert sat["index"].between(0, 100).all()


def test_ten_thousand_rows_conserve(tmp_path, tiny_baseline_dir):
    export = tmp_path / "big.csv"
    empty = big_export(export, 10_000)
    run = score_all(tmp_path / "out", tiny_baseline_dir, [export],
                    Settings(chunk_rows=2_000, progress=False))
    assert run.stats.rows_in == 10_000
    assert run.stats.rows_rejected == empty
    assert len(pd.read_parquet(tmp_path / "out" / "reviews.parquet")) == 10_000 - empty


def test_repeated_texts_go_through_the_model_once(tmp_path, tiny_baseline_dir):
    slow = "物流太慢了，等了一周"
    texts = ["好评", slow, "好评", "Great quality", "好评", slow]
    export = tmp_path / "dups.csv"
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(export, index=False)
    run = score_all(tmp_path / "out", tiny_baseline_dir, [export], full=True)
    assert run.stats.rows_scored == 6 and run.stats.model_rows == 3
    reviews = pd.read_parquet(tmp_path / "out" / "reviews.parquet")
    for _, same in reviews.groupby("text"):
        assert same["p_positive"].nunique() == 1 and same["sentiment"].nunique() == 1
    solo = score_all(tmp_path / "solo", tiny_baseline_dir, [export], full=True,
                     settings=Settings(progress=False, chunk_rows=1))  # no repeats per chunk
    assert solo.stats.model_rows == 6
    other = pd.read_parquet(tmp_path / "solo" / "reviews.parquet")
    assert np.allclose(reviews["p_positive"], other["p_positive"])


def test_unreadable_file_fails_alone(tmp_path, tiny_baseline_dir):
    bad = tmp_path / "corrupt.parquet"
    bad.write_bytes(b"garbage" * 20)
    run = score_all(tmp_path / "out", tiny_baseline_dir, [bad, SAMPLE])
    assert str(bad) in run.stats.failed_files
    assert run.stats.rows_scored > 200


def test_rerun_gives_identical_results(tmp_path, tiny_baseline_dir):
    outputs = []
    for _ in range(2):
        score_all(tmp_path / "out", tiny_baseline_dir, [SAMPLE], full=True)
        outputs.append(pd.read_parquet(tmp_path / "out" / "reviews.parquet").drop(
            columns=["run_id"]))
    pd.testing.assert_frame_equal(outputs[0], outputs[1])
    # only the published snapshot is kept; every output is a link into it
    snapshots = list((tmp_path / "out").glob(".revsat/snapshots/*"))
    assert [p.name for p in snapshots] == [current_snapshot(tmp_path / "out")]
    for name in ("reviews.parquet", "report.html", "run.json"):
        link = tmp_path / "out" / name
        assert link.is_symlink() and link.resolve().parent == snapshots[0].resolve()


def test_duplicate_ids_across_chunks_and_files(tmp_path, tiny_baseline_dir):
    a = tmp_path / "a.csv"
    b = tmp_path / "b.jsonl"
    pd.DataFrame({"id": ["1", "2", "3", "1"], "text": ["好", "差", "ok", "again"]}).to_csv(
        a, index=False)
    pd.DataFrame({"id": ["2", "9"], "text": ["dup", "new"]}).to_json(
        b, orient="records", lines=True)
    run = score_all(tmp_path / "out", tiny_baseline_dir, [a, b],
                    Settings(chunk_rows=2, progress=False))
    reviews = pd.read_parquet(tmp_path / "out" / "reviews.parquet")
    rejected = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    assert sorted(reviews["review_id"]) == ["1", "2", "3", "9"]
    assert reviews.set_index("review_id").loc["1", "text"] == "好"
    assert len(rejected) == 2 and rejected["reason"].str.contains("first seen in").all()
    # one rule, one payload: a rejected duplicate keeps its values as exported
    assert [json.loads(r) for r in rejected.sort_values("source_file")["raw"]] == [
        {"id": "1", "text": "again"}, {"id": "2", "text": "dup"}]
    assert run.stats.rows_in == 6


def test_a_file_named_twice_is_read_once(tmp_path, tiny_baseline_dir, caplog, monkeypatch):
    a = tmp_path / "a.csv"
    pd.DataFrame({"id": ["1", "2", "3"], "text": ["好", "差", "ok"]}).to_csv(a, index=False)
    monkeypatch.chdir(tmp_path)
    run = score_all(tmp_path / "out", tiny_baseline_dir, [a, Path("a.csv"), tmp_path / "a.csv"],
                    Settings(chunk_rows=2, progress=False))
    assert run.stats.rows_in == 3 and run.stats.rows_scored == 3 and run.stats.rows_rejected == 0
    assert sorted(pd.read_parquet(tmp_path / "out" / "reviews.parquet")["review_id"]) == [
        "1", "2", "3"]
    assert sum("read once" in r.getMessage() for r in caplog.records) == 2


def test_killed_run_resumes_from_finished_parts(tmp_path, tiny_baseline_dir):
    export = tmp_path / "big.csv"
    big_export(export, 3_000)
    settings = Settings(chunk_rows=500, progress=False)
    settings = settings.model_copy(update={"model": str(tiny_baseline_dir)})

    class Died(Exception):
        pass

    def dies_after_three_parts(plan, stats):
        for n, (chunk, columns, order, index) in enumerate(read_chunks(plan, export, stats)):
            if n == 3:
                raise Died  # the process "dies" here: 3 parts finished, nothing published
            stats.add(score_part(chunk, columns, order, index, plan.spec))

    plan = plan_run(tmp_path / "out", settings, [export])
    with pytest.raises(Died):
        execute(plan, score=dies_after_three_parts)  # the flow's own sequence and abort path
    assert not (tmp_path / "out" / "reviews.parquet").exists()
    assert not list((tmp_path / "out").glob(".revsat/snapshots/*"))  # the abort dropped it
    assert len(list(plan.parts_dir.glob("*.done.json"))) == 3
    resumed = score_all(tmp_path / "out", tiny_baseline_dir, [export], settings)
    assert resumed.stats.parts_reused == 3
    score_all(tmp_path / "clean", tiny_baseline_dir, [export], settings)
    cols = [c for c in REVIEWS_SCHEMA.names if c != "run_id"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "out" / "reviews.parquet")[cols],
        pd.read_parquet(tmp_path / "clean" / "reviews.parquet")[cols],
    )
    assert not (tmp_path / "out" / ".revsat" / "parts").exists()


def test_incremental_run_reuses_cached_predictions(tmp_path, tiny_baseline_dir):
    first = score_all(tmp_path / "out", tiny_baseline_dir, [SAMPLE])
    assert first.stats.cached == 0
    second = score_all(tmp_path / "out", tiny_baseline_dir, [SAMPLE])
    # Every published review comes from the cache (the rejected duplicate has other text).
    assert second.stats.cached == second.stats.rows_scored
    cols = [c for c in REVIEWS_SCHEMA.names if c != "run_id"]
    after = pd.read_parquet(tmp_path / "out" / "reviews.parquet")[cols]
    full = score_all(tmp_path / "full", tiny_baseline_dir, [SAMPLE], full=True)
    assert full.stats.cached == 0
    pd.testing.assert_frame_equal(after, pd.read_parquet(tmp_path / "full" /
                                                         "reviews.parquet")[cols])


def test_cli_reports_missing_input(tmp_path, tiny_baseline_dir):
    result = subprocess.run(
        [sys.executable, "-m", "revsat.cli", "score", str(tmp_path / "missing.csv"),
         "--out", str(tmp_path / "o"), "--model", str(tiny_baseline_dir), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2  # no usable input at all (README: exit 2)
    assert "no such file" in result.stderr


def test_settings_model_is_honoured(tmp_path, tiny_baseline_dir, monkeypatch):
    """The settings tree picks the model: `model` in revsat.toml, REVSAT_MODEL over it, and the
    CLI's --model over both (without --model the CLI uses the settings)."""
    from typer.testing import CliRunner

    from pipeline.run.steps import score_run
    from revsat.cli import app

    toml = tmp_path / "revsat.toml"
    toml.write_text(f"model = {str(tiny_baseline_dir)!r}\n", encoding="utf-8")
    monkeypatch.setenv("REVSAT_CONFIG", str(toml))
    monkeypatch.delenv("REVSAT_MODEL", raising=False)
    assert Settings().model == str(tiny_baseline_dir)
    result = score_run(tmp_path / "lib", Settings(progress=False), [SAMPLE])
    assert result.record["model_version"] == "test-baseline"
    monkeypatch.setenv("REVSAT_MODEL", "no-such-model")
    assert Settings().model == "no-such-model"  # the environment wins over the file
    cli = CliRunner().invoke(app, ["score", str(SAMPLE), "--out", str(tmp_path / "cli"),
                                   "--no-progress"])
    assert cli.exit_code == 2 and "no-such-model" in cli.output  # read, and refused
    monkeypatch.setenv("REVSAT_MODEL", str(tiny_baseline_dir))
    cli = CliRunner().invoke(app, ["score", str(SAMPLE), "--out", str(tmp_path / "cli"),
                                   "--no-progress"])
    assert cli.exit_code == 0, cli.output
    record = json.loads((tmp_path / "cli" / "run.json").read_text(encoding="utf-8"))
    assert record["model_version"] == "test-baseline"


def test_a_run_of_several_chunks_frees_the_model_before_merging(tmp_path, tiny_baseline_dir):
    from pipeline.run import part
    from pipeline.run.steps import call

    seen = {}

    def step(name, fn, *args):
        if name == "merge":
            seen[name] = part._classifier.cache_info().currsize
        return call(name, fn, *args)

    rows = len(pd.read_csv(SAMPLE))
    for chunk_rows, loaded in ((rows // 3, 0), (rows + 1, 1)):
        part.release_classifiers()
        settings = Settings(model=str(tiny_baseline_dir), chunk_rows=chunk_rows, progress=False)
        result = execute(plan_run(tmp_path / f"out-{chunk_rows}", settings, [SAMPLE]), step=step)
        assert seen["merge"] == loaded, chunk_rows
        assert result.record["rows_in"] == rows


def test_a_memory_cap_too_small_is_a_user_error_and_publishes_nothing(tmp_path,
                                                                       tiny_baseline_dir):
    from pipeline.errors import MemoryCapTooSmall
    from pipeline.run.steps import score_run

    out = tmp_path / "out"
    settings = Settings(model=str(tiny_baseline_dir), duckdb_memory="1MB", progress=False)
    with pytest.raises(MemoryCapTooSmall, match="REVSAT_DUCKDB_MEMORY"):
        score_run(out, settings, [SAMPLE])
    assert not (out / "reviews.parquet").exists()
    done = score_run(out, Settings(model=str(tiny_baseline_dir), progress=False), [SAMPLE])
    assert done.stats.parts_reused > 0  # the parts scored before the failure were kept
