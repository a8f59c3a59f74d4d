"""The multi-task review classifier: a BERT-style encoder, mean pooling, and one linear head
per output (overall sentiment: 3 classes; each dimension: 4 classes), all in one forward pass.

A model folder holds ``config.json`` (the encoder's), ``model.safetensors`` (encoder and heads),
the tokenizer files and ``revsat_model.json`` (heads, input prefix, calibration temperatures,
version). Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS
from pipeline.training.base_model import mean_pool

log = logging.getLogger("revsat")

HEADS: dict[str, int] = {"sentiment": len(SENTIMENTS), **{d: len(DIM_LABELS) for d in DIMENSIONS}}
META_FILE = "revsat_model.json"


class MultiTaskModel(nn.Module):
    """Encoder + mean pooling + one linear layer producing all heads' logits."""

    def __init__(self, encoder: nn.Module, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, sum(HEADS.values()))

    def flat(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """All heads' logits side by side, ``(batch, sum(HEADS))``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        return self.head(self.dropout(mean_pool(hidden, attention_mask)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        return split_heads(self.flat(input_ids, attention_mask))


def split_heads(logits):
    """``(batch, sum(HEADS))`` logits (tensor or array) -> one block per head."""
    out, start = {}, 0
    for name, size in HEADS.items():
        out[name] = logits[:, start : start + size]
        start += size
    return out


class _Flat(nn.Module):
    """Export wrapper: one output tensor instead of a dict."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.flat(input_ids, attention_mask)


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's needs are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class OnnxRunner:
    """The model exported to ONNX at load time and run by ONNX Runtime on the CPU.

    ONNX Runtime runs the same graph with fused kernels (LayerNorm, GELU, attention steps) and
    less per-operator overhead than eager PyTorch, which matters for a small encoder on short
    reviews (see README, Performance); the outputs equal PyTorch's to about 1e-5. The graph
    lives only in a private temporary folder while the session loads; nothing is downloaded.
    """

    def __init__(self, model: MultiTaskModel, tokenizer, threads: int | None = None,
                 int8: bool = False) -> None:
        import io
        import tempfile
        import warnings

        import onnxruntime as ort

        sample = tokenizer(["query: 好", "query: fine, thanks"], padding=True,
                           return_tensors="pt")
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes about traced control flow
            torch.onnx.export(
                _Flat(model.eval()), (sample["input_ids"], sample["attention_mask"]), buf,
                input_names=["input_ids", "attention_mask"], output_names=["logits"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                              "attention_mask": {0: "batch", 1: "tokens"},
                              "logits": {0: "batch"}},
                opset_version=17, dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        self.quantized = int8
        # From a private file removed once loaded: a session made from bytes keeps a second
        # copy of the weights alive for its whole life (about 90 MB for the default model).
        with tempfile.TemporaryDirectory(prefix="revsat-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(buf.getvalue())
            del buf
            if int8:
                path = _int8(path, Path(tmp) / "model-int8.onnx")
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids,
                                       "attention_mask": attention_mask})[0]


def _int8(src: Path, dst: Path) -> Path:
    """ONNX Runtime dynamic int8 quantisation of every MatMul of the model file ``src``
    (weights per output channel, activations per batch), written to ``dst``."""
    import logging as _logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _logging.getLogger().level
    _logging.getLogger().setLevel(_logging.ERROR)  # "consider pre-processing": not needed
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    finally:
        _logging.getLogger().setLevel(quiet)
    return dst


def build_model(base: str | Path, num_layers: int | None = None) -> tuple[MultiTaskModel, object]:
    """A fresh multi-task model on a pretrained base folder (see ``revsat base-model``)."""
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(str(base), add_pooling_layer=False)
    if num_layers is not None and num_layers < encoder.config.num_hidden_layers:
        encoder.encoder.layer = encoder.encoder.layer[:num_layers]
        encoder.config.num_hidden_layers = num_layers
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    return MultiTaskModel(encoder, encoder.config.hidden_size), tokenizer


def student_from(folder: str | Path, keep_layers: Sequence[int]) -> tuple[MultiTaskModel, object]:
    """A smaller model initialised from a trained one: its embeddings, the encoder layers at
    ``keep_layers`` (in order) and its heads. Starting from a fine-tuned model (DistilBERT's
    "one layer in two" initialisation) lets distillation converge in one short run on a CPU.
    """
    model, tokenizer, _ = load_model(Path(folder))
    layers = model.encoder.encoder.layer
    if not keep_layers or any(not 0 <= i < len(layers) for i in keep_layers):
        raise ValueError(f"keep_layers {list(keep_layers)} must index the {len(layers)} layers")
    model.encoder.encoder.layer = nn.ModuleList(layers[i] for i in keep_layers)
    model.encoder.config.num_hidden_layers = len(keep_layers)
    return model, tokenizer


def save_model(model: MultiTaskModel, tokenizer, directory: Path, meta: dict,
               dtype: torch.dtype = torch.float16) -> Path:
    """Write a model folder (safetensors weights, encoder config, tokenizer, metadata).

    Weights are stored as ``dtype`` (fp16 by default: half the size, and loading casts back
    to fp32, so CPU inference is unchanged apart from rounding).
    """
    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(directory)
    state = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(directory / "model.safetensors"))
    tokenizer.save_pretrained(directory)
    (directory / META_FILE).write_text(
        json.dumps({"heads": HEADS, **meta}, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return directory


def load_model(directory: Path) -> tuple[MultiTaskModel, object, dict]:
    """Load a model folder written by :func:`save_model` (no network, no pickle)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    if meta.get("heads") != HEADS:
        raise ValueError(f"{directory}: heads {meta.get('heads')} do not match {HEADS}")
    config = AutoConfig.from_pretrained(str(directory))
    encoder = AutoModel.from_config(config, add_pooling_layer=False)
    model = MultiTaskModel(encoder, config.hidden_size)
    state = load_file(str(directory / "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return model, tokenizer, meta


class TransformerClassifier:
    """Batch inference: sort by length, pad per batch, ``inference_mode``, calibrated softmax."""

    def __init__(self, model: MultiTaskModel, tokenizer, meta: dict, device: str = "cpu",
                 batch_size: int = 64, max_chars: int = 2000, backend: str = "torch",
                 threads: int | None = None, max_windows: int = 4, int8: bool = False) -> None:
        self.model = model.to(device)
        self.backend = resolve_backend(backend, device, quantized=_is_quantized(model))
        self.onnx = None
        if self.backend == "onnx":
            try:
                self.onnx = OnnxRunner(model, tokenizer, threads, int8=int8)
                self.model = None  # ONNX Runtime holds its own copy of the weights
            except Exception as exc:  # e.g. an operator the exporter lacks: torch still works
                if backend == "onnx":
                    raise
                log.warning("ONNX export failed (%s: %s); using torch", type(exc).__name__, exc)
                self.backend = "torch"
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
             threads: int | None = None, max_windows: int = 4) -> TransformerClassifier:
        model, tokenizer, meta = load_model(directory)
        if quantize is None:
            quantize = bool(meta.get("int8_dynamic", False)) and device == "cpu"
        onnx_int8 = bool(quantize) and resolve_backend(backend, device) == "onnx"
        if quantize and not onnx_int8:
            import warnings

            with warnings.catch_warnings():  # torch announces a future API move; not ours
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(
                    model, {nn.Linear}, dtype=torch.qint8
                )
        return cls(model, tokenizer, meta, device, batch_size, max_chars, backend, threads,
                   max_windows, int8=onnx_int8)

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
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                idx = order[start : start + self.batch_size]
                t1 = time.perf_counter()
                input_ids = np.full((len(idx), int(lengths[idx].max())), pad, np.int64)
                for row, i in enumerate(idx):
                    input_ids[row, : lengths[i]] = rows[i]
                mask = (np.arange(input_ids.shape[1]) < lengths[idx, None]).astype(np.int64)
                if self.onnx is not None:
                    flat[idx] = self.onnx(input_ids, mask)
                else:
                    flat[idx] = self.model.flat(
                        torch.from_numpy(input_ids).to(self.device),
                        torch.from_numpy(mask).to(self.device),
                    ).float().cpu().numpy()
                self.seconds["model"] += time.perf_counter() - t1
        return combine_windows(split_heads(flat), owner, len(texts))

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


def _is_quantized(model: nn.Module) -> bool:
    return any("quantized" in type(m).__module__ for m in model.modules())


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
