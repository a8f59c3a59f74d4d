"""Scale-out: chunks scored in parallel by Prefect's Dask task runner give the same tables as
the sequential run."""

from __future__ import annotations

import pandas as pd
import pytest
from test_flow import big_export

from pipeline.config import Settings

pytest.importorskip("prefect_dask")


@pytest.mark.slow
def test_dask_run_matches_sequential(tmp_path, tiny_baseline_dir):
    from flows.score import score_reviews

    export = tmp_path / "big.csv"
    big_export(export, 3_000)
    settings = Settings(model=str(tiny_baseline_dir), chunk_rows=400, progress=False)
    records = {}
    for runner in ("sequential", "dask"):
        records[runner] = score_reviews(
            [str(export)], str(tmp_path / runner), model=str(tiny_baseline_dir),
            run_date=pd.Timestamp("2026-11-14").date(), settings=settings,
            task_runner=runner, workers=2,
        )
    seq, par = records["sequential"], records["dask"]
    for key in ("rows_in", "rows_scored", "rows_rejected", "warnings"):
        assert seq[key] == par[key], key
    assert seq["rows_in"] == 3_000
    for table in ("reviews", "rejected", "warnings", "satisfaction"):
        a = pd.read_parquet(tmp_path / "sequential" / f"{table}.parquet").drop(columns="run_id")
        b = pd.read_parquet(tmp_path / "dask" / f"{table}.parquet").drop(columns="run_id")
        pd.testing.assert_frame_equal(a, b, obj=table)
