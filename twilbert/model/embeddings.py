"""Input embeddings: token + learned absolute position + segment, optionally factorised (ALBERT).

Deviations from the original TWilBERT, each with its row in docs/deviations.md:
* The token table has ``vocab_size`` rows; the original's extra row (``vocab_size + 1`` rows for a
  ``vocab_size``-way softmax) was never used (docs/deviations.md#token-table-rows).
* ``factorize_embeddings``: the E -> H projection is a plain ``Linear`` as in ALBERT
  (HF ``AlbertTransformer.embedding_hidden_mapping_in``), not the original's ``Dense(H) + GELU``
  (docs/deviations.md#factorized-projection-linear).
* An embedding LayerNorm (``embedding_layer_norm``, default true) as BERT/ALBERT/RoBERTa; when
  factorised it normalises at width E, before the projection, as ALBERT
  (docs/deviations.md#embedding-layer-norm).
* ``input_dropout`` is element-wise dropout, not ``SpatialDropout1D`` (whole channels across time),
  which every original config left at 0.0 (docs/deviations.md#input-dropout-elementwise).
"""

from __future__ import annotations

import torch
from torch import nn

from twilbert.model.config import ModelConfig


class Embeddings(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        E, H = config.embedding_size, config.hidden_size
        self.token = nn.Embedding(config.vocab_size, E)
        self.position = nn.Embedding(config.max_positions, E)
        self.segment = nn.Embedding(2, E)  # segment A (0) and B (1)
        self.norm = nn.LayerNorm(E, eps=config.layer_norm_eps) if config.embedding_layer_norm else None
        self.dropout = nn.Dropout(config.input_dropout)
        self.project = nn.Linear(E, H) if config.factorize_embeddings else None

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) long
        token_type_ids: torch.Tensor | None = None,  # (B, T) long in {0, 1}; None -> all segment A
        position_ids: torch.Tensor | None = None,  # (B, T) or (T,) long; None -> 0..T-1
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.position.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds the position table (max_positions={self.position.num_embeddings})")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)  # (T,), broadcast over the batch
        x = self.token(input_ids) + self.position(position_ids)  # (B, T, E)
        if token_type_ids is not None:
            x = x + self.segment(token_type_ids)  # (B, T, E)
        else:
            x = x + self.segment.weight[0]  # (B, T, E): every token in segment A
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        if self.project is not None:
            x = self.project(x)  # (B, T, H)
        return x
