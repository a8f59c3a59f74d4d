"""Training and evaluation sets assembled from the shared corpora, the seed labels and the
project's own hand-written examples (``data/train_extra/``).

Held-out rows are the ``test`` split of :func:`pipeline.training.corpora.add_split` (by
normalised text, so duplicates never straddle splits).
Project-written examples are always training data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.catalog import DIMENSIONS
from pipeline.config import data_dir, shared_dir
from pipeline.training.corpora import (
    add_split,
    load_labels_by_id,
    load_seed_labels,
    load_sentiment_corpora,
)


def require_shared(explicit: Path | str | None = None) -> Path:
    """The shared corpora folder, or a clear error telling the user how to point at it."""
    found = shared_dir(explicit)
    if found is None:
        raise FileNotFoundError(
            "labelled corpora not found: pass --shared DIR or set REVSAT_SHARED_DIR "
            "(training and evaluation need them; scoring does not)"
        )
    return found


def sentiment_rows(
    shared: Path,
    max_train: int | None = None,
    seed: int = 0,
    corpus_caps: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Corpus rows with overall sentiment and a ``split`` column.

    The training part is first capped per corpus (``corpus_caps``, so the largest corpus does
    not drown the others), then subsampled to ``max_train`` rows. Held-out rows are never
    subsampled.
    """
    rows = add_split(load_sentiment_corpora(shared))
    train = rows[rows["split"] == "train"]
    for corpus, cap in (corpus_caps or {}).items():
        part = train[train["corpus"] == corpus]
        if len(part) > cap:
            train = pd.concat([train[train["corpus"] != corpus],
                               part.sample(n=cap, random_state=seed)])
    if max_train is not None and len(train) > max_train:
        train = train.sample(n=max_train, random_state=seed)
    return pd.concat([train, rows[rows["split"] != "train"]], ignore_index=True)


def extra_rows() -> pd.DataFrame:
    """Hand-written labelled examples shipped with the project (training only)."""
    path = data_dir() / "train_extra" / "reviews.jsonl"
    if not path.is_file():
        return pd.DataFrame(columns=["id", "lang", "text", "sentiment", *DIMENSIONS])
    with path.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    frame = pd.DataFrame.from_records(records)
    frame["corpus"] = "revsat_extra"
    frame["split"] = "train"
    return frame


def project_labelled_rows(shared: Path, seed_ids: set[str] | None = None) -> pd.DataFrame:
    """Corpus rows the project labelled itself (``data/labels/*.jsonl``: ids and labels only,
    in the seed format; texts are joined from the shared corpora), training split only.

    They grow the seed set where it is thin (English dimensions) and are never evaluated on:
    rows whose text falls in the dev or test split, or that are seed rows, are left out.
    """
    files = sorted((data_dir() / "labels").glob("*.jsonl"))
    if not files:
        return pd.DataFrame(columns=["id", "lang", "text", "sentiment", *DIMENSIONS])
    rows = add_split(load_labels_by_id(files, shared, "project"))
    keep = (rows["split"] == "train") & ~rows["id"].isin(seed_ids or set())
    return rows[keep].reset_index(drop=True)


def dimension_rows(shared: Path, folds: int = 5, project_labels: bool = False) -> pd.DataFrame:
    """Seed-labelled rows (with ``split`` and ``fold``), plus the project's hand-written
    examples and, with ``project_labels``, its own labels of corpus rows (both training only,
    ``fold`` -1); ``source`` says which (``seed``, ``written``, ``project``).

    ``project_labels`` is off by default so that the configs of models trained before
    ``data/labels/`` existed still select the same rows.
    """
    seeds = add_split(load_seed_labels(shared), folds=folds).assign(source="seed")
    parts = [seeds]
    if project_labels:
        parts.append(project_labelled_rows(shared, set(seeds["id"])).assign(fold=-1,
                                                                            source="project"))
    parts.append(extra_rows().assign(fold=-1, source="written"))
    return pd.concat(parts, ignore_index=True)
