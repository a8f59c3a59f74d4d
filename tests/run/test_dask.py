"""Scale-out: chunks scored in parallel by Prefect's Dask task runner (and Ray's, where
``prefect-ray`` is installed) give the same tables as the sequential run."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import big_export

from pipeline.config import Settings


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["dask", "ray"])
def test_parallel_run_matches_sequential(tmp_path, tiny_baseline_dir, parallel):
    pytest.importorskip(f"prefect_{parallel}")  # ray is an optional extra, dask is installed
    from flows.score import score_reviews

    export = tmp_path / "big.csv"
    big_export(export, 3_000)
    settings = Settings(model=str(tiny_baseline_dir), chunk_rows=400, progress=False)
    records = {}
    for runner in ("sequential", parallel):
        records[runner] = score_reviews(
            [str(export)], str(tmp_path / runner), model=str(tiny_baseline_dir),
            run_date=pd.Timestamp("2026-11-14").date(), settings=settings,
            task_runner=runner, workers=2,
        )
    seq, par = records["sequential"], records[parallel]
    for key in ("rows_in", "rows_scored", "rows_rejected", "warnings"):
        assert seq[key] == par[key], key
    assert seq["rows_in"] == 3_000
    for table in ("reviews", "rejected", "warnings", "satisfaction"):
        a = pd.read_parquet(tmp_path / "sequential" / f"{table}.parquet").drop(columns="run_id")
        b = pd.read_parquet(tmp_path / parallel / f"{table}.parquet").drop(columns="run_id")
        pd.testing.assert_frame_equal(a, b, obj=table)
