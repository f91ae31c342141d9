"""Dynamic MLM masking: choose target tokens (token / whole-word / span), then apply 80/10/10.

Vectorised over the whole ``(B, T)`` batch, with one code path for the three types:

1. *Maskable* positions are real, non-special tokens; maximal runs of them are *runs* (``[CLS]``,
   ``[SEP]``, ``[UNK]`` and padding separate runs). A run is made of *units*: tokens, or for ``word``
   whole words (a word-start token plus its continuation tokens).
2. Each run is tiled left to right into *spans* of ``ℓ`` units, ``ℓ`` drawn i.i.d. from the span-length
   distribution (``token``: 1); the last span is cut at the run's end, so no span crosses a special
   token or padding.
3. A row's ``S`` spans are shuffled and taken by systematic sampling at rate ``q = budget`` (one
   ``u ~ U[0, 1)`` per row): every span is taken with probability exactly q whatever its length, and a
   row gets ``floor(q S)`` or ``ceil(q S)`` spans. So the expected masked fraction is exactly the budget,
   short segments included, and the lengths of the spans taken follow the cut tiling's histogram (the
   cuts at run ends shift it slightly towards 1; ``tests/data/test_masking.py`` checks both).

Deviations from the original ``Utils.mask_spans`` (docs/deviations.md#span-masking-within-runs,
#span-tiling, #masking-budget-in-expectation): spans never run past ``[SEP]`` into padding, never
overlap and tile each run, and the budget is met in expectation instead of by ``ceil(budget · n)``
plus an overshooting last span, which masked 22% of 3-10 token segments instead of 15% (so a short
row may get no target).

Static targets: a ``(B, T)`` batch gets ``K = masked_lm.target_slots(B * T)`` target slots, the real
targets first and then ignored filler, so the MLM head's projection and loss have one static ``(K, V)``
shape per batch shape (Cramming's sparse prediction). ``mask_tokens`` caps the real targets at K, about
3 standard deviations above the expected count, dropping whole spans when it binds (never seen on real
batches). One K per batch shape, not per run: the encoder already sees one shape per length bucket,
and a run-wide K would make a short batch's head project as many rows as a long one's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from twilbert.model.config import MaskedLMConfig
from twilbert.tokens import IGNORE_INDEX, MASK_ID, N_SPECIAL


class Selection(NamedTuple):
    """Which positions are MLM targets, and the span each belongs to (-1 outside spans)."""

    targets: torch.Tensor  # (B, T) bool
    span_ids: torch.Tensor  # (B, T) long, span index within the row, -1 where not a target


def maskable_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Real, non-special tokens: the only positions that may become MLM targets. ``(B, T)`` bool."""
    maskable = input_ids >= N_SPECIAL  # PAD, UNK, CLS, SEP and MASK are never targets
    if attention_mask is not None:
        maskable = maskable & attention_mask.bool()
    return maskable


def span_length_probs(cfg: MaskedLMConfig) -> torch.Tensor:
    """p(ℓ) for ℓ = 1..max_span, shape ``(max_span,)`` float64.

    ``harmonic``: p(ℓ) ∝ 1/ℓ (the original; max_span=3 gives 6/11, 3/11, 2/11).
    ``geometric``: p(ℓ) ∝ p(1-p)^(ℓ-1), truncated at max_span and renormalised (SpanBERT,
    ``PairWithSpanMaskingScheme``; SpanBERT counts whole words, as our ``word`` type does).
    ``token`` masking ignores this (every span is one token).
    """
    lengths = torch.arange(1, cfg.max_span + 1, dtype=torch.float64)
    if cfg.span_distribution == "harmonic":
        weights = 1.0 / lengths
    elif cfg.span_distribution == "geometric":
        weights = cfg.geometric_p * (1.0 - cfg.geometric_p) ** (lengths - 1)
    else:  # pragma: no cover - the config's Literal type forbids it
        raise ValueError(f"unknown span_distribution {cfg.span_distribution!r}")
    return weights / weights.sum()


