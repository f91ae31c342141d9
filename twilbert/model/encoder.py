"""Transformer encoder: blocks of attention + FFN (or a product-key memory), post-LN or pre-LN.

Post-LN (``norm: post``) is the original TWilBERT / BERT block::

    h = LN1(x + Drop(MHA(x)));   out = LN2(h + Drop(FFN(h)))

Pre-LN (``norm: pre``) normalises the branch inputs instead and adds one final LayerNorm; it trains
more stably in deep stacks or at high learning rates (Xiong et al. 2020; Cramming uses it).

Cross-layer sharing (``cross_sharing``) is ALBERT's "all-shared": one block's weights serve every
non-PKM layer; PKM layers always have their own block, as in the original. The unique blocks are
stored once in ``blocks`` and ``layer_plan[i]`` says which block layer ``i`` runs, so the
``state_dict`` holds no aliased tensors (safetensors refuses those).

Deviations from the original TWilBERT:
* exact (erf) GELU in the FFN; the original used the tanh approximation. They differ by < 1e-3
  (docs/deviations.md#gelu-exact).
* dropout is only active in training; the original's ``K.dropout`` stayed on at inference
  (docs/deviations.md#dropout-off-at-eval).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from twilbert.model.attention import SelfAttention
from twilbert.model.config import ModelConfig
from twilbert.model.pkm import ProductKeyMemory


class FeedForward(nn.Module):
    """Linear(H -> 4H) -> GELU -> Linear(4H -> H). The width 4H is fixed, as in the original."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.fc_in = nn.Linear(hidden_size, 4 * hidden_size)
        self.fc_out = nn.Linear(4 * hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))  # (B, T, H); the mask is unused (token-wise op)


class EncoderBlock(nn.Module):
    def __init__(self, config: ModelConfig, *, use_pkm: bool = False, attention: str = "sdpa"):
        super().__init__()
        H = config.hidden_size
        self.pre_norm = config.norm == "pre"
        self.attn = SelfAttention(
            H,
            config.n_heads,
            config.head_dim,
            bias=config.attention_bias,
            dropout=config.attention_dropout,
            backend=attention,
        )
        self.norm1 = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.output_dropout)
        if use_pkm:
            p = config.pkm_params
            value_size = (p.value_size or config.embedding_size) if p.factorize_embeddings else H
            self.ffn: nn.Module = ProductKeyMemory(H, p, value_size)
        else:
            self.ffn = FeedForward(H)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, H)
        key_mask: torch.Tensor | None,  # (B, 1, 1, T) bool, for attention
        attention_mask: torch.Tensor | None,  # (B, T) bool, for PKM batch-norm statistics
        *,
        first_only: bool = False,  # compute only position 0's output: (B, 1, H)
    ) -> torch.Tensor:
        # first_only: every token still serves as a key/value; the residual, norms and FFN run on row 0.
        res = x[:, :1] if first_only else x  # (B, Tq, H), Tq = 1 or T
        mask = attention_mask[:, :1] if first_only and attention_mask is not None else attention_mask  # (B, Tq)
        if self.pre_norm:
            x = res + self.dropout(self.attn(self.norm1(x), key_mask, first_only=first_only))  # (B, Tq, H)
            x = x + self.dropout(self.ffn(self.norm2(x), mask))  # (B, Tq, H)
        else:
            x = self.norm1(res + self.dropout(self.attn(x, key_mask, first_only=first_only)))  # (B, Tq, H)
            x = self.norm2(x + self.dropout(self.ffn(x, mask)))  # (B, Tq, H)
        return x


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "sdpa"):
        super().__init__()
        pkm_layers = config.pkm_layers
        blocks: list[EncoderBlock] = []
        plan: list[int] = []
        shared: int | None = None  # index in ``blocks`` of the block shared by non-PKM layers
        for i in range(config.n_encoders):
            if i in pkm_layers:  # memory layers are never shared
                blocks.append(EncoderBlock(config, use_pkm=True, attention=attention))
                plan.append(len(blocks) - 1)
            elif config.cross_sharing and shared is not None:
                plan.append(shared)
            else:
                blocks.append(EncoderBlock(config, attention=attention))
                plan.append(len(blocks) - 1)
                if config.cross_sharing:
                    shared = plan[-1]
        self.blocks = nn.ModuleList(blocks)
        self.layer_plan: tuple[int, ...] = tuple(plan)  # layer i runs blocks[layer_plan[i]]
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm == "pre" else None

    def forward(
        self,
        x: torch.Tensor,  # (B, T, H)
        attention_mask: torch.Tensor | None = None,  # (B, T) bool, True = real token
        *,
        first_only: bool = False,
    ) -> torch.Tensor:
        """(B, T, H); with ``first_only``, (B, 1, H): the same first row, at less cost.

        Why ``first_only``: a [CLS] classifier reads one position of the last layer, so there that
        layer needs its keys and values for every token but its query, output projection, residual,
        norms and FFN for position 0 only -- for TWilBERT-Base (6 layers, FFN 4H, attention H/2) about
        15 % of the encoder's FLOPs at any length. Same function, not an approximation (equal to float
        rounding; tested). Not taken for a PKM last layer in training, whose batch-norm statistics
        are over every real token."""
        key_mask = None if attention_mask is None else attention_mask[:, None, None, :]  # (B, 1, 1, T)
        last = len(self.layer_plan) - 1
        for i, b in enumerate(self.layer_plan):
            block = self.blocks[b]
            if first_only and i == last and not (self.training and isinstance(block.ffn, ProductKeyMemory)):
                x = block(x, key_mask, attention_mask, first_only=True)  # (B, 1, H)
            else:
                x = block(x, key_mask, attention_mask)  # (B, T, H)
        if first_only:
            x = x[:, :1]  # (B, 1, H) (already, unless the PKM exception above ran the full layer)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x
