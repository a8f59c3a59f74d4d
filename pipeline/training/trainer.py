"""Fine-tuning the multi-task classifier (``revsat train``).

Reproducible: one :class:`TrainConfig` (saved with the model), fixed seeds, and a manifest of
the row ids used per split. Held-out rows (``test`` split, by normalised text) are never
trained on; ``dev`` rows fit the calibration temperatures.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS
from pipeline.config import Settings
from pipeline.models.heads import HEADS, length_batches, softmax
from pipeline.models.load import load
from pipeline.models.transformer import persistence
from pipeline.models.transformer.inference import TransformerClassifier
from pipeline.models.transformer.module import MultiTaskModel, keep_layers
from pipeline.text.normalise import normalise
from pipeline.training.arguments import TrainConfig
from pipeline.training.calibration import expected_calibration_error, fit_temperature

log = logging.getLogger("revsat")
IGNORE = -100

__all__ = ["TrainConfig", "build_model", "calibrate", "student_from", "train",
           "write_manifest"]


def build_model(base: str | Path, num_layers: int | None = None) -> tuple[MultiTaskModel, object]:
    """A fresh multi-task model on a pretrained base folder (see ``revsat base-model``)."""
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(str(base), add_pooling_layer=False)
    if num_layers is not None and num_layers < encoder.config.num_hidden_layers:
        keep_layers(encoder, range(num_layers))
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    return MultiTaskModel(encoder, encoder.config.hidden_size), tokenizer


def student_from(folder: str | Path, layers: Sequence[int]) -> tuple[MultiTaskModel, object]:
    """A smaller model initialised from a trained one: its embeddings, the encoder layers at
    ``layers`` (in order) and its heads. Starting from a fine-tuned model (DistilBERT's
    "one layer in two" initialisation) lets distillation converge in one short run on a CPU.
    """
    model, tokenizer, _ = persistence.load(Path(folder))
    keep_layers(model.encoder, list(layers))
    return model, tokenizer


def _label_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Columns: sentiment then each dimension; IGNORE where a row has no such label."""
    y = np.full((len(frame), 1 + len(DIMENSIONS)), IGNORE, dtype=np.int64)
    sent = frame["sentiment"].map({s: i for i, s in enumerate(SENTIMENTS)})
    y[:, 0] = sent.fillna(IGNORE).astype(int).to_numpy()
    for j, dim in enumerate(DIMENSIONS, start=1):
        if dim in frame:
            col = frame[dim].map({s: i for i, s in enumerate(DIM_LABELS)})
            y[:, j] = col.fillna(IGNORE).astype(int).to_numpy()
    return y


