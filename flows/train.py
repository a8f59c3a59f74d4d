"""Prefect flow ``train-model``: assemble data -> fine-tune -> calibrate -> evaluate -> card."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.training.arguments import TrainConfig
from pipeline.training.card import write_model_card
from pipeline.training.data import label_counts, require_shared, training_sets
from pipeline.training.evaluate import evaluate_models
from pipeline.training.manifest import write_manifest
from pipeline.training.trainer import train

_TASK = {"cache_policy": NO_CACHE}


@task(name="assemble-data", **_TASK)
def assemble(config: TrainConfig, shared: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return training_sets(config, shared)


@task(name="fine-tune", **_TASK)
def fine_tune(config: TrainConfig, train_rows: pd.DataFrame, dev_rows: pd.DataFrame,
              resume: bool = False) -> str:
    return str(train(config, train_rows, dev_rows, resume=resume))


@task(name="fit-combiner", **_TASK)
def combine(out: Path, shared: Path) -> dict:
    from pipeline.training.combiner_fit import fit_combiner

    fitted = fit_combiner(out, shared)
    fitted.save(out)
    return fitted.info


@flow(name="train-model")
def train_model(config: TrainConfig, shared: str | None = None,
                compare_with: str = "baseline", resume: bool = False) -> dict:
    """Train, evaluate on held-out rows next to ``compare_with``, and write the model card.
    ``resume`` continues from the checkpoint a stopped run of the same config left."""
    logger = get_run_logger()
    shared_path = require_shared(shared)
    train_rows, dev_rows = assemble(config, shared_path)
    logger.info("training on %d rows (%s), dev %d", len(train_rows),
                ", ".join(f"{k} {v}" for k, v in label_counts(train_rows).items()), len(dev_rows))
    out = Path(fine_tune(config, train_rows, dev_rows, resume))
    write_manifest(out / "training_manifest.json",
                   {"train": train_rows.drop_duplicates("id"), "dev": dev_rows},
                   inherit_from=Path(config.init_from) if config.init_from else None)
    if config.combiner:
        combine(out, shared_path)
    results = evaluate_models([str(out), compare_with], shared_path)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False),
                                      encoding="utf-8")
    def distinct(source: str) -> int:  # no dimension rows: no source column
        if "source" not in train_rows:
            return 0
        return int(train_rows.loc[train_rows["source"] == source, "id"].nunique())

    write_model_card(out, config.model_dump(), results, project_label_rows=distinct("project"),
                     clause_label_rows=distinct("clause_label"))
    return results
