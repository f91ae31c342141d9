"""Dynamic MLM masking: choose target tokens (token / whole-word / span), then apply 80/10/10.

Everything is vectorised over the whole ``(B, T)`` batch; there is no per-token Python loop.

How targets are chosen (all three types share one code path)
------------------------------------------------------------
1. *Maskable* positions are real, non-special tokens (``maskable_positions``). Maximal runs of
   maskable positions are *runs*; ``[CLS]``, ``[SEP]``, ``[UNK]`` and padding separate runs.
2. A run is made of *units*: tokens (``token``/``span``) or whole words (``word``: a word-start token
   plus its continuation tokens; the first token of a run always starts a unit).
3. Every run is tiled, left to right, into consecutive *spans* of ``ℓ`` units, with ``ℓ`` drawn i.i.d.
   from the span-length distribution (``token``: always 1). The last span of a run is cut at the run's
   end, so spans never cross ``[SEP]``, ``[UNK]`` or padding.
4. Spans are visited in a random order per row and taken while the row's running target count is
   below its budget ``k = ceil(budget · n_maskable)`` (at least 1 when the row has any maskable
   token). The last span taken may overshoot ``k`` by up to (its length - 1) tokens, exactly as in the
   original; spans never overlap, so no token is counted twice.

Because spans are visited in an order independent of their lengths, the lengths of the spans taken
follow the configured distribution (Wald's identity; only the cut spans at run ends differ).

Deviations from the original ``Utils.mask_spans`` (inventory §5.1), each deliberate:
* Spans cannot run past ``[SEP]`` into the next segment's pads (bug §5.1 / §13.6): padding and
  special tokens are never targets and never change.
* Spans never overlap, so a token is never drawn twice nor double-counted against the budget.
* Spans are a random tiling of each run rather than "length first, then a uniform start among free
  positions"; this is what makes the procedure vectorisable. Marginally every maskable token is
  equally likely to be a target, as before.
* ``token`` masking selects exactly ``k`` tokens per row (the original drew Bernoulli(budget) per
  token and redrew the row until at least one was chosen).
* ``budget · n`` is rounded up with a 1e-9 tolerance, so ``0.15 · 20`` gives 3 targets, not 4 (the
  original's ``math.ceil(0.15 * 20)`` is 4 because of binary floating point).

Static targets (``MaskedLMConfig.static_targets``)
--------------------------------------------------
With ``static_targets`` the batch gets *exactly* ``K = num_static_targets(maskable, budget)`` =
``round_half_up(budget · M)`` targets, ``M`` being the number of maskable tokens in the whole batch
(or exactly ``num_targets`` when the caller passes it, e.g. a fixed K per padded batch shape). The
per-row selection above is trimmed (or topped up) to K with largest-remainder apportionment: first
every row's overshoot is dropped, then one target from each row whose ``ceil`` rounded up the most.
When ``M`` is constant per batch shape (packed rows, as in Cramming) K is constant too, so the sparse
MLM gather ``(K, V)`` has a static shape for ``torch.compile``. A row keeps at least one target
unless K is smaller than the number of rows with maskable tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from twilbert.model.config import MASK_ID, N_SPECIAL, MaskedLMConfig

IGNORE_INDEX = -100  # label of non-target positions (the default ignore_index of F.cross_entropy)
_CEIL_TOLERANCE = 1e-9


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


def row_budgets(maskable: torch.Tensor, budget: float) -> torch.Tensor:
    """Targets per row: ``ceil(budget · n)`` (1e-9 tolerance), >= 1 when n > 0, 0 when n = 0. ``(B,)``."""
    n = maskable.sum(dim=1)  # (B,)
    k = torch.ceil(n.double() * budget - _CEIL_TOLERANCE).long()
    return torch.where(n > 0, k.clamp(min=1), torch.zeros_like(k))


def num_static_targets(maskable: torch.Tensor, budget: float) -> int:
    """Targets per batch under ``static_targets``: ``floor(budget · M + 0.5)``, M = maskable tokens.

    At least 1 when M > 0, and 0 for a batch with nothing maskable. Round-half-up (not Python's
    banker's rounding) so that K is a monotone function of M.
    """
    m = int(maskable.sum())
    if m == 0:
        return 0
    return max(1, int(budget * m + 0.5))


def _shift_right(x: torch.Tensor, fill) -> torch.Tensor:
    """``x[:, t-1]`` at position t, ``fill`` at t=0. ``(B, T)``."""
    return F.pad(x[:, :-1], (1, 0), value=fill)


def select_targets(
    maskable: torch.Tensor,
    cfg: MaskedLMConfig,
    word_starts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    num_targets: int | None = None,
) -> Selection:
    """Choose MLM target positions (see the module docstring). Does not touch token ids.

    ``num_targets`` forces an exact batch total (implies static targets); otherwise the batch total is
    exact only when ``cfg.static_targets`` is set.
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

    # --- visit spans in random order, take them until the row budget is reached --------------
    priority = torch.rand(B, T, generator=generator, device=device)
    priority = priority.masked_fill(span_ntok == 0, 2.0)  # unused slots last
    order = torch.argsort(priority, dim=1)  # (B, S) random permutation of spans
    ntok_sorted = span_ntok.gather(1, order)
    before_sorted = torch.cumsum(ntok_sorted, dim=1) - ntok_sorted  # targets already taken
    k = row_budgets(maskable, cfg.budget)  # (B,)
    take_sorted = (before_sorted < k[:, None]) & (ntok_sorted > 0)
    take_span = torch.zeros_like(take_sorted).scatter(1, order, take_sorted)  # (B, S)
    before_span = torch.zeros_like(before_sorted).scatter(1, order, before_sorted)  # (B, S)

    span_idx_c = span_idx.clamp(max=T - 1)
    targets = maskable & take_span.gather(1, span_idx_c)  # (B, T)

    if cfg.static_targets or num_targets is not None:
        K = num_static_targets(maskable, cfg.budget) if num_targets is None else int(num_targets)
        targets = _exactly_k(targets, maskable, new_span, span_idx_c, before_span, k, K, cfg.budget, generator)

    span_ids = torch.where(targets, span_idx, torch.full_like(span_idx, -1))
    return Selection(targets=targets, span_ids=span_ids)


def _exactly_k(targets, maskable, new_span, span_idx, before_span, k, K, budget, generator) -> torch.Tensor:
    """Trim (or top up) a selection to exactly K targets in the batch, by largest remainder.

    Each selected token gets its rank r in its row's selection order (spans in visiting order,
    tokens left to right) and the score ``budget · n_row - r``; the K best-scoring tokens are kept.
    Overshoot tokens (r >= k) are dropped first, then the last token of the rows whose ``ceil`` rounded
    up the most (Hamilton's largest-remainder rule). Unselected maskable tokens (only needed when an
    explicit K exceeds the selection) are added last, at random.
    """
    B, T = targets.shape
    M = int(maskable.sum())
    if K > M:
        raise ValueError(f"cannot take {K} MLM targets from a batch with {M} maskable tokens")
    pos = torch.arange(T, device=targets.device).expand(B, T)
    span_first_pos = torch.cummax(torch.where(new_span, pos, torch.zeros_like(pos)), dim=1).values
    rank = before_span.gather(1, span_idx) + (pos - span_first_pos)  # (B, T) order of selection
    exact = budget * maskable.sum(dim=1, keepdim=True).double()  # (B, 1) un-rounded row budget
    noise = torch.rand(B, 1, generator=generator, device=targets.device).double()
    # core tokens (rank < k) score in (0, T]; overshoot tokens in [-3T-2, -2T-2); unselected maskable
    # tokens in (-4T-11, -4T-10]; the rest -inf. Ties between rows are broken by a random row order.
    score = exact - rank.double() - (2.0 * T + 2.0) * (rank >= k[:, None]).double() + 1e-6 * noise
    filler = -(4.0 * T + 10.0) - torch.rand(B, T, generator=generator, device=targets.device).double()
    score = torch.where(targets, score, torch.where(maskable, filler, torch.full_like(score, -torch.inf)))
    keep = torch.zeros(B * T, dtype=torch.bool, device=targets.device)
    keep[torch.topk(score.view(-1), K).indices] = True
    return keep.view(B, T)


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
    num_targets: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic masking of a batch: ``(masked_ids (B, T), labels (B, T) with -100 off target)``.

    ``maskable``: ``maskable_positions(input_ids, attention_mask)``. ``word_starts``: (B, T) bool, True
    where a token begins a word (needed for ``type: word``). ``generator``: a ``torch.Generator`` on
    the batch's device, for reproducible masks. ``num_targets``: force exactly this many targets in the
    batch (see the module docstring); by default exact counts follow ``cfg.static_targets``.
    """
    if input_ids.shape != maskable.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and maskable {tuple(maskable.shape)} differ")
    selection = select_targets(maskable, cfg, word_starts, generator, num_targets)
    return apply_mask(input_ids, selection.targets, cfg, vocab_size, generator)


__all__ = [
    "IGNORE_INDEX",
    "Selection",
    "apply_mask",
    "mask_tokens",
    "maskable_positions",
    "num_static_targets",
    "row_budgets",
    "select_targets",
    "span_length_probs",
]
