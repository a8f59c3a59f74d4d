"""The multi-task module: a BERT-style encoder, mean pooling, and one linear layer producing
every head's logits (overall sentiment: 3 classes; each dimension: 4) in one forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.models.heads import HEADS, split_heads


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over the attention mask (e5's pooling; specials included)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def keep_layers(encoder: nn.Module, indices: Sequence[int]) -> nn.Module:
    """Keep only the encoder layers at ``indices`` (in that order) of a BERT-style encoder, in
    place; its config says the new depth. Returns the encoder."""
    layers = encoder.encoder.layer
    if not indices or any(not 0 <= i < len(layers) for i in indices):
        raise ValueError(f"layers {list(indices)} must index the {len(layers)} layers")
    encoder.encoder.layer = nn.ModuleList(layers[i] for i in indices)
    encoder.config.num_hidden_layers = len(indices)
    return encoder


class MultiTaskModel(nn.Module):
    """Encoder + mean pooling + one linear layer producing all heads' logits."""

    def __init__(self, encoder: nn.Module, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, sum(HEADS.values()))

    def flat(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """All heads' logits side by side, ``(batch, sum(HEADS))``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        return self.head(self.dropout(mean_pool(hidden, attention_mask)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """Logits per head (see :data:`pipeline.models.heads.HEADS`)."""
        return split_heads(self.flat(input_ids, attention_mask))
