"""TWilBERT: embeddings -> encoder -> MLM and ROP heads, plus size / FLOPs / MFU utilities.

The model reads top-down: :mod:`embeddings`, :mod:`attention`, :mod:`pkm`, :mod:`encoder`,
:mod:`heads`. The attention backend is an implementation knob (``impl.attention``), not part of the
recipe: the same config and weights give the same function under ``sdpa`` or ``eager``.

Padding: ``attention_mask`` (B, T) bool, True = real token. Padded keys are never attended and padded
tokens never enter PKM batch-norm statistics, so real-token outputs do not depend on padding (the
original attended to padding everywhere: docs/deviations.md#attention-mask). Pass ``None`` when a batch
has no padding: SDPA can then use its fastest (mask-free) kernels. A row with no real token at all
comes out finite (its attention output is zero under both backends), so an empty sample cannot poison
a batch with NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from twilbert.config import ConfigError
from twilbert.model.config import ModelConfig
from twilbert.model.embeddings import Embeddings
from twilbert.model.encoder import Encoder
from twilbert.model.heads import MLMHead, ROPHead
from twilbert.model.pkm import ProductKeyMemory


@dataclass
class PretrainOutput:
    hidden: torch.Tensor  # (B, T, H) final hidden states
    mlm_logits: torch.Tensor | None  # (N, V) at the N targets, row-major order; None without labels
    mlm_targets: torch.Tensor | None  # (N,) the target ids; (K,) with -100 filler rows when mlm_slots=K
    rop_logits: torch.Tensor | None  # (B, 2); None when rop.use_rop is false


class TWilBERT(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "sdpa"):
        super().__init__()
        if config.vocab_size is None or config.max_positions is None:
            raise ConfigError(
                "model.vocab_size / model.max_positions: the config is not resolved (got "
                f"vocab_size={config.vocab_size}, max_positions={config.max_positions}); call "
                "ModelConfig.resolved(vocab_size=..., max_len=...) before building a model"
            )
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config, attention=attention)
        self.mlm_head = MLMHead(config)
        self.rop_head = ROPHead(config) if config.rop.use_rop else None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Truncated normal(0, initializer_range) cut at +-2 std for every Linear/Embedding weight, heads
        included (TF's TruncatedNormal(0, 0.02) as the original encoder, not the mean-0.02 init of its
        heads: docs/deviations.md#head-init). Biases 0, norms (1, 0), PKM keys uniform as XLM."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding, nn.EmbeddingBag)):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ProductKeyMemory):
            module.reset_keys()
        elif isinstance(module, MLMHead):
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ forward

    def encode(
        self,
        input_ids: torch.Tensor,  # (B, T) long
        token_type_ids: torch.Tensor | None = None,  # (B, T) long; None -> segment A
        attention_mask: torch.Tensor | None = None,  # (B, T) bool, True = real token; None -> no padding
        position_ids: torch.Tensor | None = None,  # (B, T) or (T,) long; None -> 0..T-1
        *,
        first_only: bool = False,  # only the first ([CLS]) position's final state: (B, 1, H), cheaper
    ) -> torch.Tensor:
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            raise TypeError(f"attention_mask must be bool (True = real token), got {attention_mask.dtype}")
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        return self.encoder(x, attention_mask, first_only=first_only)  # (B, T, H), or (B, 1, H)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) long
        token_type_ids: torch.Tensor | None = None,  # (B, T) long
        attention_mask: torch.Tensor | None = None,  # (B, T) bool
        mlm_labels: torch.Tensor | None = None,  # (B, T) long, -100 = not a target
        position_ids: torch.Tensor | None = None,
        *,
        mlm_slots: int | None = None,  # static shapes: K target rows (masked_lm.target_slots(B*T))
    ) -> PretrainOutput:
        """``mlm_slots=None`` returns the MLM logits at the N targets; ``mlm_slots=K`` returns K rows,
        fillers marked -100 in ``mlm_targets`` (see :meth:`MLMHead.forward`): count real targets as
        ``mlm_targets != -100``, not ``numel()``."""
        hidden = self.encode(input_ids, token_type_ids, attention_mask, position_ids)  # (B, T, H)
        mlm_logits = mlm_targets = None
        if mlm_labels is not None:
            table = self.embeddings.token.weight if self.mlm_head.tied else None  # (V, E)
            mlm_logits, mlm_targets = self.mlm_head(hidden, mlm_labels, table, slots=mlm_slots)  # (N or K, V), (N or K,)
        rop_logits = self.rop_head(hidden) if self.rop_head is not None else None  # (B, 2)
        return PretrainOutput(hidden=hidden, mlm_logits=mlm_logits, mlm_targets=mlm_targets, rop_logits=rop_logits)

    # ------------------------------------------------------------------ size, FLOPs, MFU

    def _embedding_tables(self) -> list[nn.Parameter]:
        e = self.embeddings
        return [e.token.weight, e.position.weight, e.segment.weight]

    def _parameter_uses(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every parameter once per *use*: a shared block once per layer, a tied table twice."""
        yield from self.embeddings.named_parameters(prefix="embeddings")
        for layer, b in enumerate(self.encoder.layer_plan):
            yield from self.encoder.blocks[b].named_parameters(prefix=f"encoder.layer{layer}")
        if self.encoder.final_norm is not None:
            yield from self.encoder.final_norm.named_parameters(prefix="encoder.final_norm")
        yield from self.mlm_head.named_parameters(prefix="mlm_head")
        if self.mlm_head.tied:
            yield "mlm_head.decoder.weight(tied)", self.embeddings.token.weight
        if self.rop_head is not None:
            yield from self.rop_head.named_parameters(prefix="rop_head")

    def num_parameters(self, unique: bool = True, non_embedding: bool = False) -> int:
        """Parameter count. ``unique=False`` counts a shared block once per layer (and a tied decoder
        twice): the size of the equivalent unshared model. ``non_embedding`` drops the token, position
        and segment tables, but a tied token table still counts as the decoder (nanoGPT's convention)."""
        uses = list(self._parameter_uses())
        if unique:
            seen: dict[int, nn.Parameter] = {}
            for _, p in uses:
                seen.setdefault(id(p), p)
            params = list(seen.values())
            if non_embedding:
                tables = self._embedding_tables()
                if self.mlm_head.tied:  # the token table is also the decoder: it stays (nanoGPT's convention)
                    tables = tables[1:]
                tables = {id(p) for p in tables}
                params = [p for p in params if id(p) not in tables]
            return sum(p.numel() for p in params)
        if non_embedding:
            tables = {f"embeddings.{n}.weight" for n in ("token", "position", "segment")}
            uses = [(n, p) for n, p in uses if n not in tables]
        return sum(p.numel() for _, p in uses)

    def estimate_flops_per_token(self, seq_len: int, mlm_fraction: float | None = None) -> float:
        """Training FLOPs per token (forward + backward), nanoGPT/PaLM style: ``6 N + 12 L (A d_k) T``.

        ``N`` counts the dense parameters a token passes through, per use (a shared block counts once
        per layer). Adjustments for this model, all small and explicit:
        * embedding tables are lookups (no FLOPs) and are excluded, as in nanoGPT;
        * PKM key and value tables are excluded too; their real cost (sub-key scoring and the sparse
          value read, :meth:`ProductKeyMemory.flops_per_token`) is added, times 3 for fwd + bwd;
        * the MLM head runs only at targets: its parameters are weighted by ``mlm_fraction``
          (default ``masked_lm.budget``); the ROP head runs once per sequence: weighted by ``1/T``;
        * the attention term uses the attention width ``A * d_k`` (which may differ from H).
        """
        cfg = self.config
        frac = cfg.masked_lm.budget if mlm_fraction is None else mlm_fraction
        n_dense = sum(p.numel() for n, p in self.embeddings.named_parameters() if n.startswith(("norm", "project")))
        pkm_fwd = 0
        for b in self.encoder.layer_plan:
            block = self.encoder.blocks[b]
            for name, p in block.named_parameters():
                if name in ("ffn.keys", "ffn.values.weight"):
                    continue
                n_dense += p.numel()
            if isinstance(block.ffn, ProductKeyMemory):
                pkm_fwd += block.ffn.flops_per_token()
        if self.encoder.final_norm is not None:
            n_dense += sum(p.numel() for p in self.encoder.final_norm.parameters())
        n_mlm = sum(p.numel() for p in self.mlm_head.parameters())
        if self.mlm_head.tied:
            n_mlm += self.embeddings.token.weight.numel()
        n_rop = sum(p.numel() for p in self.rop_head.parameters()) if self.rop_head is not None else 0
        n = n_dense + frac * n_mlm + n_rop / seq_len
        attention = 12 * cfg.n_encoders * cfg.n_heads * cfg.head_dim * seq_len
        return 6 * n + 3 * pkm_fwd + attention

    def estimate_mfu(self, tokens_per_s: float, peak_flops: float, seq_len: int) -> float:
        """Model FLOPs utilisation. ``tokens_per_s`` should count the positions the model computed on
        (padding included) at sequence length ``seq_len``; ``peak_flops`` e.g. 989e12 for H100 bf16 dense."""
        return self.estimate_flops_per_token(seq_len) * tokens_per_s / peak_flops

    def pkm_value_parameters(self) -> list[nn.Parameter]:
        """PKM value tables, for a separate optimiser group (XLM trains them with their own Adam, lr 1e-3)."""
        return [m.values.weight for m in self.modules() if isinstance(m, ProductKeyMemory)]
