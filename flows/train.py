"""Prefect flow ``train-model``: assemble data -> fine-tune -> calibrate -> evaluate -> card."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.training.arguments import TrainConfig
from pipeline.training.card import write_model_card
from pipeline.training.data import dimension_rows, require_shared, sentiment_rows
from pipeline.training.evaluate import evaluate_models
from pipeline.training.trainer import train, write_manifest

_TASK = {"cache_policy": NO_CACHE}


@task(name="assemble-data", **_TASK)
def assemble(config: TrainConfig, shared: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    sent = sentiment_rows(shared, config.sentiment_rows, config.seed, config.corpus_caps)
    dims = dimension_rows(shared, project_labels=config.project_labels)
    dim_train = dims[dims["split"] == "train"]
    train_rows = pd.concat(
        [sent[sent["split"] == "train"], *[dim_train] * config.dimension_repeats],
        ignore_index=True,
    )
    dev_sent = sent[sent["split"] == "dev"].sample(n=min(config.dev_sentiment_rows,
                                                       (sent["split"] == "dev").sum()),
                                                   random_state=config.seed)
    dev_rows = pd.concat([dev_sent, dims[dims["split"] == "dev"]], ignore_index=True)
    return train_rows, dev_rows


@task(name="fine-tune", **_TASK)
def fine_tune(config: TrainConfig, train_rows: pd.DataFrame, dev_rows: pd.DataFrame) -> str:
    return str(train(config, train_rows, dev_rows))


@flow(name="train-model")
def train_model(config: TrainConfig, shared: str | None = None,
                compare_with: str = "baseline") -> dict:
    """Train, evaluate on held-out rows next to ``compare_with``, and write the model card."""
    logger = get_run_logger()
    shared_path = require_shared(shared)
    train_rows, dev_rows = assemble(config, shared_path)
    labelled = train_rows["logistics"].notna().sum() if "logistics" in train_rows else 0
    logger.info("training on %d rows (%d with dimension labels), dev %d",
                len(train_rows), labelled, len(dev_rows))
    out = Path(fine_tune(config, train_rows, dev_rows))
    write_manifest(out / "training_manifest.json",
                   {"train": train_rows.drop_duplicates("id"), "dev": dev_rows})
    results = evaluate_models([str(out), compare_with], shared_path)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False),
                                      encoding="utf-8")
    project = (train_rows.loc[train_rows["source"] == "project", "id"].nunique()
               if "source" in train_rows else 0)  # no dimension rows: no source column
    write_model_card(out, config.model_dump(), results, project_label_rows=project)
    return results
