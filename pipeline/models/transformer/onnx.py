"""The transformer as an ONNX graph for ONNX Runtime on the CPU: exported once per weights
file, never at load, and run without importing torch or transformers.

The graph is keyed by the SHA-256 of the model folder's ``model.safetensors`` and
``config.json`` (and :data:`EXPORT_FORMAT`). It is looked up, in order, in the model folder's
``onnx/`` subfolder (a model packaged with its graph) and in the cache
(``Settings.cache_dir``/onnx, by default ``~/.cache/revsat/onnx``). When neither holds it, it
is exported once (:func:`export_folder`, which needs torch) into the cache: by
:func:`package` right after training, else by the first load on a machine (the first
``revsat score``, ``make demo`` on a fresh clone); every later run only reads it.

The export is generic: whatever ``nn.Module`` the folder loads into is traced with
``(input_ids, attention_mask)``; a dict of outputs (one block of logits per head) becomes one
named graph output per key, a single tensor the output ``logits``.

Graph formats: ``fp32``; ``int8`` (ONNX Runtime's dynamic quantisation of the encoder's
MatMuls, for CPUs with VNNI int8 dot products). ``bf16`` is not offered by ONNX Runtime's x86
CPU kernels: it runs on torch (:mod:`pipeline.models.formats` chooses).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import weakref
from pathlib import Path

import numpy as np

from pipeline.config import default_cache_dir
from pipeline.files import replacing

log = logging.getLogger("revsat")

#: Part of the cache key: bump when the export (opset, wrapper, quantiser options) changes.
EXPORT_FORMAT = 2
FORMATS = ("fp32", "int8")
WEIGHT_FILES = ("model.safetensors", "config.json")


def weights_key(directory: Path) -> str:
    """Hash of the folder's weights and encoder config (what the graph is made from)."""
    digest = hashlib.sha256(f"revsat-onnx-{EXPORT_FORMAT}".encode())
    for name in WEIGHT_FILES:
        with (directory / name).open("rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:24]


def graph_paths(directory: Path, key: str, fmt: str, cache_dir: Path | None) -> list[Path]:
    """Where the graph of ``key`` in format ``fmt`` may be, in lookup order."""
    name = f"{key}.{fmt}.onnx"
    return [directory / "onnx" / name, (cache_dir or default_cache_dir()) / "onnx" / name]


def find_graph(directory: Path, fmt: str = "fp32", cache_dir: Path | None = None,
               export: bool = True) -> Path:
    """The graph file of ``directory`` in ``fmt``; exported (once) into the cache when missing
    and ``export`` is true, else :class:`FileNotFoundError`."""
    key = weights_key(directory)
    for path in graph_paths(directory, key, fmt, cache_dir):
        if path.is_file():
            return path
    if not export:
        raise FileNotFoundError(f"no ONNX graph {key}.{fmt} for {directory}")
    return export_folder(directory, fmt, cache_dir, key=key)


def export_folder(directory: Path, fmt: str = "fp32", cache_dir: Path | None = None,
                  key: str | None = None, target: Path | None = None) -> Path:
    """Export the model of ``directory`` to ONNX in ``fmt`` (fp32 first; int8 is quantised
    from it) into ``target`` (a folder; default the cache). Written atomically, so concurrent
    processes never read half a file. Needs torch."""
    key = key or weights_key(directory)
    folder = target or (cache_dir or default_cache_dir()) / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / f"{key}.fp32.onnx"
    if not fp32.is_file():
        from pipeline.models.transformer import persistence

        log.info("exporting %s to ONNX (once per weights file): %s", directory, fp32)
        model, _, _ = persistence.load(directory)
        _atomic(fp32, lambda tmp: export_module(model, tmp))
    if fmt == "fp32":
        return fp32
    if fmt == "int8":
        out = folder / f"{key}.int8.onnx"
        if not out.is_file():
            _atomic(out, lambda tmp: int8_onnx(fp32, tmp))
        return out
    raise ValueError(f"unknown numeric format {fmt!r}: use one of {', '.join(FORMATS)}")


def _atomic(path: Path, write) -> None:
    """Run ``write(tmp)`` on a temporary path renamed over ``path`` (see :func:`replacing`)."""
    with replacing(path) as tmp:
        write(tmp)


def export_module(module, path: Path) -> list[str]:
    """Trace ``module(input_ids=..., attention_mask=...)`` into the ONNX file ``path`` with
    dynamic batch and token axes; returns the output names."""
    import warnings

    import torch

    class Outputs(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            return tuple(out.values()) if isinstance(out, dict) else out

    module = module.eval()
    ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]], dtype=torch.int64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    with torch.no_grad():
        sample = module(input_ids=ids, attention_mask=mask)
    if isinstance(sample, dict):
        names = list(sample)
    elif isinstance(sample, (tuple, list)):
        names = [f"output_{i}" for i in range(len(sample))]
    else:
        names = ["logits"]
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes about traced control flow
        torch.onnx.export(Outputs(module), (ids, mask), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=names,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return names


def int8_onnx(src: Path, dst: Path, op_types: tuple[str, ...] = ("MatMul",)) -> Path:
    """ONNX Runtime dynamic int8 quantisation of the ``op_types`` of ``src`` (weights per
    output channel, activations per batch), written to ``dst``: only products with a weight
    matrix of the encoder."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    # fp32 stays where int8 costs accuracy for little speed: the heads, and the products of two
    # activations (attention scores and their weighted sum: softmax outputs quantised per
    # batch lose the small probabilities)
    keep = [n.name for n in graph.node if n.name and n.op_type in ("Gemm", "MatMul")
            and (("encoder" not in n.name and "layer" not in n.name)
                 or not any(i in weights for i in n.input))]
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": not needed
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=list(op_types), nodes_to_exclude=keep)
    finally:
        logging.getLogger().setLevel(quiet)
    return dst


class OnnxRunner:
    """An ONNX Runtime session of a graph file; maps padded ``input_ids``/``attention_mask``
    arrays to a dict of named outputs."""

    def __init__(self, path: Path, threads: int | None = None, fmt: str = "fp32") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        if share_arena():
            options.add_session_config_entry("session.use_env_allocators", "1")
        self.path = path
        self.format = fmt
        self.quantized = fmt == "int8"
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        _RUNNERS.add(self)

    def shrink(self) -> None:
        """One tiny run with ONNX Runtime's arena shrinkage on: the arena hands its unused
        chunks back to the system at the end of it."""
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        ids = np.zeros((1, 2), np.int64)
        self.session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, options)

    def outputs(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {"input_ids": input_ids,
                                         "attention_mask": attention_mask})
        return dict(zip(self.names, values, strict=True))

    def flat(self, input_ids: np.ndarray, attention_mask: np.ndarray,
             heads: dict[str, int]) -> np.ndarray:
        """The ``(batch, sum(heads))`` logits in ``heads`` order."""
        out = self.outputs(input_ids, attention_mask)
        if "logits" in out:
            return out["logits"]
        return np.concatenate([out[name] for name in heads], axis=1)


#: The live sessions of this process (a shared arena is shrunk through any of them).
_RUNNERS: weakref.WeakSet[OnnxRunner] = weakref.WeakSet()


def shrink_arena() -> bool:
    """Give the shared arena's free memory back to the system (false when no session is alive).

    The arena belongs to ONNX Runtime's environment and outlives the sessions that use it, so a
    released model would keep its largest batch's memory through a large run's merge: 654 MB
    resident after releasing the routed default against 294 MB with per-session arenas (2,000
    reviews). Call it before dropping the last model; shrinking on every run instead cost 19 %
    of the speed."""
    runner = next(iter(list(_RUNNERS)), None)  # one shrink empties the arena they share
    if runner is None:
        return False
    runner.shrink()
    return True


@functools.cache
def share_arena() -> bool:
    """Register one CPU memory arena on ONNX Runtime's environment for every session of this
    process to share (once; false where ONNX Runtime refuses, each session then keeps its own).

    Each session's own arena keeps its largest batch's memory for the life of the session, so
    the default and its Chinese route held two such peaks: with one shared arena the routed
    default peaked at 963 MB instead of 1,301 MB over 5,000 reviews of realistic lengths, at
    the same speed (AMD EPYC, avx512_bf16, 2 cores; arenas off: 1,091 MB but 40 % slower).
    The arena outlives the sessions: :func:`shrink_arena` empties it before a model is
    released."""
    import onnxruntime as ort

    try:
        cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))
    except Exception:  # an older ONNX Runtime, or an arena registered by the host program
        return False
    return True


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's needs are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def package(directory: Path) -> None:
    """Export a freshly saved folder's ONNX graph into the cache (keyed by the weights' hash)
    so that no scoring run ever exports it; a failure is logged and scoring exports it once on
    first use instead."""
    if not onnx_available():
        return
    try:
        export_folder(directory)
    except Exception as exc:
        log.warning("ONNX export of %s failed (%s: %s)", directory, type(exc).__name__, exc)
