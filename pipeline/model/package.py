"""Package a trained model folder for shipping: fp16 safetensors, tokenizer, metadata, card."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from pipeline.model.card import write_model_card
from pipeline.model.classifier import load_model, save_model


def package_model(src: Path, dst: Path, results: dict | None = None,
                  int8_dynamic: bool | None = None, extra: str = "",
                  ensemble: dict | None = None, project_label_rows: int = 0) -> Path:
    """Copy ``src`` to ``dst`` with fp16 weights; optionally set the int8 flag and rewrite the
    card with ``results`` (from :func:`pipeline.model.evaluate.evaluate_models`)."""
    model, tokenizer, meta = load_model(src)
    if int8_dynamic is not None:
        meta["int8_dynamic"] = int8_dynamic
    if ensemble is not None:
        meta["ensemble"] = ensemble
    meta = {k: v for k, v in meta.items() if k != "heads"}
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp, meta)
    manifest = src / "training_manifest.json"
    if manifest.is_file():  # gzip: ~1.4 MB of ids would push the folder over 60 MB
        with manifest.open("rb") as fh, gzip.open(tmp / "training_manifest.json.gz", "wb") as gz:
            shutil.copyfileobj(fh, gz)
    if results is not None:
        (tmp / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False),
                                          encoding="utf-8")
        write_model_card(tmp, meta.get("train_config", {}), results, extra,
                         project_label_rows)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst
