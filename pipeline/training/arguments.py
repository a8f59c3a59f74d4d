"""The arguments of a training run (``[train]`` in a TOML config, or ``Settings.train``), in the
spirit of setfit's ``TrainingArguments``: one validated object, saved with the model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Everything that determines a training run (unknown keys are refused: a typo in a config
    must not silently train something else)."""

    model_config = ConfigDict(extra="forbid")

    base: str = "work/base"
    out: str = "models/default"
    num_layers: int | None = 6
    max_length: int = 128
    batch_size: int = 32
    epochs: float = 1.0
    lr: float = 8e-5
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    sentiment_rows: int = 30_000
    dimension_repeats: int = 4  # dimension-labelled rows are few: show them this often per epoch
    dimension_weight: float = 1.0
    sentiment_weight: float = 1.0  # 0 trains the dimension heads alone (single-task ablation)
    project_labels: bool = False  # also train on data/labels/ (the project's corpus-row labels)
    clause_labels: bool = False  # also train on data/clause_labels/ (labelled Chinese clauses)
    sentence_labels: bool = False  # ... and on its labelled English sentences (``#s`` ids)
    # which files of data/train_extra/ (written reviews) to learn from, by name; None: all
    extra_files: list[str] | None = None
    project_label_fraction: float = Field(1.0, gt=0, le=1)  # a share of them (learning curves)
    mixed_pairs: int = Field(0, ge=0)  # synthetic mixed reviews (training.data.synthetic_mixed)
    # synthetic reviews that praise and criticise one dimension (training.data.neutral_pairs)
    neutral_pairs: int = Field(0, ge=0)
    # gold-loss weight of a dimension label that differs from its review's overall sentiment
    # (the labels a tone-copying head gets wrong; 1 weighs every label alike)
    contrast_weight: float = Field(1.0, ge=1.0)
    # clauses of Chinese training reviews with no labels of their own: with a teacher, the
    # student learns the teacher's reading of the inputs clause scoring gives it
    clause_rows: int = Field(0, ge=0)
    languages: list[str] | None = None  # train only on rows of these languages (a touch-up run)
    pooling: Literal["mean", "attention"] = "mean"  # the dimension heads' pooling (module.py)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where the CPU has it
    checkpoint_every: int = Field(100, ge=1)  # steps between checkpoints (``--resume``)
    clauses: bool = False  # score Chinese reviews clause by clause (models/transformer/clauses.py)
    # with clauses: fit a polarity combiner on the contrast and seed dev splits after training
    # (models/transformer/combiner.py); the test splits stay held out
    combiner: bool = False
    # average with a baseline folder (relative to ``out``) at these weights per head (heads not
    # named: the transformer alone); written to revsat_model.json as "ensemble"
    ensemble_baseline: str | None = None
    ensemble_weights: dict[str, float] = Field(default_factory=dict)
    seed: int = 13
    threads: int = 2
    prefix: str = "query: "
    int8_dynamic: bool = False
    version: str = "revsat-e5s-mt"
    teacher: str | None = None  # model folder whose soft labels the student also learns
    init_from: str | None = None  # a trained model folder to start from instead of ``base``
    keep_layers: list[int] | None = None  # with ``init_from``: which of its layers to keep
    distill_alpha: float = 0.5  # weight of the gold-label loss; 1 - alpha for the teacher's
    distill_temperature: float = 2.0
    # the heads the teacher's soft labels teach (None: every head); the others learn from the
    # gold labels alone, at full weight. ["sentiment"] with the model itself as the teacher
    # keeps its overall sentiment while its dimension heads learn new labels.
    distill_heads: list[Literal["sentiment", "logistics", "quality", "service",
                                "privacy"]] | None = None
    corpus_caps: dict[str, int] = Field(
        default_factory=lambda: {"online_shopping_10_cats": 15_000, "womens_clothing": 8_000}
    )
    dev_sentiment_rows: int = 3000  # dev rows with sentiment labels that fit the temperatures
    calibration_min_rows: int = 30  # a head with fewer labelled dev rows keeps temperature 1
