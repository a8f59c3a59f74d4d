"""A transformer model folder on disk: ``config.json`` (the encoder's), ``model.safetensors``
(encoder and heads), the tokenizer files and ``revsat_model.json`` (heads, input prefix,
calibration temperatures, version, optional ensemble). Nothing is unpickled when loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.models.heads import HEADS
from pipeline.models.transformer.module import POOLINGS, MultiTaskModel, pooling_of

META_FILE = "revsat_model.json"


def save(model: MultiTaskModel, tokenizer: Any, directory: Path, meta: dict,
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
        json.dumps({"heads": HEADS, "pooling": pooling_of(model), **meta}, indent=2,
                   ensure_ascii=False), encoding="utf-8"
    )
    return directory


def _checked_meta(directory: Path) -> tuple[dict, type[nn.Module]]:
    """A folder's ``revsat_model.json`` and its pooling's module class, both checked."""
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    if meta.get("heads") != HEADS:
        raise ValueError(f"{directory}: heads {meta.get('heads')} do not match {HEADS}")
    pooling = meta.get("pooling", "mean")  # folders written before attention pooling: mean
    if pooling not in POOLINGS:
        raise ValueError(f"{directory}: unknown pooling {pooling!r}; known: {sorted(POOLINGS)}")
    return meta, POOLINGS[pooling]


def load(directory: Path) -> tuple[MultiTaskModel, Any, dict]:
    """The module (eval mode), tokenizer and metadata of a folder written by :func:`save`
    (no network, no pickle)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    meta, module = _checked_meta(directory)
    config = AutoConfig.from_pretrained(str(directory))
    encoder = AutoModel.from_config(config, add_pooling_layer=False)
    model = module(encoder, config.hidden_size)
    state = load_file(str(directory / "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return model, tokenizer, meta


def load_for_scoring(directory: Path) -> tuple[nn.Module, Any, dict]:
    """The module (eval mode), tokenizer and metadata of a folder, for scoring only: the
    encoder is :mod:`.encoder`'s and the tokenizer the ``tokenizers`` library's, so neither
    imports ``transformers`` (a route loads in 0.24 s instead of 2.7-2.9 s, and about 100 MB
    smaller; see that module). Training, the ONNX export and the naive benchmark use
    :func:`load`."""
    from pipeline.models.transformer.encoder import DERIVED_BUFFERS, Encoder
    from pipeline.models.transformer.tokenizer import FastTokenizer

    meta, module = _checked_meta(directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    state = {k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()
             if not k.endswith(DERIVED_BUFFERS)}
    model = module(Encoder(config), config["hidden_size"])
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return model, FastTokenizer(directory), meta
