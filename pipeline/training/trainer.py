"""Fine-tuning the multi-task classifier (``revsat train``).

Reproducible: one :class:`TrainConfig` (saved with the model), fixed seeds, and a manifest of
the row ids used per split. Held-out rows (``test`` split, by normalised text) are never
trained on; ``dev`` rows fit the calibration temperatures.
"""

from __future__ import annotations

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
from pipeline.hardware import has_fast
from pipeline.models.heads import HEADS, length_batches, softmax
from pipeline.models.load import load
from pipeline.models.transformer import onnx, persistence
from pipeline.models.transformer.inference import TransformerClassifier
from pipeline.models.transformer.module import AttentionPoolModel, MultiTaskModel, keep_layers
from pipeline.text.normalise import normalise
from pipeline.training.arguments import TrainConfig
from pipeline.training.calibration import expected_calibration_error, fit_temperature

log = logging.getLogger("revsat")
IGNORE = -100

__all__ = ["TrainConfig", "build_model", "calibrate", "student_from", "train"]


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


def _contrast_matrix(frame: pd.DataFrame, weight: float) -> np.ndarray:
    """Gold-loss weights, columns as :func:`_label_matrix`'s: ``weight`` where a dimension's
    label (not ``none``) differs from the row's overall sentiment label, 1 elsewhere (the
    sentiment column, and rows without an overall label)."""
    w = np.ones((len(frame), 1 + len(DIMENSIONS)), dtype=np.float32)
    if weight == 1.0:
        return w
    overall = frame["sentiment"].to_numpy(dtype=object)
    for j, dim in enumerate(DIMENSIONS, start=1):
        if dim in frame:
            label = frame[dim].to_numpy(dtype=object)
            differs = (pd.notna(overall) & pd.notna(label) & (label != "none")
                       & (label != overall))
            w[differs, j] = weight
    return w


def _weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged with per-row weights over the rows that have a label (the plain
    mean where every weight is 1)."""
    losses = nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    w = weight * (target != IGNORE)
    return (losses * w).sum() / w.sum()


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
    # each distinct text once: repeated dimension rows would cost a teacher pass each
    from pipeline.run.progress import RowProgress

    normalised = [normalise(t) for t in texts]
    distinct = list(dict.fromkeys(normalised))
    where = {t: i for i, t in enumerate(distinct)}
    rows = np.fromiter((where[t] for t in normalised), np.int64, len(texts))
    parts: list[dict[str, np.ndarray]] = [clf.logits([])]  # the heads' widths, for no texts
    with RowProgress(label="teacher logits", log_every=30.0) as progress:
        for start in range(0, len(distinct), 4096):  # a 12-layer teacher takes minutes
            chunk = distinct[start : start + 4096]
            parts.append(clf.logits(chunk))
            progress.update(len(chunk), len(chunk), f"of {len(distinct):,} distinct texts")
    return {name: np.concatenate([p[name] for p in parts])[rows] for name in HEADS}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision``: bf16 where asked, or with ``auto`` where the CPU
    has bf16 instructions (amx_bf16, avx512_bf16); None for fp32."""
    if precision == "bf16" or (precision == "auto" and has_fast("bf16")):
        return torch.bfloat16
    return None


def _initial_model(config: TrainConfig) -> tuple[nn.Module, object]:
    if config.init_from:
        model, tokenizer = student_from(config.init_from, config.keep_layers or [])
    else:
        model, tokenizer = build_model(config.base, config.num_layers)
    if config.pooling == "attention" and isinstance(model, MultiTaskModel):
        model = AttentionPoolModel.from_mean(model)
    # PyTorch's CPU flash-attention backward took half of a 12-layer bf16 step (0.48 of 0.99 s,
    # profiled on a Xeon with AMX); the eager attention's batched matmuls halve the backward.
    model.encoder.set_attn_implementation("eager")
    return model, tokenizer


