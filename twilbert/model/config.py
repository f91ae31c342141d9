"""Model configuration: the ``model:`` section of params.yaml, with the original TWilBERT key names.

Every field here is a *recipe* knob: changing it changes results. Speed-only knobs (attention backend,
precision, compile) live in ``pipeline.params.ImplParams`` and are passed to constructors separately,
as in Cramming's ``impl`` group.

Deviations from the original TWilBERT, each with its row in docs/deviations.md:
* ``pkm_params.in_layers`` indices outside ``range(n_encoders)`` are an error; the original ignored
  them silently, so a typo trained a model without memory (docs/deviations.md#pkm-in-layers-checked).
* ``pkm_params.batch_norm: true`` means batch-norm on the queries; the original inverted the flag
  (docs/deviations.md#pkm-batch-norm).
* ``pkm_params.factorize_embeddings`` factorises the value table (``memory_size² x value_size`` then
  ``value_size -> H``); the original stored the flag and never used it (docs/deviations.md#pkm-factorize).
* ``masked_lm.type: word`` exists, as the original's README promised (docs/deviations.md#masking-types).
* ``embedding_layer_norm`` defaults to **true**, as BERT, ALBERT and RoBERTa: without it post-LN
  training of deep stacks is less stable. False reproduces the original
  (docs/deviations.md#embedding-layer-norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from twilbert.config import check


@dataclass(frozen=True, kw_only=True)
class PKMConfig:
    """Product-Key Memory (Lample et al. 2019; XLM ``memory.py``), replacing the FFN in some layers."""

    factorize_embeddings: bool = False  # value table of width value_size, projected to H
    value_size: int | None = None  # width of a factorised value table; null -> model.embedding_size
    k_dim: int = 512  # query/key width; each half-key has k_dim/2
    memory_size: int = 256  # sub-keys per half: memory_size**2 value slots
    n_heads: int = 4  # memory heads, summed
    knn: int = 32  # neighbours kept per head
    in_layers: tuple[int, ...] = ()  # 0-based encoder layers whose FFN becomes a memory
    input_dropout: float = 0.0
    output_dropout: float = 0.0
    batch_norm: bool = True  # BatchNorm on queries (statistics over real tokens only)

    def __post_init__(self) -> None:
        check(self.k_dim >= 2 and self.k_dim % 2 == 0, "k_dim", f"must be even and >= 2, got {self.k_dim}")
        check(self.memory_size >= 1, "memory_size", "must be >= 1")
        check(self.n_heads >= 1, "n_heads", "must be >= 1")
        check(1 <= self.knn <= self.memory_size, "knn", f"must be in [1, memory_size={self.memory_size}], got {self.knn}")
        check(len(set(self.in_layers)) == len(self.in_layers), "in_layers", "has duplicates")
        check(all(i >= 0 for i in self.in_layers), "in_layers", "indices must be >= 0")
        check(self.value_size is None or self.value_size >= 1, "value_size", "must be >= 1")
        for name in ("input_dropout", "output_dropout"):
            check(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class MaskProbs:
    """What happens to a selected MLM target: [MASK], a random token, or kept (BERT's 80/10/10)."""

    mask: float = 0.8
    random: float = 0.1
    keep: float = 0.1

    def __post_init__(self) -> None:
        for name in ("mask", "random", "keep"):
            check(0.0 <= getattr(self, name) <= 1.0, name, "must be in [0, 1]")
        total = self.mask + self.random + self.keep
        check(abs(total - 1.0) < 1e-6, "mask", f"mask + random + keep must sum to 1, got {total:g}")


@dataclass(frozen=True, kw_only=True)
class MaskedLMConfig:
    """Dynamic masking. ``budget`` is the fraction of maskable (non-special, non-pad) tokens."""

    type: Literal["token", "word", "span"] = "span"
    max_span: int = 3  # longest span (in tokens for span, in words for word)
    span_distribution: Literal["harmonic", "geometric"] = "harmonic"  # p(l) ∝ 1/l (original) or SpanBERT
    geometric_p: float = 0.2  # SpanBERT's released p
    budget: float = 0.15
    probs: MaskProbs = field(default_factory=MaskProbs)
    static_targets: bool = False  # MLM head on a fixed number of target slots per batch shape (see target_slots)
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        check(self.max_span >= 1, "max_span", "must be >= 1")
        check(0.0 < self.budget < 1.0, "budget", f"must be in (0, 1), got {self.budget}")
        check(0.0 < self.geometric_p <= 1.0, "geometric_p", "must be in (0, 1]")
        check(self.loss_weight >= 0.0, "loss_weight", "must be >= 0")

    def target_slots(self, n_positions: int) -> int:
        """MLM target slots of a batch of ``n_positions = B * T`` padded positions (``static_targets``).

        ``K = min(n, ceil(budget · n + 3 · sqrt(budget · n · max_span)))``: a function of the batch
        *shape* only, so a compiled MLM head/loss sees one shape per batch shape (the encoder already
        does; length buckets keep those few). Why this margin: masking takes each span with probability
        ``budget`` (``twilbert.data.masking``), so the target count has mean ``budget · M`` (M <= n
        maskable tokens) and a variance of about ``budget · M · E[ℓ²] / E[ℓ] <= budget · M · ℓ_max``
        (the Bernoulli bound; systematic sampling is below it but for a +-1 span per row); ``K`` sits
        about 3 standard deviations above the mean even when every position is maskable, and real
        batches (specials, padding) are far below it. Masking caps the real targets at K, so the head
        never drops one; Cramming's ``round(0.15 · B · T)`` slots drop the excess targets silently
        (docs/deviations.md#static-target-slots).
        ``max_span`` counts words for ``word`` masking, so there the margin is approximate (the cap
        still holds). ``token`` masking spans one token: ``ℓ_max = 1``.
        """
        if n_positions < 0:
            raise ValueError(f"n_positions must be >= 0, got {n_positions}")
        longest = 1 if self.type == "token" else self.max_span
        mean = self.budget * n_positions
        return min(n_positions, math.ceil(mean + 3.0 * math.sqrt(mean * longest)))


@dataclass(frozen=True, kw_only=True)
class ROPConfig:
    """Reply Order Prediction head on [CLS]: n_hidden x (Linear -> GELU -> LayerNorm) -> 2 classes."""

    use_rop: bool = True
    n_hidden: int = 0
    hidden_size: int = 512
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        check(self.n_hidden >= 0, "n_hidden", "must be >= 0")
        check(self.hidden_size >= 1, "hidden_size", "must be >= 1")
        check(self.loss_weight >= 0.0, "loss_weight", "must be >= 0")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The encoder and its pre-training heads.

    ``vocab_size`` and ``max_positions`` are normally *derived* (from the trained SentencePiece model
    and from ``representation.max_len``) and left null in params.yaml; the pipeline fills them in with
    :meth:`resolved` before building a model, and a saved checkpoint always stores them resolved.
    """

    vocab_size: int | None = None
    max_positions: int | None = None  # position table rows; pipeline sets 2 * max_len + 3
    factorize_embeddings: bool = False  # ALBERT: vocab table of width E, Linear E -> H
    cross_sharing: bool = False  # ALBERT all-shared: one block reused by every non-PKM layer
    embedding_size: int = 256  # E (must equal H unless factorize_embeddings)
    hidden_size: int = 256  # H
    n_encoders: int = 4  # L
    n_heads: int = 4  # A
    # d_k per head; null -> H // A (as the original). A * d_k may differ from H: the output projection
    # maps A*d_k -> H.
    attention_size: int | None = None
    input_dropout: float = 0.0  # on the embedding output
    output_dropout: float = 0.0  # on residual branches (attention and FFN outputs)
    attention_dropout: float = 0.0  # on attention probabilities (the original had none)
    attention_bias: bool = True  # biases on Q/K/V/output projections (the original had none: false to reproduce)
    initializer_range: float = 0.02  # truncated normal(0, initializer_range) everywhere
    embedding_layer_norm: bool = True  # the original had none: docs/deviations.md#embedding-layer-norm
    norm: Literal["post", "pre"] = "post"  # post-LN as the original; pre-LN is more stable when deep
    layer_norm_eps: float = 1e-12  # the original's epsilon
    tie_mlm_decoder: bool = False  # tie the MLM decoder to the token embeddings (the original: untied)
    mlm_transform: bool = False  # BERT's Linear->GELU->LN before the decoder (the original: none)
    pkm: bool = False
    pkm_params: PKMConfig = field(default_factory=PKMConfig)
    masked_lm: MaskedLMConfig = field(default_factory=MaskedLMConfig)
    rop: ROPConfig = field(default_factory=ROPConfig)

    def __post_init__(self) -> None:
        for name in ("embedding_size", "hidden_size", "n_encoders", "n_heads"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        if self.attention_size is None:
            check(
                self.hidden_size % self.n_heads == 0,
                "hidden_size",
                f"must be divisible by n_heads={self.n_heads} when attention_size is null, got {self.hidden_size}",
            )
        else:
            check(self.attention_size >= 1, "attention_size", "must be >= 1")
        if not self.factorize_embeddings:
            check(
                self.embedding_size == self.hidden_size,
                "embedding_size",
                f"must equal hidden_size={self.hidden_size} unless factorize_embeddings is true, got {self.embedding_size}",
            )
        for name in ("input_dropout", "output_dropout", "attention_dropout"):
            check(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")
        check(self.initializer_range > 0, "initializer_range", "must be > 0")
        check(self.vocab_size is None or self.vocab_size >= 6, "vocab_size", "must be >= 6 (5 specials + 1)")
        check(self.max_positions is None or self.max_positions >= 3, "max_positions", "must be >= 3")
        if self.pkm:
            bad = [i for i in self.pkm_params.in_layers if i >= self.n_encoders]
            check(
                not bad,
                "pkm_params.in_layers",
                f"layer indices {bad} do not exist in a model with n_encoders={self.n_encoders} (valid: 0..{self.n_encoders - 1})",
            )
            check(len(self.pkm_params.in_layers) > 0, "pkm_params.in_layers", "pkm is true but no layer is listed")

    @property
    def head_dim(self) -> int:
        return self.attention_size if self.attention_size is not None else self.hidden_size // self.n_heads

    @property
    def pkm_layers(self) -> frozenset[int]:
        return frozenset(self.pkm_params.in_layers) if self.pkm else frozenset()

    def resolved(self, *, vocab_size: int, max_len: int) -> "ModelConfig":
        """Fill in the derived sizes: vocab from the tokenizer, positions for [CLS] a [SEP] b [SEP]."""
        from dataclasses import replace

        return replace(self, vocab_size=vocab_size, max_positions=2 * max_len + 3)