def _shift_right(x: torch.Tensor, fill) -> torch.Tensor:
    """``x[:, t-1]`` at position t, ``fill`` at t=0. ``(B, T)``."""
    return F.pad(x[:, :-1], (1, 0), value=fill)


def select_targets(
    maskable: torch.Tensor,
    cfg: MaskedLMConfig,
    word_starts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_targets: int | None = None,
) -> Selection:
    """Choose MLM target positions (see the module docstring). Does not touch token ids.

    ``max_targets`` caps the batch total (random whole spans are dropped above it); ``None`` means
    ``cfg.target_slots(B * T)`` under ``cfg.static_targets`` and no cap otherwise.
    """
    if maskable.dim() != 2:
        raise ValueError(f"maskable must be (B, T), got shape {tuple(maskable.shape)}")
    B, T = maskable.shape
    device = maskable.device
    maskable = maskable.bool()

    # --- runs and units ------------------------------------------------------------------------
    run_start = maskable & ~_shift_right(maskable, False)  # (B, T) first token of each run
    if cfg.type == "word":
        if word_starts is None:
            raise ValueError("masked_lm.type 'word' needs word_starts (B, T) bool")
        unit_start = maskable & (word_starts.bool() | run_start)
    else:
        unit_start = maskable
    unit_idx = torch.cumsum(unit_start.long(), dim=1) - 1  # (B, T) unit index in the row
    unit_idx = unit_idx.clamp(min=0)
    # unit index of the first unit of the current run (unit_idx is nondecreasing along t)
    run_first_unit = torch.cummax(torch.where(run_start, unit_idx, torch.zeros_like(unit_idx)), dim=1).values
    offset_in_run = unit_idx - run_first_unit  # (B, T) units since the run began

    # --- tile each run into spans of i.i.d. lengths -------------------------------------------
    # One length sequence per row, (B, T). Run r reads it from index run_first_unit[r] on; runs before
    # it consumed at most that many lengths (each span has >= 1 unit), so runs get disjoint lengths.
    if cfg.type == "token":
        lengths = torch.ones(B, T, dtype=torch.long, device=device)
    else:
        probs = span_length_probs(cfg).to(device=device, dtype=torch.float32)
        lengths = torch.multinomial(probs, B * T, replacement=True, generator=generator).view(B, T) + 1
    ends = torch.cumsum(lengths, dim=1)  # (B, T) exclusive end (in units) of length slot j
    starts = ends - lengths  # (B, T)
    query = starts.gather(1, run_first_unit) + offset_in_run  # (B, T) position on the length axis
    slot = torch.searchsorted(ends, query, right=True)  # (B, T) length slot holding this unit
    new_span = maskable & (run_start | (slot != _shift_right(slot, -1)))  # (B, T)
    span_idx = torch.cumsum(new_span.long(), dim=1) - 1  # (B, T) span index in the row
    span_idx = torch.where(maskable, span_idx, torch.full_like(span_idx, T))  # T = "no span" slot

    span_ntok = torch.zeros(B, T + 1, dtype=torch.long, device=device)
    span_ntok.scatter_add_(1, span_idx, maskable.long())
    span_ntok = span_ntok[:, :T]  # (B, S=T) tokens per span, 0 for unused slots

    # --- visit spans in random order, take them by systematic sampling at rate budget ---------
    priority = torch.rand(B, T, generator=generator, device=device)  # (B, S)
    priority = priority.masked_fill(span_ntok == 0, 2.0)  # unused slots last
    order = torch.argsort(priority, dim=1)  # (B, S) random permutation of spans
    ntok_sorted = span_ntok.gather(1, order)  # (B, S)
    q = float(cfg.budget)
    u = torch.rand(B, 1, generator=generator, device=device, dtype=torch.float64)  # (B, 1) one offset per row
    i = torch.arange(T, device=device, dtype=torch.float64)  # (S,) position in the visiting order
    # position i is taken iff the grid u, u+1, u+2, ... (step 1/q in units of positions) falls in it:
    # probability exactly q for every position, floor(qS) or ceil(qS) positions among the first S
    take_sorted = (torch.floor(q * (i + 1) + u) > torch.floor(q * i + u)) & (ntok_sorted > 0)  # (B, S)
    take_span = torch.zeros_like(take_sorted).scatter(1, order, take_sorted)  # (B, S)

    span_idx_c = span_idx.clamp(max=T - 1)
    targets = maskable & take_span.gather(1, span_idx_c)  # (B, T)

    if max_targets is None and cfg.static_targets:
        max_targets = cfg.target_slots(B * T)
    if max_targets is not None and int(targets.sum()) > max_targets:
        targets = _drop_spans(targets, priority.gather(1, span_idx_c), int(max_targets))

    span_ids = torch.where(targets, span_idx, torch.full_like(span_idx, -1))
    return Selection(targets=targets, span_ids=span_ids)


