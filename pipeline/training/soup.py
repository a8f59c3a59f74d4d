"""A weight-space average of two fine-tuned transformer folders (a "model soup", Wortsman et
al., 2022): ``(1 - weight) * first + weight * second``, for a model fine-tuned from another.

Why: a touch-up that teaches one thing (privacy, from written reviews) also drifts what the
network read well before (Chinese mixed reviews); averaging it with its starting point keeps
most of both where the two lie in one basin, which a model fine-tuned from the other does.
The first folder's tokenizer, settings and polarity combiner are kept; the result names both
parents and the weight in ``revsat_model.json`` (``"soup"``) and its training manifest is the
union of theirs, so "never trained on" checks still hold.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from pipeline.errors import ModelNotFound, SettingsError
from pipeline.training.manifest import MANIFEST, MANIFEST_GZ, read_manifest

WEIGHTS = "model.safetensors"
META = "revsat_model.json"


def average_models(first: Path, second: Path, weight: float, out: Path,
                   version: str) -> Path:
    """Write ``out``: ``first``'s folder with weights ``(1 - weight) * first + weight *
    second`` and version ``version``. Both must be transformer folders of one architecture
    (the same tensors and shapes); ``weight`` lies in [0, 1]."""
    from safetensors.torch import load_file, save_file

    if not 0.0 <= weight <= 1.0:
        raise SettingsError(f"--weight {weight}: the second model's share must lie in [0, 1]")
    from pipeline.models.load import kind

    for folder in (first, second):
        if kind(folder) != "transformer" or not (folder / META).is_file():
            raise ModelNotFound(f"{folder} holds no transformer model (config.json, {WEIGHTS} "
                                f"and {META})")
    if out.resolve() in (first.resolve(), second.resolve()):
        raise SettingsError(f"--out {out} is one of the models being averaged")
    a, b = load_file(first / WEIGHTS), load_file(second / WEIGHTS)
    shapes = {k: tuple(v.shape) for k, v in a.items()}
    if shapes != {k: tuple(v.shape) for k, v in b.items()}:
        raise SettingsError(f"{first} and {second} differ in architecture (tensors or shapes): "
                            "only a model and one fine-tuned from it can be averaged")
    mixed = {k: ((1.0 - weight) * a[k].float() + weight * b[k].float()).to(a[k].dtype)
             .contiguous() for k in a}
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(first, out)
    save_file(mixed, out / WEIGHTS, metadata={"format": "pt"})
    meta_a, meta_b = (json.loads((f / META).read_text(encoding="utf-8")) for f in (first, second))
    meta = {**meta_a, "name": version, "version": version,
            "soup": {"first": meta_a.get("version"), "second": meta_b.get("version"),
                     "second_weight": weight}}
    (out / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    (out / MANIFEST).unlink(missing_ok=True)
    _merge_manifests([first, second], out / MANIFEST_GZ)
    return out


def _merge_manifests(folders: list[Path], out: Path) -> None:
    """The union of the folders' training manifests (row ids per part; the trainer writes
    ``training_manifest.json``, a shipped folder holds it gzipped), written gzipped."""
    parts: dict[str, set[str]] = {}
    for folder in folders:
        for name, ids in (read_manifest(folder) or {}).items():
            parts.setdefault(name, set()).update(ids)
    if not parts:
        out.unlink(missing_ok=True)
        return
    with gzip.open(out, "wt", encoding="utf-8") as fh:
        json.dump({name: sorted(ids) for name, ids in parts.items()}, fh)
