"""Batch inference of the multi-task review classifier (overall sentiment: 3 classes; each
dimension: 4 classes, one forward pass), the window logic for long reviews, calibration, and
the ensemble with the TF-IDF baseline.

On the CPU the model runs as an ONNX graph (:mod:`pipeline.models.transformer.onnx`), exported
once per weights file; that path imports neither torch nor transformers. The torch module
(:mod:`.module`) and the folder format (:mod:`.persistence`) load only for the torch backend,
training and the one-time export; their names are still importable from here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS

log = logging.getLogger("revsat")

HEADS: dict[str, int] = {"sentiment": len(SENTIMENTS), **{d: len(DIM_LABELS) for d in DIMENSIONS}}
META_FILE = "revsat_model.json"

#: Names that moved to the torch modules, imported on first use (``from ... import X``).
_LAZY = {"MultiTaskModel": "module", "_Flat": "module", "build_model": "persistence",
         "student_from": "persistence", "save_model": "persistence",
         "load_model": "persistence", "OnnxRunner": "onnx", "_int8": "onnx"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"pipeline.models.transformer.{_LAZY[name]}")
        return getattr(module, "int8_onnx" if name == "_int8" else name)
    raise AttributeError(name)


def split_heads(logits):
    """``(batch, sum(HEADS))`` logits (tensor or array) -> one block per head."""
    out, start = {}, 0
    for name, size in HEADS.items():
        out[name] = logits[:, start : start + size]
        start += size
    return out


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's needs are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class TransformerClassifier:
    """Batch inference: sort by length, pad per batch, calibrated softmax.

    The engine is an ONNX Runtime session (``onnx``, see :mod:`.onnx`) or the torch module
    (``model``) on ``device``; :meth:`load` picks it and the numeric format.
    """

    def __init__(self, model, tokenizer, meta: dict, device: str = "cpu",
                 batch_size: int = 64, max_chars: int = 2000, backend: str = "torch",
                 threads: int | None = None, max_windows: int = 4, int8: bool = False,
                 onnx=None, format_reason: str = "") -> None:
        self.model = None
        self.onnx = onnx
        if onnx is not None:
            self.backend = "onnx"
        else:
            self.backend = resolve_backend(backend, device, quantized=_is_quantized(model))
            if self.backend == "onnx":
                try:
                    self.onnx = _private_runner(model, threads, int8)
                except Exception as exc:  # an operator the exporter lacks: torch still works
                    if backend == "onnx":
                        raise
                    log.warning("ONNX export failed (%s: %s); using torch",
                                type(exc).__name__, exc)
                    self.backend = "torch"
            if self.onnx is None:
                self.model = model.to(device)
        if self.onnx is not None:
            self.numeric_format = self.onnx.format
        else:
            self.numeric_format = "int8" if _is_quantized(model) else "fp32"
        self.format_reason = format_reason or "requested"
        self.tokenizer = tokenizer
        self.meta = meta
        self.device = device
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.max_length = int(meta.get("max_length", 256))
        self.max_windows = max_windows
        self.prefix = meta.get("prefix", "query: ")
        self.temperatures = {k: float(v) for k, v in meta.get("temperatures", {}).items()}
        self.version = str(meta.get("version", meta.get("name", "transformer")))
        self.seconds = {"tokenise": 0.0, "model": 0.0}

    @classmethod
    def load(cls, directory: Path, device: str = "cpu", batch_size: int = 64,
             max_chars: int = 2000, quantize: bool | None = None, backend: str = "auto",
             threads: int | None = None, max_windows: int = 4, numeric: str = "auto",
             cache_dir: Path | None = None) -> TransformerClassifier:
        """Load a model folder. On the CPU with ONNX Runtime installed (``backend`` auto or
        onnx) neither torch nor transformers is imported: the folder's ONNX graph (exported
        once per weights file, see :mod:`.onnx`) runs in the numeric format ``numeric`` picks
        (``auto``: by the CPU's flags and the formats the model passed; ``quantize`` true or
        the folder's ``int8_dynamic`` force int8, ``quantize`` false fp32)."""
        directory = Path(directory)
        meta = read_meta(directory)
        cpu = str(device).startswith("cpu")
        if quantize is None and meta.get("int8_dynamic") and cpu:
            quantize = True
        if resolve_backend(backend, device) == "onnx":
            try:
                return cls._load_onnx(directory, meta, device, batch_size, max_chars, quantize,
                                      threads, max_windows, numeric, cache_dir)
            except Exception as exc:
                if backend == "onnx":
                    raise
                log.warning("ONNX graph unavailable (%s: %s); using torch",
                            type(exc).__name__, exc)
        from pipeline.models.transformer.persistence import load_model

        model, tokenizer, meta = load_model(directory)
        if quantize:
            import warnings

            import torch
            from torch import nn

            with warnings.catch_warnings():  # torch announces a future API move; not ours
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(
                    model, {nn.Linear}, dtype=torch.qint8
                )
        return cls(model, tokenizer, meta, device, batch_size, max_chars, "torch", threads,
                   max_windows, format_reason="torch backend")

    @classmethod
    def _load_onnx(cls, directory, meta, device, batch_size, max_chars, quantize, threads,
                   max_windows, numeric, cache_dir) -> TransformerClassifier:
        from pipeline.models.transformer import onnx as ox

        requested = "int8" if quantize else "fp32" if quantize is False else numeric
        fmt, reason = ox.choose_format(requested, meta)
        runner = ox.OnnxRunner(ox.find_graph(directory, fmt, cache_dir), threads, fmt)
        return cls(None, ox.FastTokenizer(directory), meta, device, batch_size, max_chars,
                   "onnx", threads, max_windows, onnx=runner, format_reason=reason)

    def logits(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Uncalibrated logits per head, in input order.

        The whole chunk is tokenised in one call, then batched by *token* count: sorting by
        characters mixed 60-character English reviews (~15 tokens) with 60-character Chinese
        ones (~50 tokens) in one batch and padded the former to the latter's length. A review
        longer than ``max_length`` tokens is read as overlapping windows (see
        :meth:`_windows`) whose logits are combined per review.
        """
        if not len(texts):  # the tokeniser rejects an empty batch
            return {name: np.zeros((0, size), np.float32) for name, size in HEADS.items()}
        t0 = time.perf_counter()
        ids = self.tokenizer([self.prefix + t[: self.max_chars] for t in texts],
                             truncation=self.max_windows <= 1, max_length=self.max_length,
                             verbose=False)["input_ids"]  # long ones are windowed below
        rows, owner = self._windows(ids)
        lengths = np.fromiter((len(x) for x in rows), np.int64, len(rows))
        order = np.argsort(lengths, kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        self.seconds["tokenise"] += time.perf_counter() - t0
        flat = np.zeros((len(rows), sum(HEADS.values())), np.float32)
        for start in range(0, len(rows), self.batch_size):
            idx = order[start : start + self.batch_size]
            t1 = time.perf_counter()
            input_ids = np.full((len(idx), int(lengths[idx].max())), pad, np.int64)
            for row, i in enumerate(idx):
                input_ids[row, : lengths[i]] = rows[i]
            mask = (np.arange(input_ids.shape[1]) < lengths[idx, None]).astype(np.int64)
            if self.onnx is not None:
                flat[idx] = self.onnx.flat(input_ids, mask, HEADS)
            else:
                flat[idx] = self._torch_flat(input_ids, mask)
            self.seconds["model"] += time.perf_counter() - t1
        return combine_windows(split_heads(flat), owner, len(texts))

    def _torch_flat(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.flat(
                torch.from_numpy(input_ids).to(self.device),
                torch.from_numpy(mask).to(self.device),
            ).float().cpu().numpy()

    def _windows(self, ids: list[list[int]]) -> tuple[list[list[int]], np.ndarray]:
        """Each review's token ids as one or more model inputs, and the review each came from.

        A review within ``max_length`` is one input. A longer one becomes windows of
        ``max_length`` tokens, each starting with the same special token and prefix, that
        overlap by at least a quarter; past ``max_windows`` windows they are spread evenly from
        the first token to the last. Reviews of several paragraphs often give their verdict at
        the end, which head-only truncation cut off.
        """
        if self.max_windows <= 1 or all(len(x) <= self.max_length for x in ids):
            return ids, np.arange(len(ids))
        head = self.tokenizer(self.prefix.rstrip())["input_ids"][:-1]  # [CLS] + prefix pieces
        width = self.max_length - len(head) - 1
        step = max(1, width - width // 4)
        rows, owner = [], []
        for i, x in enumerate(ids):
            if len(x) <= self.max_length:
                rows.append(x)
                owner.append(i)
                continue
            start = len(head) if x[: len(head)] == head else 1
            body, tail = x[start:-1], x[-1:]
            last = max(0, len(body) - width)
            # windows this stride needs, capped; spread evenly so the first and the last
            # tokens are always read even when the cap leaves gaps in the middle
            count = min(self.max_windows, -(-last // step) + 1)
            for s in np.linspace(0, last, count).round().astype(int).tolist():
                rows.append(head + body[s : s + width] + tail)
                owner.append(i)
        return rows, np.asarray(owner)

    def predict_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Calibrated probabilities per head for raw texts."""
        return {
            name: softmax(values / self.temperatures.get(name, 1.0))
            for name, values in self.logits(texts).items()
        }

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        return self.predict_texts(list(reviews["text_norm"]))


class EnsembleClassifier:
    """The transformer's calibrated probabilities averaged with the TF-IDF baseline's.

    Set by ``"ensemble": {"baseline": "<folder, relative to the model>", "weight": w}`` in
    ``revsat_model.json``: p = w * p_transformer + (1 - w) * p_baseline for every head. The two
    models make different errors (subwords in context vs jieba n-grams), so the mix beats each
    alone on held-out rows (see the model card).
    """

    def __init__(self, transformer: TransformerClassifier, baseline, weight: float) -> None:
        self.transformer = transformer
        self.baseline = baseline
        self.weight = weight
        self.version = f"{transformer.version}+{baseline.version}@{weight:g}"
        self.seconds = transformer.seconds
        self.backend = transformer.backend
        self.numeric_format = transformer.numeric_format
        self.format_reason = transformer.format_reason

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        base = self.baseline.predict_batch(reviews)
        other = time.perf_counter() - t0
        deep = self.transformer.predict_batch(reviews)
        self.seconds["baseline"] = self.seconds.get("baseline", 0.0) + other
        w = self.weight
        return {k: w * deep[k] + (1 - w) * base[k] for k in deep}


def load_any(directory: Path, **kwargs) -> TransformerClassifier | EnsembleClassifier:
    """A transformer folder, wrapped in :class:`EnsembleClassifier` when its metadata says so."""
    clf = TransformerClassifier.load(directory, **kwargs)
    spec = clf.meta.get("ensemble")
    if not spec:
        return clf
    from pipeline.models.load import BaselineClassifier

    baseline = BaselineClassifier((directory / spec["baseline"]).resolve())
    return EnsembleClassifier(clf, baseline, float(spec["weight"]))


def combine_windows(heads: dict[str, np.ndarray], owner: np.ndarray,
                    n: int) -> dict[str, np.ndarray]:
    """One row of logits per review from its windows' rows: the mean for overall sentiment
    (the verdict of the whole text); for a dimension, the window that mentions it most surely
    (largest margin of a polarity logit over ``none``), so one paragraph about delivery is not
    averaged away."""
    if len(owner) == n:
        return heads
    out = {}
    counts = np.bincount(owner, minlength=n).astype(np.float32)[:, None]
    for name, block in heads.items():
        if name == "sentiment":
            summed = np.zeros((n, block.shape[1]), np.float32)
            np.add.at(summed, owner, block)
            out[name] = summed / counts
            continue
        # margin of "mentioned" over "none": the largest other logit minus the none logit
        margin = block[:, 1:].max(axis=1) - block[:, 0]
        order = np.lexsort((-margin, owner))  # by review, most sure window first
        pick = order[np.unique(owner[order], return_index=True)[1]]
        out[name] = block[pick]
    return out


def resolve_backend(backend: str, device: str, quantized: bool = False) -> str:
    """``auto`` -> ``onnx`` on the CPU where ONNX Runtime is installed (and the model is not
    torch-quantised), else ``torch``. ``onnx`` on a GPU device is refused: use ``torch``."""
    if backend not in ("auto", "torch", "onnx"):
        raise ValueError(f"unknown backend {backend!r}: use auto, torch or onnx")
    cpu = str(device).startswith("cpu")
    if backend == "onnx" and (not cpu or quantized):
        raise ValueError("backend onnx runs on the CPU only and quantises itself; use backend "
                         "torch for --device cuda or a torch-quantised model")
    if backend == "auto":
        return "onnx" if cpu and not quantized and onnx_available() else "torch"
    return backend


def _is_quantized(model) -> bool:
    return model is not None and any("quantized" in type(m).__module__ for m in model.modules())


def read_meta(directory: Path) -> dict:
    """``revsat_model.json`` of a folder, checked against :data:`HEADS`."""
    meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    if meta.get("heads") != HEADS:
        raise ValueError(f"{directory}: heads {meta.get('heads')} do not match {HEADS}")
    return meta


def _private_runner(model, threads: int | None, int8: bool):
    """A module given in memory (not a folder) exported to a private temporary file."""
    import tempfile

    from pipeline.models.transformer import onnx as ox

    with tempfile.TemporaryDirectory(prefix="revsat-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        ox.export_module(model, path)
        if int8:
            path = ox.int8_onnx(path, Path(tmp) / "model-int8.onnx")
        return ox.OnnxRunner(path, threads, "int8" if int8 else "fp32")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
