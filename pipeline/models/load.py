"""One entry point that loads any model: :func:`load` takes a name (``default``, ``accurate``,
``baseline``, ``transformer``) or a folder and returns a :class:`~pipeline.models.heads.Classifier`.

A folder holds either the TF-IDF baseline (``model.json`` + ``weights.npz``) or the transformer
(``config.json`` + ``model.safetensors`` + ``revsat_model.json``, optionally naming a baseline to
average with: :class:`~pipeline.models.ensemble.EnsembleClassifier`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from pipeline.config import Settings, models_dir
from pipeline.errors import DeviceUnavailable, ModelNotFound
from pipeline.models.formats import choose_format
from pipeline.models.heads import Classifier


def resolve(spec: str | Path) -> Path:
    """Map a model name (``default``, ``accurate``, ``baseline``, ``transformer``) or folder
    to a folder.

    ``default`` is the shipped transformer (the fast distilled student) when present, otherwise
    the baseline; ``accurate`` is a 6-layer model trained with the same recipe (half the speed,
    better on mixed reviews); ``transformer`` is another name for ``default``.
    """
    root = models_dir()
    spec = str(spec)
    if spec == "default":
        for name in ("default", "baseline"):
            if kind(root / name):
                return root / name
        raise ModelNotFound(
            f"no model in {root}: train one with `revsat train-baseline` or pass --model PATH"
        )
    named = {"baseline": root / "baseline", "transformer": root / "default",
             "accurate": root / "accurate"}
    path = named.get(spec, Path(spec)).expanduser().resolve()
    if not kind(path):
        raise ModelNotFound(
            f"model {spec!r}: {path} holds no model (expected model.json for a baseline or "
            "config.json + model.safetensors for a transformer)"
        )
    return path


def kind(path: Path) -> str | None:
    """``baseline``, ``transformer`` or None: what the folder ``path`` holds."""
    if (path / "model.json").is_file() and (path / "weights.npz").is_file():
        return "baseline"
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return "transformer"
    return None


def check_device(device: str, model: str | Path) -> None:
    """Raise :class:`DeviceUnavailable` when ``device`` is not usable for ``model`` on this
    machine (``cuda`` without a CUDA GPU or a CUDA build of torch), before anything loads.
    The baseline runs on the CPU whatever the device."""
    if str(device) == "cpu" or kind(resolve(model)) == "baseline":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise DeviceUnavailable(f"--device {device!r} is not a device ({exc}); use cpu or "
                                "cuda") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise DeviceUnavailable(f"--device {device!r}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"--device {device}: no CUDA GPU is usable on this machine (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"--device {device}: this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s)")


def load(spec: str | Path, settings: Settings | None = None, *,
         ensemble: bool = True, combiner: bool = True) -> Classifier:
    """Load the model named by ``spec`` (see :func:`resolve`) with ``settings``' device, batch
    size, backend, quantisation, threads and windows.

    ``ensemble=False`` returns a transformer alone even where its folder names a baseline to
    average with (a teacher's raw logits, the naive benchmark); ``combiner=False`` leaves out
    the folder's learned polarity combiner (fitting a new one).
    """
    settings = settings or Settings()
    path = resolve(spec)
    if kind(path) == "baseline":
        from pipeline.models.baseline import BaselineModel

        return BaselineModel.load(path)
    classifier = _transformer(path, settings)
    if combiner:
        from pipeline.models.transformer.combiner import Combiner

        classifier.combiner = Combiner.load(path)
        if classifier.combiner:  # other predictions: another version, another score cache
            classifier.version += "+" + classifier.combiner.tag
    extra = classifier.meta.get("ensemble")
    routes = classifier.meta.get("routes")
    second = classifier.meta.get("second_opinion")
    if ensemble and extra:
        from pipeline.models.ensemble import EnsembleClassifier

        folder = (path / extra["baseline"]).resolve()
        if kind(folder) != "baseline":  # a model folder copied without its baseline
            raise ModelNotFound(f"{path}: averages with the baseline {extra['baseline']!r}, but "
                                f"{folder} holds no baseline model (model.json + weights.npz)")
        baseline = shared_baseline(folder)
        weight = extra["weight"]
        classifier = EnsembleClassifier(classifier, baseline,
                                        weight if isinstance(weight, dict) else float(weight))
    if ensemble and combiner and second:
        classifier = _second_opinion(classifier, path, second, settings)
    if ensemble and combiner and routes:
        return _routed(classifier, path, routes, settings)
    return classifier


@functools.lru_cache(maxsize=2)
def shared_baseline(folder: Path) -> Classifier:
    """The baseline in ``folder``, loaded once per process: the default and its Chinese route
    average with the same one (0.1 s and 34 MB each). It keeps no state between calls.
    ``shared_baseline.cache_clear()`` drops it (:func:`pipeline.run.part.release_classifiers`)."""
    from pipeline.models.baseline import BaselineModel

    return BaselineModel.load(folder)


def _folder_version(folder: Path) -> str:
    """A model folder's version and a digest of its settings and combiner: a refitted folder
    is another model version (another score cache)."""
    import hashlib
    import json

    digest = hashlib.sha1()
    for name in ("revsat_model.json", "combiner.json"):
        if (folder / name).is_file():
            digest.update((folder / name).read_bytes())
    meta = json.loads((folder / "revsat_model.json").read_text(encoding="utf-8"))
    return f"{meta.get('version', folder.name)}-{digest.hexdigest()[:8]}"


def _transformer_folder(path: Path, sub: str, what: str) -> Path:
    """The folder ``sub`` (relative to the model folder ``path``) that ``what`` names; a clear
    error unless it holds a transformer model."""
    folder = (path / sub).resolve()
    if kind(folder) != "transformer":
        raise ModelNotFound(f"{path}: {what} names {folder}, which holds no transformer model")
    return folder


def _second_opinion(first: Classifier, path: Path, spec: dict, settings: Settings) -> Classifier:
    """``first`` with the second reading ``spec`` names (:mod:`pipeline.models.second_opinion`);
    its folder must hold a transformer and is loaded when first needed."""
    from pipeline.models.second_opinion import SecondOpinionClassifier

    folder = _transformer_folder(path, spec["model"], "second_opinion")
    return SecondOpinionClassifier(first, lambda: load(folder, settings), _folder_version(folder),
                                   spec.get("languages", ["en"]),
                                   spec.get("when_mentioned", ["logistics", "service", "privacy"]))


def _routed(main: Classifier, path: Path, routes: dict[str, str],
            settings: Settings) -> Classifier:
    """``main`` with the folders of ``routes`` (``{lang: folder relative to path}``) for the
    reviews of their languages (:mod:`pipeline.models.routed`); a route folder must hold a
    model and is loaded when first needed."""
    from pipeline.models.routed import RoutedClassifier

    folders = {lang: _transformer_folder(path, sub, f"route {lang!r}")
               for lang, sub in routes.items()}
    versions = {lang: _folder_version(folder) for lang, folder in folders.items()}
    return RoutedClassifier(
        main, {lang: (lambda f=folder: load(f, settings)) for lang, folder in folders.items()},
        versions)


def _transformer(directory: Path, settings: Settings):
    """A :class:`~pipeline.models.transformer.inference.TransformerClassifier` for a folder.

    The numeric format comes first (:func:`pipeline.models.formats.choose_format`, from
    ``settings.numeric_format``; ``quantize`` true, or the folder's ``int8_dynamic``, forces
    int8, false fp32). fp32 and int8 on the CPU run the folder's ONNX graph on ONNX Runtime
    (exported once per weights file and cached, see :mod:`pipeline.models.transformer.onnx`),
    importing neither torch nor transformers; bf16, a GPU or backend ``torch`` run the torch
    module, built without transformers (:mod:`pipeline.models.transformer.encoder`;
    torch-int8 where quantised)."""
    import logging

    from pipeline.models.transformer.backends import resolve_backend, torch_int8
    from pipeline.models.transformer.inference import TransformerClassifier

    device, backend, quantize = settings.device, settings.backend, settings.quantize
    cpu = str(device).startswith("cpu")
    meta = _format_meta(directory, backend)
    if quantize is None and meta.get("int8_dynamic") and cpu:
        quantize = True
    requested = "int8" if quantize else "fp32" if quantize is False else settings.numeric_format
    fmt, reason = choose_format(requested, meta) if cpu or requested != "auto" else (
        "fp32", "GPU: fp32")
    onnx = resolve_backend(backend, device) == "onnx"
    if fmt != "bf16" and onnx:
        try:
            return _onnx_transformer(directory, settings, meta, fmt, reason)
        except Exception as exc:
            if backend == "onnx":
                raise
            logging.getLogger("revsat").warning(
                "ONNX graph unavailable (%s: %s); using torch", type(exc).__name__, exc)
    from pipeline.models.transformer import persistence

    if fmt == "int8":  # dynamic quantisation replaces transformers' separate Linear layers
        model, tokenizer, meta = persistence.load(directory)
        model = torch_int8(model)
    else:
        model, tokenizer, meta = persistence.load_for_scoring(directory)
    bf16 = fmt == "bf16"
    return TransformerClassifier(
        model, tokenizer, meta, device, settings.batch_size, settings.max_chars, "torch",
        settings.torch_threads, settings.max_windows, bf16=bf16,
        format_reason=reason if bf16 else "torch backend",
    )


def _onnx_transformer(directory: Path, settings: Settings, meta: dict, fmt: str, reason: str):
    from pipeline.models.heads import HEADS
    from pipeline.models.transformer import onnx as ox
    from pipeline.models.transformer.backends import OnnxBackend
    from pipeline.models.transformer.inference import TransformerClassifier
    from pipeline.models.transformer.tokenizer import FastTokenizer

    if meta.get("heads") != HEADS:
        raise ValueError(f"{directory}: heads {meta.get('heads')} do not match {HEADS}")
    engine = OnnxBackend(ox.find_graph(directory, fmt, settings.cache_dir),
                         settings.torch_threads, fmt)
    return TransformerClassifier(
        None, FastTokenizer(directory), meta, settings.device, settings.batch_size,
        settings.max_chars, "onnx", settings.torch_threads, settings.max_windows,
        engine=engine, format_reason=reason,
    )


def _format_meta(directory: Path, backend: str) -> dict:
    """A transformer folder's ``revsat_model.json`` (read without importing torch), its checked
    ``formats`` less bf16 where ONNX Runtime was asked for by name (bf16 runs on torch)."""
    import json

    # persistence.META_FILE
    meta = json.loads((directory / "revsat_model.json").read_text(encoding="utf-8"))
    if backend == "onnx":
        meta["formats"] = [f for f in meta.get("formats") or [] if f != "bf16"]
    return meta


def run_format(settings: Settings, model: str | Path,
               input_bytes: int | None) -> tuple[Settings, str | None]:
    """``settings`` with ``numeric_format`` ``auto`` made concrete for a run over
    ``input_bytes`` of input (:func:`pipeline.models.formats.choose_format`), and why; the
    settings as given (and None) where a format was asked for by name or the model is no
    transformer on the CPU. A run decides once, so every worker and the score cache use the
    same format."""
    path = resolve(model)
    if (settings.numeric_format != "auto" or kind(path) != "transformer"
            or not str(settings.device).startswith("cpu") or settings.quantize is not None):
        return settings, None
    fmt, reason = choose_format("auto", _format_meta(path, settings.backend),
                                input_bytes=input_bytes,
                                bf16_min_bytes=int(settings.bf16_min_input_mb * 1e6))
    return settings.model_copy(update={"numeric_format": fmt}), reason


def inference_info(classifier) -> dict:
    """Engine, numeric format (and why) and the CPU it was chosen for: stated in run.json."""
    from pipeline.hardware import FAST_FORMATS, cpu_flags, cpu_model

    inner = getattr(classifier, "transformer", classifier)
    backend = getattr(inner, "backend", None)
    flags = cpu_flags()
    return {
        "backend": getattr(backend, "name", "baseline"),
        "numeric_format": getattr(inner, "numeric_format", "fp64"),
        "format_reason": getattr(inner, "format_reason", "TF-IDF baseline (numpy)"),
        "cpu": cpu_model(),
        "cpu_flags": sorted({f for names in FAST_FORMATS.values() for f in names} & flags),
    }
