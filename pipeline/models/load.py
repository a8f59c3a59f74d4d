"""Model-agnostic classification: load a classifier by name or folder, turn probabilities into
the output columns of ``reviews.parquet``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS
from pipeline.config import Settings, models_dir
from pipeline.errors import ModelNotFound


class Classifier(Protocol):
    """What the scoring flow needs from a model."""

    version: str

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        """Probabilities for ``reviews`` (columns ``text_norm``, ``tokens``, ``lang``):
        ``sentiment`` (n, 3) in SENTIMENTS order and each dimension (n, 4) in DIM_LABELS order.
        """
        ...


class BaselineClassifier:
    """Adapter: the TF-IDF baseline reads tokens."""

    def __init__(self, directory: Path) -> None:
        from pipeline.models.baseline import BaselineModel

        self.model = BaselineModel.load(directory)
        self.version = self.model.version

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        return self.model.predict_proba(list(reviews["tokens"]))


def resolve_model(spec: str) -> Path:
    """Map a model name (``default``, ``accurate``, ``baseline``, ``transformer``) or folder
    to a folder.

    ``default`` is the shipped transformer (the fast distilled student) when present, otherwise
    the baseline; ``accurate`` is the 6-layer model it was distilled from (half the speed,
    better dimension detection); ``transformer`` is another name for ``default``.
    """
    root = models_dir()
    if spec == "default":
        for name in ("default", "baseline"):
            if _model_kind(root / name):
                return root / name
        raise ModelNotFound(
            f"no model in {root}: train one with `revsat train-baseline` or pass --model PATH"
        )
    named = {"baseline": root / "baseline", "transformer": root / "default",
             "accurate": root / "accurate"}
    path = named.get(spec, Path(spec)).expanduser().resolve()
    if not _model_kind(path):
        raise ModelNotFound(
            f"model {spec!r}: {path} holds no model (expected model.json for a baseline or "
            "config.json + model.safetensors for a transformer)"
        )
    return path


def _model_kind(path: Path) -> str | None:
    if (path / "model.json").is_file() and (path / "weights.npz").is_file():
        return "baseline"
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return "transformer"
    return None


def load_classifier(spec: str, settings: Settings | None = None) -> Classifier:
    """Load the classifier named by ``spec`` (see :func:`resolve_model`)."""
    settings = settings or Settings()
    path = resolve_model(spec)
    if _model_kind(path) == "baseline":
        return BaselineClassifier(path)
    from pipeline.models.transformer.inference import load_any

    return load_any(
        path, device=settings.device, batch_size=settings.batch_size,
        max_chars=settings.max_chars, quantize=settings.quantize, backend=settings.backend,
        threads=settings.torch_threads, max_windows=settings.max_windows,
        numeric=settings.numeric_format, cache_dir=settings.cache_dir,
    )


def inference_info(classifier) -> dict:
    """Engine, numeric format (and why) and the CPU it was chosen for: stated in run.json."""
    from pipeline.models.transformer.onnx import FORMAT_FLAGS, cpu_flags, cpu_model

    flags = cpu_flags()
    wanted = sorted({f for names in FORMAT_FLAGS.values() for f in names} & flags)
    return {
        "backend": getattr(classifier, "backend", "baseline"),
        "numeric_format": getattr(classifier, "numeric_format", "fp64"),
        "format_reason": getattr(classifier, "format_reason", "TF-IDF baseline (numpy)"),
        "cpu": cpu_model(),
        "cpu_flags": wanted,
    }


def label_columns(probs: dict[str, np.ndarray]) -> pd.DataFrame:
    """Probabilities -> ``sentiment``, ``p_*``, and per dimension the label + confidence."""
    sent = probs["sentiment"]
    out = {"sentiment": np.asarray(SENTIMENTS, dtype=object)[sent.argmax(axis=1)]}
    for i, name in enumerate(SENTIMENTS):
        out[f"p_{name}"] = sent[:, i].astype(np.float64)
    for dim in DIMENSIONS:
        p = probs[dim]
        out[dim] = np.asarray(DIM_LABELS, dtype=object)[p.argmax(axis=1)]
        out[f"{dim}_confidence"] = p.max(axis=1).astype(np.float64)
    return pd.DataFrame(out)
