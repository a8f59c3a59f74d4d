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
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's console handler outlives pytest's captured streams at exit; keep it quiet.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


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
    from pipeline.baseline import BaselineModel
    from pipeline.preprocess import preprocess
    from pipeline.schema import DIMENSIONS

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
