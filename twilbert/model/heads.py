"""Pre-training heads: masked-LM (computed at target positions only) and Reply Order Prediction.

Deviations from the original TWilBERT, each with its row in docs/deviations.md:
* The MLM head projects only the ~15% target positions to the vocabulary, not every position as the
  original's ``Dense(H -> V)`` softmax: with V = 30k this is the single biggest matmul of a small
  model. With ``masked_lm.static_targets`` it projects a fixed number of target slots per batch shape
  instead (static shapes for ``torch.compile``, Cramming). The heads return logits; softmax lives in
  the loss (docs/deviations.md#mlm-sparse-head).
* Optional BERT transform (``mlm_transform``: Linear -> GELU -> LayerNorm) and optional decoder tying
  (``tie_mlm_decoder``); the original had neither (docs/deviations.md#mlm-transform-and-tying).
* Heads are initialised like the rest of the model, truncated normal(0, ``initializer_range``); the
  original passed ``init_range`` as the *mean* (docs/deviations.md#head-init).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from twilbert.model.config import ModelConfig
from twilbert.tokens import IGNORE_INDEX


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
        slots: int | None = None,  # fixed number of target rows K (static shapes), or None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and target ids at the targets, in row-major order.

        ``slots=None``: exactly the N targets, ``(N, V), (N,)`` (a boolean gather: data-dependent
        shape, one host sync). ``slots=K``: ``(K, V), (K,)``, the N real targets first, then ``K - N``
        filler rows whose target is ``IGNORE_INDEX`` (the cross-entropy ignores them). The gather index
        comes from a stable sort, so the shapes depend on ``labels.shape`` and K only: nothing
        data-dependent for ``torch.compile`` and no sync (Cramming's sparse prediction). Real targets
        past the K-th would be dropped; ``masking`` caps them at ``masked_lm.target_slots(B * T)``.
        """
        if slots is None:
            is_target = labels != IGNORE_INDEX  # (B, T)
            h = hidden[is_target]  # (N, H), row-major order of the targets
            targets = labels[is_target]  # (N,)
        else:
            flat = labels.reshape(-1)  # (BT,)
            if not 0 <= slots <= flat.numel():
                raise ValueError(f"slots must be in [0, B*T={flat.numel()}], got {slots}")
            is_filler = (flat == IGNORE_INDEX).to(torch.uint8)  # (BT,) 0 = target, sorts first
            index = torch.sort(is_filler, stable=True).indices[:slots]  # (K,) targets in row-major order, then fillers
            h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)  # (K, H)
            targets = flat.index_select(0, index)  # (K,) IGNORE_INDEX on filler rows
        h = self.transform(h)  # (N or K, width)
        weight = token_table if self.tied else self.decoder.weight  # (V, width)
        return F.linear(h, weight, self.bias), targets  # (N or K, V), (N or K,)


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
