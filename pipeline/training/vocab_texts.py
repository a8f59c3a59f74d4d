"""Texts whose sentencepiece pieces define the trimmed vocabulary of the base model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from pipeline.config import data_dir, shared_dir
from pipeline.training.corpora import load_sentiment_corpora


def vocabulary_texts(shared: Path | None = None) -> Iterator[str]:
    """All corpus texts (when the corpora are present) plus the project's own data texts."""
    found = shared_dir(shared)
    if found is not None:
        yield from load_sentiment_corpora(found)["text"]
    yield from pd.read_csv(data_dir() / "sample" / "reviews.csv", dtype=str,
                           keep_default_na=False)["text"]
    with (data_dir() / "train_extra" / "reviews.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)["text"]
