"""Multi-head self-attention with a key padding mask and swappable kernels.

``attention_size`` is d_k *per head* (as the original), so the attention width ``A * d_k`` may differ
from ``H``: Q, K, V map ``H -> A*d_k`` and the output projection maps ``A*d_k -> H``. The released
base model has A=6, d_k=64, H=768, i.e. a 384-wide attention inside a 768-wide model.

Deviations from the original TWilBERT:
* Padded keys are never attended (``attention_mask`` False); the original had no mask, so every token
  attended to the left-padding of both segments (docs/deviations.md#attention-mask).
* Projections carry biases unless ``attention_bias: false``, as BERT; the original had none
  (docs/deviations.md#attention-bias).
* ``attention_dropout`` on the probabilities, 0.0 by default; the original had none
  (docs/deviations.md#attention-dropout).

Backends are a registry rather than flags: the speed-only choice lives in ``impl``, never in the recipe.
``sdpa`` (default) lets PyTorch pick flash / memory-efficient / math kernels; ``eager`` is the
explicit reference ``softmax(Q K^T / sqrt(d_k)) V`` used to test it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# (q, k, v, key_mask, dropout_p) -> out: q (B, A, Tq, d_k), k and v (B, A, T, d_k), out (B, A, Tq, d_k);
# key_mask (B, 1, 1, T) bool, True = attend. Tq is T, or 1 when only the first position is wanted.
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]


def sdpa_attention(q, k, v, key_mask, dropout_p):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)  # (B, A, T, d)


def eager_attention(q, k, v, key_mask, dropout_p):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, A, T, T)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))  # padded keys get zero probability
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, A, T, T)
    if key_mask is not None:
        # a row with no real key at all (an all-padding sequence) gives 0/0 = NaN above; output zeros
        # there instead, which is what SDPA does in current PyTorch
        probs = probs.masked_fill(~key_mask, 0.0)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v  # (B, A, T, d)


ATTENTION_BACKENDS: dict[str, AttentionFn] = {"sdpa": sdpa_attention, "eager": eager_attention}


def get_attention_backend(name: str) -> AttentionFn:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; known: {sorted(ATTENTION_BACKENDS)}")
    return ATTENTION_BACKENDS[name]


class SelfAttention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        n_heads: int,
        head_dim: int,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        backend: str = "sdpa",
    ):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        width = n_heads * head_dim  # A * d_k, may differ from H
        self.qkv = nn.Linear(hidden_size, 3 * width, bias=bias)  # fused Q, K, V: H -> 3 * A * d_k
        self.out = nn.Linear(width, hidden_size, bias=bias)  # A * d_k -> H
        self.dropout = dropout
        self.backend_name = backend
        self.attend = get_attention_backend(backend)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, H)
        key_mask: torch.Tensor | None = None,  # (B, 1, 1, T) bool, True = real key
        *,
        first_only: bool = False,  # only the first position's output (queries from x[:, :1])
    ) -> torch.Tensor:
        """(B, T, H), or (B, 1, H) with ``first_only``: every key and value, but only the first query --
        what a [CLS] classifier needs from the last layer (see :meth:`Encoder.forward`)."""
        B, T, _ = x.shape
        A, d = self.n_heads, self.head_dim
        if first_only and isinstance(self.qkv, nn.Linear):
            w, b = self.qkv.weight, self.qkv.bias  # (3*A*d, H), (3*A*d,): rows are Q | K | V
            q = F.linear(x[:, :1], w[: A * d], None if b is None else b[: A * d])  # (B, 1, A*d)
            k, v = F.linear(x, w[A * d :], None if b is None else b[A * d :]).split(A * d, dim=-1)  # 2 x (B, T, A*d)
        else:
            q, k, v = self.qkv(x).split(A * d, dim=-1)  # 3 x (B, T, A*d)
            if first_only:  # an int8 qkv (twilbert/quantize.py) has no weight rows to slice: keep query 0
                q = q[:, :1]  # (B, 1, A*d)
        Tq = q.shape[1]  # T, or 1 with first_only
        q = q.view(B, Tq, A, d).transpose(1, 2)  # (B, A, Tq, d)
        k, v = (t.view(B, T, A, d).transpose(1, 2) for t in (k, v))  # 2 x (B, A, T, d)
        y = self.attend(q, k, v, key_mask, self.dropout if self.training else 0.0)  # (B, A, Tq, d)
        y = y.transpose(1, 2).reshape(B, Tq, A * d)  # (B, Tq, A*d)
        return self.out(y)  # (B, Tq, H)
