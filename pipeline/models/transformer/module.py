"""The multi-task modules: a BERT-style encoder and heads producing every head's logits
(overall sentiment: 3 classes; each dimension: 4) in one forward pass.

Two poolings (``revsat_model.json`` says which, under ``pooling``):

``mean``
    :class:`MultiTaskModel`: one mean-pooled vector feeds every head. The dimension heads see
    the review's overall tone, and on mixed reviews they mostly copy it.
``attention``
    :class:`AttentionPoolModel`: each dimension has a learned query that attends over the
    token states, so the logistics head reads the words about the courier and the quality head
    the words about the product; sentiment keeps the mean-pooled vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.catalog import DIMENSIONS
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
        return self.pool_heads(hidden, attention_mask)

    def pool_heads(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The heads' logits from the encoder's token states (see :meth:`flat`)."""
        return self.head(self.dropout(mean_pool(hidden, attention_mask)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """Logits per head (see :data:`pipeline.models.heads.HEADS`)."""
        return split_heads(self.flat(input_ids, attention_mask))


class AttentionPoolModel(nn.Module):
    """Encoder + per-dimension attention pooling (a learned query per dimension head).

    Sentiment: a linear layer on the mean-pooled vector. Each dimension: a linear layer on
    ``[mean-pooled; attention-pooled with that dimension's query]``. :meth:`from_mean` starts it
    from a trained :class:`MultiTaskModel` so that, before any training, it predicts exactly what
    that model predicts (the attention half of each dimension layer starts at zero).
    """

    def __init__(self, encoder: nn.Module, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.sentiment = nn.Linear(hidden, HEADS["sentiment"])
        self.queries = nn.Parameter(torch.randn(len(DIMENSIONS), hidden) * 0.02)
        self.dimensions = nn.ModuleList(nn.Linear(2 * hidden, HEADS[d]) for d in DIMENSIONS)

    @classmethod
    def from_mean(cls, model: MultiTaskModel) -> AttentionPoolModel:
        """An attention-pooling model with ``model``'s encoder and heads (see class doc)."""
        hidden = model.head.in_features
        new = cls(model.encoder, hidden)
        weight, bias = model.head.weight.data, model.head.bias.data
        with torch.no_grad():
            new.sentiment.weight.copy_(weight[: HEADS["sentiment"]])
            new.sentiment.bias.copy_(bias[: HEADS["sentiment"]])
            start = HEADS["sentiment"]
            for dim, layer in zip(DIMENSIONS, new.dimensions, strict=True):
                size = HEADS[dim]
                layer.weight.zero_()
                layer.weight[:, :hidden].copy_(weight[start : start + size])
                layer.bias.copy_(bias[start : start + size])
                start += size
        return new

    def flat(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """All heads' logits side by side, ``(batch, sum(HEADS))``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        return self.pool_heads(hidden, attention_mask)

    def pool_heads(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The heads' logits from the encoder's token states (see :meth:`flat`)."""
        mean = mean_pool(hidden, attention_mask)
        scores = torch.einsum("bth,dh->bdt", hidden, self.queries) / hidden.shape[-1] ** 0.5
        scores = scores.masked_fill(attention_mask[:, None, :] == 0, -1e4)
        weights = torch.softmax(scores.float(), dim=-1).to(hidden.dtype)
        pooled = self.dropout(torch.einsum("bdt,bth->bdh", weights, hidden))
        mean = self.dropout(mean)
        logits = [self.sentiment(mean)]
        logits += [layer(torch.cat([mean, pooled[:, j]], dim=-1))
                   for j, layer in enumerate(self.dimensions)]
        return torch.cat(logits, dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """Logits per head (see :data:`pipeline.models.heads.HEADS`)."""
        return split_heads(self.flat(input_ids, attention_mask))


#: ``pooling`` in ``revsat_model.json`` -> the module class.
POOLINGS: dict[str, type[nn.Module]] = {"mean": MultiTaskModel, "attention": AttentionPoolModel}


def pooling_of(model: nn.Module) -> str:
    """The ``pooling`` name of a module (the key of :data:`POOLINGS`)."""
    for name, cls in POOLINGS.items():
        if type(model) is cls:
            return name
    raise TypeError(f"not a revsat module: {type(model).__name__}")
