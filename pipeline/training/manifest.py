"""A model folder's training manifest: the row ids each part of its training used.

Texts are never copied: ids point into the shared corpora and the project's data folders.
The trainer writes ``training_manifest.json``; a shipped folder holds it gzipped. It is what
"never trained on" checks read: the combiner fit (written reviews a network has not seen) and
model soups (the union of both parents').
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

#: The file the trainer writes, and its gzipped form in a shipped folder.
MANIFEST = "training_manifest.json"
MANIFEST_GZ = MANIFEST + ".gz"


def write_manifest(path: Path, parts: dict[str, pd.DataFrame],
                   inherit_from: Path | None = None) -> None:
    """Row ids used per part (texts are never copied: ids point into the shared corpora).
    ``inherit_from``: the folder the network was fine-tuned from; its ids become the part
    ``inherited``, so that what a model's ancestors learnt counts as trained on too."""
    ids = {name: sorted(map(str, df["id"])) for name, df in parts.items()}
    inherited = trained_ids(inherit_from) if inherit_from is not None else None
    if inherited:
        ids["inherited"] = sorted(inherited)
    path.write_text(json.dumps(ids), encoding="utf-8")


def read_manifest(folder: Path) -> dict[str, set[str]] | None:
    """The row ids per part of ``folder``'s manifest (gzipped or not); ``None`` without one."""
    for path, opener in ((folder / MANIFEST_GZ, gzip.open), (folder / MANIFEST, open)):
        if path.is_file():
            with opener(path, "rt", encoding="utf-8") as fh:
                return {name: set(ids) for name, ids in json.load(fh).items()}
    return None


def trained_ids(folder: Path) -> set[str] | None:
    """Every row id ``folder``'s network learnt or was calibrated on, clause rows
    (``<id>#c<k>``) counted as their review; ``None`` where the folder has no manifest.
    Folders trained before 2026-12-04 (second session) list their last run only."""
    parts = read_manifest(folder)
    if parts is None:
        return None
    return {i.split("#", 1)[0] for ids in parts.values() for i in ids}
