"""Shared fixtures: a tiny baseline trained on the bundled sample labels, and a sample run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "reviews.csv"
SAMPLE_LABELS = ROOT / "data" / "sample" / "labels.jsonl"

# Prefect keeps its state under PREFECT_HOME; tests must not touch the user's.
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".pytest_cache" / "prefect"))
# Prefect's embedded server does not create a missing PREFECT_HOME (in a fresh clone
# .pytest_cache does not exist yet) and then fails with "unable to open database file".
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The embedded server needs more than its default 20 s to start on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Prefect's console handler outlives pytest's captured streams at exit; keep it quiet.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The CLI's reused local Prefect server (revsat.local_server) stops soon after the suite.
os.environ.setdefault("REVSAT_LOCAL_SERVER_IDLE_MINUTES", "2")
# In-process CLI tests use Prefect's temporary server per run, not the reused local server:
# that one stops when idle while this process still queues events for it, and the process then
# spent minutes at exit retrying them. tests/run/test_startup.py starts one explicitly.
os.environ.setdefault("REVSAT_LOCAL_SERVER", "false")


def read_all(path: Path, chunk_rows: int = 100_000) -> tuple[pd.DataFrame, list[dict]]:
    """Read a whole (small) export: all rows and all rejected rows."""
    from pipeline.ingest.readers import iter_chunks

    frames, rejected = [], []
    for chunk in iter_chunks(path, chunk_rows):
        frames.append(chunk.rows)
        rejected.extend(chunk.rejected)
    return pd.concat(frames, ignore_index=True), rejected


def big_export(path, n: int) -> int:
    """A synthetic export of ``n`` rows made from the sample, with every 500th text empty."""
    base = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    base = base[base["text"].str.strip() != ""]
    rows = base.sample(n=n, replace=True, random_state=1).reset_index(drop=True)
    rows["review_id"] = [f"B{i:06d}" for i in range(n)]
    rows.loc[rows.index % 500 == 0, "text"] = ""
    rows.to_csv(path, index=False)
    return int((rows.index % 500 == 0).sum())


def score_all(out, model, paths, settings=None, **options):
    """Score ``paths`` with ``model`` through the library's run sequence (no Prefect) and
    publish; returns the :class:`~pipeline.run.steps.RunResult`."""
    from pipeline.config import Settings
    from pipeline.run.steps import score_run

    settings = (settings or Settings(progress=False)).model_copy(update={"model": str(model)})
    return score_run(out, settings, list(paths), **options)


def sample_labelled() -> pd.DataFrame:
    """The bundled sample joined with its hand labels."""
    reviews = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    with SAMPLE_LABELS.open(encoding="utf-8") as fh:
        labels = pd.DataFrame([json.loads(line) for line in fh if line.strip()])
    reviews = reviews.drop_duplicates("review_id")
    return reviews.merge(labels, left_on="review_id", right_on="id")


@pytest.fixture(scope="session")
def tiny_baseline_dir(tmp_path_factory) -> Path:
    """A real baseline fitted on the sample's own labels (fast; quality is not the point)."""
    from pipeline.catalog import DIMENSIONS
    from pipeline.models.baseline import BaselineModel
    from pipeline.text.preprocess import preprocess

    data = preprocess(sample_labelled())
    model = BaselineModel().fit(
        list(data["tokens"]), list(data["sentiment"]),
        list(data["tokens"]), {d: list(data[d]) for d in DIMENSIONS},
    )
    model.metadata = {"version": "test-baseline"}
    return model.save(tmp_path_factory.mktemp("models") / "baseline")


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, tiny_baseline_dir) -> tuple[Path, dict]:
    """One run of the real Prefect flow over the bundled sample."""
    from flows.score import score_reviews
    from pipeline.config import Settings

    out = tmp_path_factory.mktemp("sample-run")
    settings = Settings(model=str(tiny_baseline_dir), progress=False)
    record = score_reviews([str(SAMPLE)], str(out), model=str(tiny_baseline_dir),
                           settings=settings)
    return out, record


#: The false-discovery rate of the two-day fixture's runs (see two_day_runs).
FIXTURE_ALERT_ALPHA = 0.05


def shifted_export(path: Path, copies: int = 2) -> Path:
    """The sample plus ``copies`` extra copies (new ids) of every review hand-labelled
    logistics-negative: a second day on which logistics complaints roughly triple."""
    reviews = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    logistics = sample_labelled().query("logistics == 'negative'")["review_id"]
    extra = reviews[reviews["review_id"].isin(set(logistics))]
    frames = [reviews] + [extra.assign(review_id=extra["review_id"] + f"-x{i}")
                          for i in range(copies)]
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def two_day_runs(tmp_path_factory, tiny_baseline_dir) -> tuple[Path, list[dict], Path]:
    """Two runs of the flow into one folder: the sample on 2026-11-14, then the shifted export
    on 2026-11-15. Returns the output folder, both run records and the day-2 export."""
    from datetime import date

    from flows.score import score_reviews
    from pipeline.config import Settings

    out = tmp_path_factory.mktemp("two-days")
    day2 = shifted_export(tmp_path_factory.mktemp("exports") / "day2.csv")
    # One earlier night of 260 reviews (46 logistics mentions) is a weak baseline: the 22-point
    # logistics fall has q = 0.02 over the night's ~100 tests, an incident at alpha 0.05 only.
    # The day-2 export repeats day 1's reviews: count them again (count_repeats), so that day 2
    # is a whole night of reviews, as the trend and report tests read it.
    settings = Settings(model=str(tiny_baseline_dir), progress=False,
                        alert_alpha=FIXTURE_ALERT_ALPHA, count_repeats=True)
    records = [
        score_reviews([str(path)], str(out), model=str(tiny_baseline_dir), run_date=day,
                      settings=settings)
        for path, day in ((SAMPLE, date(2026, 11, 14)), (day2, date(2026, 11, 15)))
    ]
    return out, records, day2