def _batches(lengths: np.ndarray, batch_size: int, rng: random.Random) -> list[np.ndarray]:
    """Shuffle, then sort within mega-batches by length so padding stays small."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    mega = batch_size * 50
    batches = []
    for start in range(0, len(idx), mega):
        part = np.asarray(idx[start : start + mega], dtype=np.int64)
        batches.extend(part[b] for b in length_batches(lengths[part], batch_size))
    rng.shuffle(batches)
    return batches


def teacher_logits(teacher: str | Path, texts: list[str]) -> dict[str, np.ndarray]:
    """Raw (uncalibrated) logits of a trained model folder for ``texts``."""
    # max_windows=1: the teacher reads what the student is trained on (the first 128 tokens)
    clf = load(teacher, Settings(batch_size=64, max_windows=1), ensemble=False)
    return clf.logits([normalise(t) for t in texts])


def train(config: TrainConfig, train_rows: pd.DataFrame, dev_rows: pd.DataFrame) -> Path:
    """Fine-tune on ``train_rows``, calibrate on ``dev_rows`` and save to ``config.out``.

    Both frames have ``text`` and ``sentiment`` and, where labelled, the dimension columns.
    With ``config.teacher`` the loss is ``alpha * CE(gold) + (1 - alpha) * T^2 * KL(teacher ||
    student)`` at temperature T on every head of every row (Hinton et al. 2015), so rows
    without dimension labels still teach the dimension heads through the teacher.
    """
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    rng = random.Random(config.seed)
    torch.set_num_threads(config.threads)
    if config.init_from:
        model, tokenizer = student_from(config.init_from, config.keep_layers or [])
    else:
        model, tokenizer = build_model(config.base, config.num_layers)
    texts = [config.prefix + normalise(t) for t in train_rows["text"]]
    enc = tokenizer(texts, truncation=True, max_length=config.max_length)
    ids = enc["input_ids"]
    lengths = np.asarray([len(x) for x in ids])
    labels = torch.from_numpy(_label_matrix(train_rows))
    batches = _batches(lengths, config.batch_size, rng)
    steps = math.ceil(len(batches) * config.epochs)
    encoder_params = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    opt = torch.optim.AdamW(
        [
            {"params": encoder_params, "lr": config.lr},
            {"params": model.head.parameters(), "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    from transformers import get_linear_schedule_with_warmup

    sched = get_linear_schedule_with_warmup(opt, max(1, int(steps * config.warmup)), steps)
    ce = nn.CrossEntropyLoss(ignore_index=IGNORE)
    soft = None
    if config.teacher:
        log.info("computing teacher logits for %d rows", len(train_rows))
        soft = {k: torch.from_numpy(v) for k, v in
                teacher_logits(config.teacher, list(train_rows["text"])).items()}
    temp = config.distill_temperature
    alpha = config.distill_alpha if soft is not None else 1.0
    pad = tokenizer.pad_token_id
    model.train()
    t0 = time.perf_counter()
    seen = 0
    for step in range(steps):
        batch = batches[step % len(batches)]
        if step and step % len(batches) == 0:
            rng.shuffle(batches)
        width = int(lengths[batch].max())
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, : lengths[i]] = torch.tensor(ids[i])
        mask = (input_ids != pad).long()
        out = model(input_ids, mask)
        y = labels[batch]
        loss = torch.zeros(())
        for j, name in enumerate(HEADS):
            weight = config.sentiment_weight if j == 0 else config.dimension_weight
            if (y[:, j] != IGNORE).any():
                loss = loss + alpha * weight * ce(out[name], y[:, j])
            if soft is not None:
                target = torch.softmax(soft[name][batch] / temp, dim=-1)
                log_p = torch.log_softmax(out[name] / temp, dim=-1)
                kl = nn.functional.kl_div(log_p, target, reduction="batchmean")
                loss = loss + (1 - alpha) * weight * temp**2 * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        seen += len(batch)
        if step % 50 == 0 or step == steps - 1:
            rate = seen / (time.perf_counter() - t0)
            log.info("step %d/%d loss %.4f  %.1f rows/s  eta %.0f min", step + 1, steps,
                     loss.item(), rate, (steps - step - 1) * config.batch_size / rate / 60)
    model.eval()
    meta = {
        "name": config.version,
        "version": config.version,
        "prefix": config.prefix,
        "max_length": config.max_length,
        "int8_dynamic": config.int8_dynamic,
        "train_config": config.model_dump(),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    clf = TransformerClassifier(model, tokenizer, meta, batch_size=64)
    meta["temperatures"], meta["calibration_dev"] = calibrate(clf, dev_rows,
                                                              config.calibration_min_rows)
    return persistence.save(model, tokenizer, Path(config.out), meta)


def calibrate(clf: TransformerClassifier, dev_rows: pd.DataFrame,
              min_rows: int = 30) -> tuple[dict, dict]:
    """Fit a temperature per head on dev rows; returns temperatures and dev ECE before/after.
    A head with fewer than ``min_rows`` labelled dev rows keeps temperature 1."""
    logits = clf.logits([normalise(t) for t in dev_rows["text"]])
    y = _label_matrix(dev_rows)
    temps, report = {}, {}
    for j, name in enumerate(HEADS):
        known = y[:, j] != IGNORE
        if known.sum() < min_rows:
            temps[name] = 1.0
            continue
        temps[name] = fit_temperature(logits[name][known], y[known, j])
        report[name] = {
            "n": int(known.sum()),
            "ece_before": round(expected_calibration_error(softmax(logits[name][known]),
                                                           y[known, j]), 4),
            "ece_after": round(expected_calibration_error(
                softmax(logits[name][known] / temps[name]), y[known, j]), 4),
            "temperature": round(temps[name], 3),
        }
    return temps, report


def write_manifest(path: Path, parts: dict[str, pd.DataFrame]) -> None:
    """Row ids used per part (texts are never copied: ids point into the shared corpora)."""
    path.write_text(
        json.dumps({name: sorted(map(str, df["id"])) for name, df in parts.items()}),
        encoding="utf-8",
    )
