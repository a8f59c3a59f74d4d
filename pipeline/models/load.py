"""One entry point that loads any model: :func:`load` takes a name (``default``, ``accurate``,
``baseline``, ``transformer``) or a folder and returns a :class:`~pipeline.models.heads.Classifier`.

A folder holds either the TF-IDF baseline (``model.json`` + ``weights.npz``) or the transformer
(``config.json`` + ``model.safetensors`` + ``revsat_model.json``, optionally naming a baseline to
average with: :class:`~pipeline.models.ensemble.EnsembleClassifier`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Settings, models_dir
from pipeline.errors import ModelNotFound
from pipeline.models.heads import Classifier


def resolve(spec: str | Path) -> Path:
    """Map a model name (``default``, ``accurate``, ``baseline``, ``transformer``) or folder
    to a folder.

    ``default`` is the shipped transformer (the fast distilled student) when present, otherwise
    the baseline; ``accurate`` is the 6-layer model it was distilled from (half the speed,
    better dimension detection); ``transformer`` is another name for ``default``.
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


def load(spec: str | Path, settings: Settings | None = None, *,
         ensemble: bool = True) -> Classifier:
    """Load the model named by ``spec`` (see :func:`resolve`) with ``settings``' device, batch
    size, backend, quantisation, threads and windows.

    ``ensemble=False`` returns a transformer alone even where its folder names a baseline to
    average with (a teacher's raw logits, the naive benchmark).
    """
    settings = settings or Settings()
    path = resolve(spec)
    if kind(path) == "baseline":
        from pipeline.models.baseline import BaselineModel

        return BaselineModel.load(path)
    classifier = _transformer(path, settings)
    extra = classifier.meta.get("ensemble")
    if not (ensemble and extra):
        return classifier
    from pipeline.models.baseline import BaselineModel
    from pipeline.models.ensemble import EnsembleClassifier

    baseline = BaselineModel.load((path / extra["baseline"]).resolve())
    weight = extra["weight"]
    return EnsembleClassifier(classifier, baseline,
                              weight if isinstance(weight, dict) else float(weight))


def _transformer(directory: Path, settings: Settings):
    """A :class:`~pipeline.models.transformer.inference.TransformerClassifier` for a folder;
    int8 as the settings say, else as the folder's metadata says (CPU only)."""
    from pipeline.models.transformer import persistence
    from pipeline.models.transformer.backends import resolve_backend, torch_int8
    from pipeline.models.transformer.inference import TransformerClassifier

    model, tokenizer, meta = persistence.load(directory)
    device, backend, quantize = settings.device, settings.backend, settings.quantize
    if quantize is None:
        quantize = bool(meta.get("int8_dynamic", False)) and device == "cpu"
    onnx_int8 = bool(quantize) and resolve_backend(backend, device) == "onnx"
    if quantize and not onnx_int8:
        model = torch_int8(model)
    return TransformerClassifier(
        model, tokenizer, meta, device, settings.batch_size, settings.max_chars, backend,
        settings.torch_threads, settings.max_windows, int8=onnx_int8,
    )
