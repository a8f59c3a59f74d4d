"""A transformer model folder on disk: ``config.json`` (the encoder's), ``model.safetensors``
(encoder and heads), the tokenizer files and ``revsat_model.json`` (heads, input prefix,
calibration temperatures, version). Nothing is unpickled when loading. Needs torch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.models.transformer.inference import HEADS, META_FILE
from pipeline.models.transformer.module import MultiTaskModel


def build_model(base: str | Path, num_layers: int | None = None) -> tuple[MultiTaskModel, object]:
    """A fresh multi-task model on a pretrained base folder (see ``revsat base-model``)."""
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(str(base), add_pooling_layer=False)
    if num_layers is not None and num_layers < encoder.config.num_hidden_layers:
        encoder.encoder.layer = encoder.encoder.layer[:num_layers]
        encoder.config.num_hidden_layers = num_layers
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    return MultiTaskModel(encoder, encoder.config.hidden_size), tokenizer


def student_from(folder: str | Path, keep_layers: Sequence[int]) -> tuple[MultiTaskModel, object]:
    """A smaller model initialised from a trained one: its embeddings, the encoder layers at
    ``keep_layers`` (in order) and its heads. Starting from a fine-tuned model (DistilBERT's
    "one layer in two" initialisation) lets distillation converge in one short run on a CPU.
    """
    model, tokenizer, _ = load_model(Path(folder))
    layers = model.encoder.encoder.layer
    if not keep_layers or any(not 0 <= i < len(layers) for i in keep_layers):
        raise ValueError(f"keep_layers {list(keep_layers)} must index the {len(layers)} layers")
    model.encoder.encoder.layer = nn.ModuleList(layers[i] for i in keep_layers)
    model.encoder.config.num_hidden_layers = len(keep_layers)
    return model, tokenizer


def save_model(model: MultiTaskModel, tokenizer, directory: Path, meta: dict,
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
        json.dumps({"heads": HEADS, **meta}, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return directory


def load_model(directory: Path) -> tuple[MultiTaskModel, object, dict]:
    """Load a model folder written by :func:`save_model` (no network, no pickle)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    if meta.get("heads") != HEADS:
        raise ValueError(f"{directory}: heads {meta.get('heads')} do not match {HEADS}")
    config = AutoConfig.from_pretrained(str(directory))
    encoder = AutoModel.from_config(config, add_pooling_layer=False)
    model = MultiTaskModel(encoder, config.hidden_size)
    state = load_file(str(directory / "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return model, tokenizer, meta
