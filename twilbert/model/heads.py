"""Pre-training heads: masked-LM (computed at target positions only) and Reply Order Prediction.

Deviations from the original TWilBERT (inventory §6.4), each deliberate:
* The MLM head projects only the ~15% target positions to the vocabulary (the original applied its
  ``Dense(H -> V)`` softmax at every position and masked the loss afterwards): with V = 30k this is
  the single biggest matmul of a small model.
* Optional BERT transform (``mlm_transform``: Linear -> GELU -> LayerNorm) and optional decoder tying
  (``tie_mlm_decoder``); the original had neither (set both false to reproduce it).
* Heads are initialised like the rest of the model, truncated normal(0, ``initializer_range``). The
  original passed ``init_range`` as the *mean* (TruncatedNormal(mean=0.02, stddev=0.05), bug §13.3).
* The heads return logits; softmax lives in the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from twilbert.model.config import ModelConfig

IGNORE_INDEX = -100  # MLM label of a position that is not a target (PyTorch's cross_entropy default)


class MLMHead(nn.Module):
    """Hidden states at the targets -> [transform] -> [H -> E] -> vocabulary logits.

    When the decoder is tied and the embeddings are factorised, the decoder input must be E-wide: the
    transform (if any) maps H -> E (as ALBERT's ``AlbertMLMHead``), otherwise a plain Linear(H -> E) does.
    A tied decoder owns only its bias; its weight is the token table, passed in at call time so the
    ``state_dict`` holds no aliased tensors.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        H, E, V = config.hidden_size, config.embedding_size, config.vocab_size
        self.tied = config.tie_mlm_decoder
        width = E if (self.tied and config.factorize_embeddings) else H  # decoder input width
        if config.mlm_transform:
            self.transform = nn.Sequential(nn.Linear(H, width), nn.GELU(), nn.LayerNorm(width, eps=config.layer_norm_eps))
        elif width != H:
            self.transform = nn.Linear(H, width)
        else:
            self.transform = nn.Identity()
        self.decoder = None if self.tied else nn.Linear(width, V, bias=False)
        self.bias = nn.Parameter(torch.zeros(V))

    def forward(
        self,
        hidden: torch.Tensor,  # (B, T, H)
        labels: torch.Tensor,  # (B, T) long, IGNORE_INDEX = not a target
        token_table: torch.Tensor | None = None,  # (V, E or H): the tied decoder weight
    ) -> tuple[torch.Tensor, torch.Tensor]:
        is_target = labels != IGNORE_INDEX  # (B, T)
        h = hidden[is_target]  # (N, H), row-major order of the targets
        targets = labels[is_target]  # (N,)
        h = self.transform(h)  # (N, width)
        weight = token_table if self.tied else self.decoder.weight  # (V, width)
        return F.linear(h, weight, self.bias), targets  # (N, V), (N,)


class ROPHead(nn.Module):
    """[CLS] state -> n_hidden x (Linear -> GELU -> LayerNorm) -> Linear(2). No pooler/tanh (as the original)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = config.hidden_size
        for _ in range(config.rop.n_hidden):
            layers += [
                nn.Linear(width, config.rop.hidden_size),
                nn.GELU(),
                nn.LayerNorm(config.rop.hidden_size, eps=config.layer_norm_eps),
            ]
            width = config.rop.hidden_size
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, 2)
        return self.classifier(self.hidden(hidden[:, 0]))  # position 0 is [CLS]
