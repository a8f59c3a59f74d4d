"""Inference engines for the multi-task module: eager PyTorch, or the module exported to ONNX
and run by ONNX Runtime on the CPU. Both map padded ``input_ids``/``attention_mask`` arrays to
the flat ``(batch, sum(HEADS))`` logits."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.models.transformer.module import MultiTaskModel

log = logging.getLogger("revsat")


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's needs are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


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


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds torch-quantised layers."""
    return any("quantized" in type(m).__module__ for m in model.modules())


def torch_int8(model: MultiTaskModel) -> nn.Module:
    """torch's dynamic int8 quantisation of every linear layer (CPU only)."""
    import warnings

    with warnings.catch_warnings():  # torch announces a future API move; not ours
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


class TorchBackend:
    """The module itself, on ``device``, under ``inference_mode``."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu") -> None:
        self.model = model.to(device)
        self.device = device

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model.flat(
                torch.from_numpy(input_ids).to(self.device),
                torch.from_numpy(attention_mask).to(self.device),
            ).float().cpu().numpy()


class _Flat(nn.Module):
    """Export wrapper: one output tensor instead of a dict."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.flat(input_ids, attention_mask)


class OnnxBackend:
    """The model exported to ONNX at load time and run by ONNX Runtime on the CPU.

    ONNX Runtime runs the same graph with fused kernels (LayerNorm, GELU, attention steps) and
    less per-operator overhead than eager PyTorch, which matters for a small encoder on short
    reviews (see README, Performance); the outputs equal PyTorch's to about 1e-5. The graph
    lives only in a private temporary folder while the session loads; nothing is downloaded.
    """

    name = "onnx"

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
                path = int8_onnx(path, Path(tmp) / "model-int8.onnx")
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids,
                                       "attention_mask": attention_mask})[0]


def int8_onnx(src: Path, dst: Path) -> Path:
    """ONNX Runtime dynamic int8 quantisation of every MatMul of the model file ``src``
    (weights per output channel, activations per batch), written to ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": not needed
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    finally:
        logging.getLogger().setLevel(quiet)
    return dst


def make_backend(model: MultiTaskModel, tokenizer: Any, backend: str = "auto", device: str = "cpu",
                 threads: int | None = None, int8: bool = False) -> TorchBackend | OnnxBackend:
    """The engine ``backend`` asks for (see :func:`resolve_backend`). ``auto`` falls back to
    torch when the ONNX export fails (an operator the exporter lacks); ``onnx`` raises."""
    chosen = resolve_backend(backend, device, quantized=is_quantized(model))
    if chosen == "onnx":
        try:
            return OnnxBackend(model, tokenizer, threads, int8=int8)
        except Exception as exc:
            if backend == "onnx":
                raise
            log.warning("ONNX export failed (%s: %s); using torch", type(exc).__name__, exc)
    return TorchBackend(model, device)
