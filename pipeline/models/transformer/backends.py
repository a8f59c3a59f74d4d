"""Inference engines for the multi-task module: eager PyTorch, or the module's ONNX graph run
by ONNX Runtime on the CPU. Both map padded ``input_ids``/``attention_mask`` arrays to the flat
``(batch, sum(HEADS))`` logits.

The ONNX graph of a model folder is exported once per weights file and cached keyed by their
hash (:mod:`pipeline.models.transformer.onnx`), never at load; loading it imports neither torch
nor transformers. Only an in-memory module (training, tests) is exported on the spot.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.hardware import release_free_heap
from pipeline.models.heads import HEADS
from pipeline.models.transformer.onnx import OnnxRunner, export_module, int8_onnx, onnx_available

if TYPE_CHECKING:
    from torch import nn

    from pipeline.models.transformer.module import MultiTaskModel

log = logging.getLogger("revsat")

__all__ = ["OnnxBackend", "TorchBackend", "int8_onnx", "make_backend", "onnx_available",
           "resolve_backend"]


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


def is_quantized(model: nn.Module | None) -> bool:
    """Whether ``model`` holds torch-quantised layers."""
    return model is not None and any("quantized" in type(m).__module__
                                     for m in model.modules())


def torch_int8(model: MultiTaskModel) -> nn.Module:
    """torch's dynamic int8 quantisation of every linear layer (CPU only)."""
    import warnings

    import torch
    from torch import nn

    with warnings.catch_warnings():  # torch announces a future API move; not ours
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


class TorchBackend:
    """The module itself, on ``device``, under ``inference_mode``.

    With ``bf16`` the encoder runs under bf16 autocast and the pooling and heads in fp32 on
    its (upcast) token states: the few small products that decide each head are where rounding
    would flip a label. The backend owns the module and stores the encoder's linear layers in
    bfloat16 once (:func:`bf16_encoder`), so autocast no longer casts them at every batch."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", bf16: bool = False) -> None:
        self.model = model.to(device)
        self.device = device
        self.bf16 = bf16 and not is_quantized(model)
        self.format = "int8" if is_quantized(model) else "bf16" if self.bf16 else "fp32"
        self.quantized = self.format == "int8"
        # bf16: batches padded to a multiple of 16 tokens (inference.py). Fewer distinct
        # shapes keep oneDNN's kernel cache and the heap small: peak 2.06 -> 1.51 GB scoring
        # 5,000 realistic reviews, at the same speed (Intel Xeon, AMX, 2 cores)
        self.pad_to = 16 if self.bf16 else 1
        if self.bf16:
            # before torch's first oneDNN kernel: a cache of 8 kernels, not 1,024 (each AMX
            # kernel keeps its own buffers): peak 1.51 -> 1.41 GB on the same reviews at the
            # same speed. A value the user set wins.
            os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")
            bf16_encoder(self.model.encoder)
        fuse = getattr(self.model.encoder, "fuse", None)  # the scoring encoder (encoder.py)
        if fuse is not None and not self.quantized:
            fuse()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        kind = "cuda" if str(self.device).startswith("cuda") else "cpu"
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        with torch.inference_mode():
            if not self.bf16:
                return self.model.flat(ids, mask).float().cpu().numpy()
            with torch.autocast(kind, torch.bfloat16):
                hidden = self.model.encoder(input_ids=ids, attention_mask=mask)[0]
            return self.model.pool_heads(hidden.float(), mask).float().cpu().numpy()

    def settle(self) -> None:
        """After a chunk: hand the allocator's free pages back to the system (glibc keeps
        them, and batches of many shapes left the process hundreds of MB larger)."""
        release_free_heap()


def bf16_encoder(encoder: nn.Module) -> None:
    """Store ``encoder``'s linear layers in bfloat16, in place: the same outputs as autocast's
    own cast at every batch (tested bit for bit), without the cast. The embeddings, the layer
    norms and the residual stream stay fp32: rounding the word embeddings too changed 5 more
    of the 5,872 held-out dimension labels, one by 0.27 in probability."""
    import torch
    from torch import nn

    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            module.to(torch.bfloat16)


class OnnxBackend:
    """An ONNX graph file run by ONNX Runtime on the CPU (fused kernels, less per-operator
    overhead than eager PyTorch for a small encoder on short reviews; outputs equal PyTorch's
    to about 1e-5). ``format``: ``fp32`` or ``int8`` (see :func:`.onnx.choose_format`)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None, fmt: str = "fp32") -> None:
        self.runner = OnnxRunner(path, threads, fmt)
        self.format = fmt
        self.quantized = fmt == "int8"

    @classmethod
    def from_module(cls, model: MultiTaskModel, threads: int | None = None,
                    int8: bool = False) -> OnnxBackend:
        """An in-memory module exported to a private temporary file (removed once loaded)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="revsat-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_module(model, path)
            if int8:
                path = int8_onnx(path, Path(tmp) / "model-int8.onnx")
            return cls(path, threads, "int8" if int8 else "fp32")

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.runner.flat(input_ids, attention_mask, HEADS)


def make_backend(model: MultiTaskModel, tokenizer: Any = None, backend: str = "auto",
                 device: str = "cpu", threads: int | None = None,
                 int8: bool = False, bf16: bool = False) -> TorchBackend | OnnxBackend:
    """The engine ``backend`` asks for around an in-memory module (see
    :func:`resolve_backend`). ``auto`` falls back to torch when the ONNX export fails (an
    operator the exporter lacks); ``onnx`` raises. ``bf16``: torch under bf16 autocast."""
    if bf16:
        return TorchBackend(model, device, bf16=True)
    chosen = resolve_backend(backend, device, quantized=is_quantized(model))
    if chosen == "onnx":
        try:
            return OnnxBackend.from_module(model, threads, int8=int8)
        except Exception as exc:
            if backend == "onnx":
                raise
            log.warning("ONNX export failed (%s: %s); using torch", type(exc).__name__, exc)
    return TorchBackend(model, device)
