"""The multi-task module (torch): a BERT-style encoder, mean pooling, and one linear layer
producing all heads' logits in one forward pass. Imported only where torch runs (training, the
torch backend, the one-time ONNX export)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.transformer.inference import HEADS, split_heads
from pipeline.training.base_model import mean_pool


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
        return split_heads(self.flat(input_ids, attention_mask))


class _Flat(nn.Module):
    """Export wrapper: one output tensor instead of a dict."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.flat(input_ids, attention_mask)