def _drop_spans(targets: torch.Tensor, span_priority: torch.Tensor, K: int) -> torch.Tensor:
    """Keep the K targets whose spans have the lowest visiting priority; drop the rest.

    ``span_priority`` (B, T) is each token's span priority (uniform, drawn for the visiting order and
    independent of the selection), so whole random spans are dropped; ties inside the span at the
    boundary are broken right to left, so a cut span keeps its left part and stays contiguous.
    """
    B, T = targets.shape
    pos = torch.arange(T, device=targets.device, dtype=torch.float64).expand(B, T)
    # float32 priorities differ by >= 2**-24 ~ 6e-8; the position term stays below that for T < 6e4
    score = -span_priority.double() - 1e-12 * pos  # (B, T)
    score = torch.where(targets, score, torch.full_like(score, -torch.inf))
    keep = torch.zeros(B * T, dtype=torch.bool, device=targets.device)
    keep[torch.topk(score.view(-1), K).indices] = True
    return keep.view(B, T) & targets


def apply_mask(
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    cfg: MaskedLMConfig,
    vocab_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT corruption of the chosen targets, decided independently per target token.

    ``probs.mask`` -> ``[MASK]``, ``probs.random`` -> a uniform id from ``[N_SPECIAL, vocab_size)``
    (never a special token, as the original's ``vocab[5:]``), ``probs.keep`` -> unchanged.
    Returns ``(masked_ids, labels)``, labels = original id at targets and -100 elsewhere.
    """
    if vocab_size <= N_SPECIAL:
        raise ValueError(f"vocab_size must exceed the {N_SPECIAL} special tokens, got {vocab_size}")
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)  # (B, T)
    to_mask = targets & (u < cfg.probs.mask)
    to_random = targets & (u >= cfg.probs.mask) & (u < cfg.probs.mask + cfg.probs.random)
    random_ids = torch.randint(
        N_SPECIAL, vocab_size, input_ids.shape, generator=generator, device=input_ids.device, dtype=input_ids.dtype
    )
    masked = torch.where(to_mask, torch.full_like(input_ids, MASK_ID), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(targets, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked, labels


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    cfg: MaskedLMConfig,
    vocab_size: int,
    word_starts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_targets: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic masking of a batch: ``(masked_ids (B, T), labels (B, T) with -100 off target)``.

    ``maskable``: ``maskable_positions(input_ids, attention_mask)``. ``word_starts``: (B, T) bool, True
    where a token begins a word (needed for ``type: word``). ``generator``: a ``torch.Generator`` on
    the batch's device, for reproducible masks. ``max_targets``: cap on the batch's targets; by default
    ``cfg.target_slots(B * T)`` under ``cfg.static_targets`` (the MLM head's slot count), else none.
    """
    if input_ids.shape != maskable.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and maskable {tuple(maskable.shape)} differ")
    selection = select_targets(maskable, cfg, word_starts, generator, max_targets)
    return apply_mask(input_ids, selection.targets, cfg, vocab_size, generator)


__all__ = [
    "IGNORE_INDEX",
    "Selection",
    "apply_mask",
    "mask_tokens",
    "maskable_positions",
    "select_targets",
    "span_length_probs",
]