class Checkpoint:
    """The state of a run between steps (weights, optimiser, schedule, step, random state) in
    ``<out>.checkpoint/``, so that ``revsat train --resume`` continues where a run stopped.

    Written atomically every ``checkpoint_every`` steps and removed when the model is saved.
    Only tensors and plain containers are stored, and they are read back with
    ``weights_only=True``: nothing arbitrary is unpickled.
    """

    def __init__(self, out: Path) -> None:
        self.folder = out.with_name(out.name + ".checkpoint")
        self.path = self.folder / "state.pt"

    def save(self, step: int, model: nn.Module, opt, sched, config: TrainConfig) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                    "config": config.model_dump_json()}, tmp)
        tmp.replace(self.path)

    def load(self, config: TrainConfig) -> dict | None:
        if not self.path.is_file():
            return None
        state = torch.load(self.path, weights_only=True)
        if state["config"] != config.model_dump_json():
            raise ValueError(f"{self.path} was written by a run with another configuration; "
                             "remove it or train without --resume")
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def train(config: TrainConfig, train_rows: pd.DataFrame, dev_rows: pd.DataFrame,
          resume: bool = False, progress: bool = True) -> Path:
    """Fine-tune on ``train_rows``, calibrate on ``dev_rows`` and save to ``config.out``.

    Both frames have ``text`` and ``sentiment`` and, where labelled, the dimension columns.
    With ``config.teacher`` the loss is ``alpha * CE(gold) + (1 - alpha) * T^2 * KL(teacher ||
    student)`` at temperature T on every head of every row (Hinton et al. 2015), so rows
    without dimension labels still teach the dimension heads through the teacher; with
    ``config.distill_heads`` only on those heads (the others: ``CE(gold)`` alone).
    Forward and backward passes run under bf16 autocast where :func:`autocast_dtype` says so
    (weights, optimiser and loss stay fp32). With ``resume``, a checkpoint of the same
    configuration left by a stopped run is continued from its step.
    """
    from transformers import get_linear_schedule_with_warmup

    from pipeline.run.progress import StepProgress

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    rng = random.Random(config.seed)
    torch.set_num_threads(config.threads)
    model, tokenizer = _initial_model(config)
    texts = [config.prefix + normalise(t) for t in train_rows["text"]]
    enc = tokenizer(texts, truncation=True, max_length=config.max_length)
    ids = enc["input_ids"]
    lengths = np.asarray([len(x) for x in ids])
    labels = torch.from_numpy(_label_matrix(train_rows))
    contrast = torch.from_numpy(_contrast_matrix(train_rows, config.contrast_weight))
    batches = _batches(lengths, config.batch_size, rng)
    steps = math.ceil(len(batches) * config.epochs)
    encoder_params = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    head_params = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.AdamW(
        [{"params": encoder_params, "lr": config.lr},
         {"params": head_params, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    sched = get_linear_schedule_with_warmup(opt, max(1, int(steps * config.warmup)), steps)
    checkpoint = Checkpoint(Path(config.out))
    first = 0
    state = checkpoint.load(config) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["torch_rng"])
        first = int(state["step"])
        log.info("resuming at step %d of %d from %s", first, steps, checkpoint.path)
    soft = None
    if config.teacher:
        log.info("computing teacher logits for %d rows", len(train_rows))
        soft = {k: torch.from_numpy(v) for k, v in
                teacher_logits(config.teacher, list(train_rows["text"])).items()}
    temp = config.distill_temperature
    distilled = set(HEADS if config.distill_heads is None else config.distill_heads)
    alpha = config.distill_alpha if soft is not None else 1.0
    dtype = autocast_dtype(config.precision)
    log.info("training %d steps (batch %d) in %s", steps, config.batch_size,
             "bf16 autocast" if dtype else "fp32")
    pad = tokenizer.pad_token_id
    model.train()
    t0 = time.perf_counter()
    order_epoch, order = -1, batches
    with StepProgress(steps, first, enabled=progress) as bar:
        for step in range(first, steps):
            # the batch order of every epoch is drawn from the seed alone, so a resumed run
            # sees exactly the batches the stopped one would have
            epoch, at = divmod(step, len(batches))
            if epoch != order_epoch:  # drawn once per epoch
                order_epoch = epoch
                order = batches if epoch == 0 else random.Random(config.seed + epoch).sample(
                    batches, len(batches))
            batch = order[at]
            width = int(lengths[batch].max())
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, : lengths[i]] = torch.tensor(ids[i])
            mask = (input_ids != pad).long()
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                out = model(input_ids, mask)
            y = labels[batch]
            loss = torch.zeros(())
            for j, name in enumerate(HEADS):
                weight = config.sentiment_weight if j == 0 else config.dimension_weight
                logits = out[name].float()
                taught = soft is not None and name in distilled
                if (y[:, j] != IGNORE).any():
                    gold_w = alpha if taught else 1.0
                    loss = loss + gold_w * weight * _weighted_ce(logits, y[:, j],
                                                                 contrast[batch, j])
                if taught:
                    target = torch.softmax(soft[name][batch] / temp, dim=-1)
                    log_p = torch.log_softmax(logits / temp, dim=-1)
                    kl = nn.functional.kl_div(log_p, target, reduction="batchmean")
                    loss = loss + (1 - alpha) * weight * temp**2 * kl
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.advance(loss.item())
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < steps:
                checkpoint.save(step + 1, model, opt, sched, config)
    model.eval()
    meta = {
        "name": config.version,
        "version": config.version,
        "prefix": config.prefix,
        "max_length": config.max_length,
        "int8_dynamic": config.int8_dynamic,
        "train_config": config.model_dump(),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "train_precision": "bf16" if dtype else "fp32",
        "clauses": config.clauses,
    }
    if config.ensemble_baseline:
        meta["ensemble"] = {"baseline": config.ensemble_baseline,
                            "weight": config.ensemble_weights}
    clf = TransformerClassifier(model, tokenizer, meta, batch_size=64)
    meta["temperatures"], meta["calibration_dev"] = calibrate(clf, dev_rows,
                                                              config.calibration_min_rows)
    saved = persistence.save(model, tokenizer, Path(config.out), meta)
    onnx.package(saved)
    checkpoint.remove()
    return saved


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
