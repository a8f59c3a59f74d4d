"""The encoder for scoring on torch, without ``transformers``.

Training fine-tunes ``transformers``' ``BertModel``. Scoring on torch (bf16 on CPUs with AMX or
AVX-512 bf16, a GPU, ``backend = "torch"``) needs only its forward pass, and loading it through
``transformers`` took 2.7-2.9 s a process against 0.24 s here, and about 100 MB more: importing
``transformers.modeling_utils`` brings torch.distributed, torch._dynamo, sympy and
scipy.optimize (Intel Xeon with AMX, 2 cores). This module is that forward pass with the same
parameter names, so a saved folder loads as it is, and the same operations in the same order:
under bf16 autocast its token states equal ``BertModel``'s bit for bit, in fp32 within
rounding (``tests/models/test_transformer.py``). torch's own ``TransformerEncoderLayer``
computes the same function, but through its packed attention it scored 16 % slower here.
Two departures keep every number and save time: the scoring backend fuses each layer's query,
key and value layers into one (:meth:`Encoder.fuse`), and the attention mask is broadcast
rather than expanded (README, Performance, 2026-12-08).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

#: Buffers a ``BertModel`` may have saved beside its weights; this encoder derives them.
DERIVED_BUFFERS = ("position_ids", "token_type_ids")


class Embeddings(nn.Module):
    """Word, position (from 0) and token-type-0 embeddings, summed and layer-normed."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden = config["hidden_size"]
        self.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
        self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type_embeddings = nn.Embedding(config.get("type_vocab_size", 2), hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.get("layer_norm_eps", 1e-12))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, hidden)`` for ``input_ids``."""
        zeros = torch.zeros_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        summed = self.word_embeddings(input_ids) + self.token_type_embeddings(zeros)
        return self.LayerNorm(summed + self.position_embeddings(positions))


class _Intermediate(nn.Module):
    def __init__(self, size_in: int, size_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(size_in, size_out)


class _Dense(nn.Module):
    """A linear layer, then the layer norm of its sum with the residual."""

    def __init__(self, size_in: int, size_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(size_in, size_out)
        self.LayerNorm = nn.LayerNorm(size_out, eps=eps)

    def forward(self, states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``LayerNorm(dense(states) + residual)``."""
        return self.LayerNorm(self.dense(states) + residual)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.qkv: nn.Linear | None = None  # set by fuse()

    def fuse(self) -> None:
        """Replace the query, key and value layers by one of three times the width: one
        matrix product instead of three, 25-30 % faster on their share of the step, and in
        bf16 and fp32 the same numbers bit for bit (each output column is the same dot
        product). Scoring only: the three layers' weights leave the state dict."""
        if self.qkv is not None:
            return
        layers = (self.query, self.key, self.value)
        fused = nn.Linear(self.query.in_features, 3 * self.query.out_features,
                          device=self.query.weight.device, dtype=self.query.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([layer.weight for layer in layers]))
            fused.bias.copy_(torch.cat([layer.bias for layer in layers]))
        self.qkv = fused
        del self.query, self.key, self.value

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = states.shape
        size = hidden // self.heads
        if self.qkv is not None:
            q, k, v = (self.qkv(states).view(batch, tokens, 3, self.heads, size)
                       .permute(2, 0, 3, 1, 4).unbind(0))
        else:
            shape = (batch, tokens, self.heads, size)
            q, k, v = (layer(states).view(shape).transpose(1, 2)
                       for layer in (self.query, self.key, self.value))
        out = functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=size**-0.5)
        return out.transpose(1, 2).contiguous().reshape(batch, tokens, hidden)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden, heads)
        self.output = _Dense(hidden, hidden, eps)


class Layer(nn.Module):
    """One post-norm BERT layer: self-attention, then the GELU feed-forward block."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {config['hidden_act']!r}: only gelu is supported")
        self.attention = _Attention(hidden, config["num_attention_heads"], eps)
        self.intermediate = _Intermediate(hidden, config["intermediate_size"])
        self.output = _Dense(config["intermediate_size"], hidden, eps)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The layer's output for ``states``; ``mask`` (batch, 1, 1, tokens) is true
        where a token may attend."""
        attended = self.attention.output(self.attention.self(states, mask), states)
        inner = functional.gelu(self.intermediate.dense(attended))
        return self.output(inner, attended)


class _Layers(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config["num_hidden_layers"]))


class Encoder(nn.Module):
    """BERT's encoder (see the module doc), called like ``BertModel``."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = _Layers(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor]:
        """``(token states,)`` of shape ``(batch, tokens, hidden)``."""
        states = self.embeddings(input_ids)
        # one row of keys per review, broadcast over the queries: the same numbers as the
        # (tokens x tokens) mask transformers expands for SDPA, and attention 25-30 % faster
        mask = attention_mask.bool()[:, None, None, :]
        for layer in self.encoder.layer:
            states = layer(states, mask)
        return (states,)

    def fuse(self) -> None:
        """Fuse every layer's query, key and value layers (:meth:`_SelfAttention.fuse`)."""
        for layer in self.encoder.layer:
            layer.attention.self.fuse()
