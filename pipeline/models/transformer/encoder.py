"""The encoder for scoring on torch, from torch's own transformer layers.

Training fine-tunes ``transformers``' ``BertModel``, and the weights are saved in its names.
Scoring on torch (bf16 on CPUs with AMX or AVX-512 bf16, a GPU, ``backend = "torch"``) needs
only the forward pass, and importing ``transformers.modeling_utils`` for it took 1.2-1.3 s and
about 100 MB (torch.distributed, torch._dynamo, sympy and scipy.optimize come with it; Intel
Xeon with AMX, 2 cores). A BERT layer is exactly torch's post-norm
:class:`torch.nn.TransformerEncoderLayer` with GELU, so :func:`from_bert` builds the same
network from the saved weights: embeddings (word + position + token type 0, layer norm), then
the layers, reading ``(input_ids, attention_mask)`` and returning ``(token states,)`` as
``BertModel`` does. Tested against ``BertModel`` on the same weights
(``tests/models/test_transformer.py``).
"""

from __future__ import annotations

import torch
from torch import nn


class BertEmbeddings(nn.Module):
    """Word, position and token-type-0 embeddings, summed and layer-normed."""

    def __init__(self, vocab: int, hidden: int, positions: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, hidden)`` for ``input_ids``; BERT numbers positions from 0."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        summed = (self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
                  + self.position_embeddings(positions))
        return self.LayerNorm(summed)


class Encoder(nn.Module):
    """BERT's encoder as :class:`torch.nn.TransformerEncoderLayer` s (see the module doc)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {config['hidden_act']!r}: only gelu is supported")
        self.embeddings = BertEmbeddings(config["vocab_size"], hidden,
                                         config["max_position_embeddings"],
                                         config.get("type_vocab_size", 2), eps)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden, config["num_attention_heads"],
                                       config["intermediate_size"], dropout=0.0,
                                       activation="gelu", layer_norm_eps=eps,
                                       batch_first=True, norm_first=False)
            for _ in range(config["num_hidden_layers"]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor]:
        """``(token states,)`` of shape ``(batch, tokens, hidden)``; padded positions hold
        whatever the layers leave there (the poolings mask them)."""
        states = self.embeddings(input_ids)
        padding = attention_mask == 0
        for layer in self.layers:
            states = layer(states, src_key_padding_mask=padding)
        return (states,)


def from_bert(config: dict, state: dict[str, torch.Tensor], prefix: str = "encoder."
              ) -> tuple[Encoder, dict[str, torch.Tensor]]:
    """An :class:`Encoder` holding the ``BertModel`` weights under ``prefix`` in ``state``
    (``config``: the folder's ``config.json``), and the rest of ``state`` (the heads)."""
    # built on the CPU: on the meta device, torch's first use imports its reference ops (1.4 s)
    encoder = Encoder(config)
    own: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        (own if key.startswith(prefix) else rest)[key] = value
    mapped = {f"embeddings.{name}": own.pop(f"{prefix}embeddings.{name}")
              for name in ("word_embeddings.weight", "position_embeddings.weight",
                           "token_type_embeddings.weight", "LayerNorm.weight",
                           "LayerNorm.bias")}
    for i in range(config["num_hidden_layers"]):
        old, new = f"{prefix}encoder.layer.{i}.", f"layers.{i}."
        for part in ("weight", "bias"):
            mapped[f"{new}self_attn.in_proj_{part}"] = torch.cat(
                [own.pop(f"{old}attention.self.{p}.{part}") for p in ("query", "key", "value")])
            pairs = {"self_attn.out_proj": "attention.output.dense",
                     "norm1": "attention.output.LayerNorm", "linear1": "intermediate.dense",
                     "linear2": "output.dense", "norm2": "output.LayerNorm"}
            for ours, theirs in pairs.items():
                mapped[f"{new}{ours}.{part}"] = own.pop(f"{old}{theirs}.{part}")
    own = {k: v for k, v in own.items() if not k.endswith(("position_ids", "token_type_ids"))}
    if own:
        raise ValueError(f"encoder weights not understood: {sorted(own)[:5]}")
    encoder.load_state_dict(mapped, strict=True, assign=True)
    return encoder, rest
