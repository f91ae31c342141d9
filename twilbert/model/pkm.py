"""Product-Key Memory (Lample et al. 2019), a drop-in replacement for the FFN of chosen layers.

Follows facebookresearch/XLM ``xlm/model/memory/memory.py``, which the original TWilBERT adapted:

1. a query network ``Linear(H -> n_heads * k_dim)``, optionally batch-normalised;
2. per head, two sets of ``memory_size`` sub-keys of width ``k_dim / 2``; each query half is scored
   against its set and the top ``knn`` kept;
3. the ``knn x knn`` cartesian candidates are scored ``s1[i] + s2[j]`` and the top ``knn`` kept. This
   is exactly the top-``knn`` over all ``memory_size**2`` slots (a pair in the global top-k must have
   both halves in their own top-k), without ever scoring all of them;
4. softmax over the kept scores, then a sparse weighted sum of value rows with ``embedding_bag``
   (all heads' ``knn`` rows summed in one bag, which is "heads summed").

Deviations, each with its row in docs/deviations.md:
* ``batch_norm: true`` means BatchNorm on, as a registered module; the original inverted the flag and
  built the BN inside ``call()``, untracked (docs/deviations.md#pkm-batch-norm).
* BatchNorm statistics over real tokens only (:class:`MaskedBatchNorm1d`): XLM warns that padding
  corrupts them (docs/deviations.md#pkm-bn-real-tokens).
* ``output_dropout`` on the output only, not also on the query (docs/deviations.md#pkm-output-dropout).
* ``factorize_embeddings`` factorises the value table (``memory_size**2 x value_size`` then
  ``Linear(value_size -> H)``); the original ignored the flag (docs/deviations.md#pkm-factorize).
* Values truncated normal(0, ``initializer_range``) as the original, not XLM's ``normal(0, v_dim **
  -0.5)``; keys uniform(+-1/sqrt(k_dim/2)) as XLM (docs/deviations.md#pkm-value-init).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from twilbert.model.config import PKMConfig


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the rows selected by a mask; unselected rows neither count nor get normalised
    with their own statistics (they are normalised with the real rows' statistics and ignored later).

    Equivalent to ``nn.BatchNorm1d`` applied to ``x[mask]`` (same output rows, same running-stat
    update) but without boolean indexing, so it needs no host sync and keeps static shapes.
    Eval mode (or ``mask=None``) is plain ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # (N, C), (N,)
        if mask is None or not self.training:
            return super().forward(x)
        xf = x.float()
        m = mask.unsqueeze(-1)  # (N, 1)
        n = m.sum().to(xf.dtype)  # real rows (a 0-d tensor: no sync)
        # torch.where, not a product with the mask: padded rows may hold anything, even inf/NaN
        mean = torch.where(m, xf, 0.0).sum(0) / n.clamp_min(1.0)  # (C,)
        var = torch.where(m, xf - mean, 0.0).square().sum(0) / n.clamp_min(1.0)  # (C,) biased, to normalise
        if self.track_running_stats:
            with torch.no_grad():
                unbiased = var * n / (n - 1.0).clamp_min(1.0)  # what nn.BatchNorm1d stores
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
                self.num_batches_tracked.add_(1)
        y = (xf - mean) * torch.rsqrt(var + self.eps)  # (N, C)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(x.dtype)


class ProductKeyMemory(nn.Module):
    def __init__(self, hidden_size: int, config: PKMConfig, value_size: int):
        super().__init__()
        self.n_heads, self.k_dim, self.knn = config.n_heads, config.k_dim, config.knn
        self.memory_size = config.memory_size
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.output_dropout = nn.Dropout(config.output_dropout)
        self.query = nn.Linear(hidden_size, self.n_heads * self.k_dim)  # H -> heads * k_dim
        self.query_norm = MaskedBatchNorm1d(self.n_heads * self.k_dim) if config.batch_norm else None
        # (heads, 2 halves, memory_size, k_dim / 2)
        self.keys = nn.Parameter(torch.empty(self.n_heads, 2, self.memory_size, self.k_dim // 2))
        self.values = nn.EmbeddingBag(self.memory_size**2, value_size, mode="sum")  # shared by all heads
        self.value_proj = nn.Linear(value_size, hidden_size) if config.factorize_embeddings else None
        self.reset_keys()

    def reset_keys(self) -> None:
        """Uniform(+-1/sqrt(k_dim/2)), XLM's ``get_uniform_keys`` (the same bound as ``nn.Linear``)."""
        bound = 1.0 / math.sqrt(self.k_dim // 2)
        nn.init.uniform_(self.keys, -bound, bound)

    def get_indices(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``knn`` slots per head: ``q`` (N, heads, k_dim) -> scores, indices (N, heads, knn)."""
        half = self.k_dim // 2
        q1, q2 = q[..., :half], q[..., half:]  # 2 x (N, heads, k/2)
        s1 = torch.einsum("nhd,hmd->nhm", q1, self.keys[:, 0])  # (N, heads, M)
        s2 = torch.einsum("nhd,hmd->nhm", q2, self.keys[:, 1])  # (N, heads, M)
        s1, i1 = s1.topk(self.knn, dim=-1)  # (N, heads, knn)
        s2, i2 = s2.topk(self.knn, dim=-1)  # (N, heads, knn)
        cand_s = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)  # (N, heads, knn*knn)
        cand_i = (i1.unsqueeze(-1) * self.memory_size + i2.unsqueeze(-2)).flatten(-2)  # (N, heads, knn*knn)
        scores, best = cand_s.topk(self.knn, dim=-1)  # (N, heads, knn)
        return scores, cand_i.gather(-1, best)  # (N, heads, knn) x 2

    def forward(
        self,
        x: torch.Tensor,  # (B, T, H)
        attention_mask: torch.Tensor | None = None,  # (B, T) bool, True = real token (for BN statistics)
    ) -> torch.Tensor:
        B, T, H = x.shape
        x = self.input_dropout(x)
        q = self.query(x).view(B * T, self.n_heads * self.k_dim)  # (BT, heads*k)
        if self.query_norm is not None:
            q = self.query_norm(q, None if attention_mask is None else attention_mask.reshape(B * T))
        q = q.view(B * T, self.n_heads, self.k_dim)  # (BT, heads, k)
        scores, indices = self.get_indices(q)  # (BT, heads, knn) x 2
        weights = torch.softmax(scores.float(), dim=-1).to(self.values.weight.dtype)  # (BT, heads, knn)
        out = F.embedding_bag(  # sparse: reads heads*knn rows per token, never all memory_size**2
            indices.view(B * T, -1), self.values.weight, per_sample_weights=weights.view(B * T, -1), mode="sum"
        )  # (BT, V)
        if self.value_proj is not None:
            out = self.value_proj(out)  # (BT, H)
        return self.output_dropout(out.view(B, T, H))  # (B, T, H)

    def flops_per_token(self) -> int:
        """Forward FLOPs that a parameter count misses: sub-key scoring and the sparse value read."""
        scoring = 2 * self.n_heads * self.memory_size * self.k_dim  # two halves of M x k/2 dot products
        lookup = 2 * self.n_heads * self.knn * self.values.embedding_dim
        return scoring + lookup
