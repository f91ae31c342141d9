"""Statistical and invariant tests for dynamic MLM masking (twilbert.data.masking).

Expected values come from independent computations in this file (exact fractions for the budget,
plain Python loops over rows for words and spans, the configured distributions for histograms).
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from twilbert.data.masking import (
    IGNORE_INDEX,
    mask_tokens,
    maskable_positions,
    num_static_targets,
    select_targets,
    span_length_probs,
)
from twilbert.model.config import CLS_ID, MASK_ID, N_SPECIAL, PAD_ID, SEP_ID, UNK_ID, MaskedLMConfig, MaskProbs

VOCAB = 1000


def pair_batch(B: int, max_seg: int, seed: int, unk_rate: float = 0.03):
    """``[CLS] a [SEP] b [SEP] pad...`` rows with random segment lengths (0..max_seg), some [UNK]s,
    random word starts. Returns (input_ids, attention_mask, word_starts)."""
    g = torch.Generator().manual_seed(seed)
    T = 2 * max_seg + 3
    ids = torch.full((B, T), PAD_ID, dtype=torch.long)
    lens_a = torch.randint(0, max_seg + 1, (B,), generator=g)
    lens_b = torch.randint(0, max_seg + 1, (B,), generator=g)
    tokens = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=g)
    tokens[torch.rand(B, T, generator=g) < unk_rate] = UNK_ID
    for i in range(B):  # building test data, not the code under test
        a, b = int(lens_a[i]), int(lens_b[i])
        row = [CLS_ID, *tokens[i, :a].tolist(), SEP_ID, *tokens[i, a : a + b].tolist(), SEP_ID]
        ids[i, : len(row)] = torch.tensor(row)
    attention = ids != PAD_ID
    word_starts = torch.rand(B, T, generator=g) < 0.6
    return ids, attention, word_starts


def expected_row_budget(n: int, budget: float) -> int:
    """ceil(budget · n) in exact decimal arithmetic (0.15 · 20 = 3), at least 1 when n > 0."""
    if n == 0:
        return 0
    return max(1, math.ceil(Fraction(str(budget)) * n))


def words_of_row(maskable_row: list[bool], starts_row: list[bool]) -> list[list[int]]:
    """Words as position lists: a maskable word start (or the first token of a maskable run) opens a
    word, following maskable non-start tokens continue it."""
    words: list[list[int]] = []
    prev = False
    for t, (m, s) in enumerate(zip(maskable_row, starts_row)):
        if m and (s or not prev):
            words.append([t])
        elif m:
            words[-1].append(t)
        prev = m
    return words


def spans_of(span_ids: torch.Tensor) -> list[list[int]]:
    """Positions of every selected span, per (row, span id)."""
    out: dict[tuple[int, int], list[int]] = {}
    for b, t in zip(*torch.nonzero(span_ids >= 0, as_tuple=True)):
        out.setdefault((int(b), int(span_ids[b, t])), []).append(int(t))
    return list(out.values())


CONFIGS = [
    MaskedLMConfig(type="token"),
    MaskedLMConfig(type="span", max_span=3),
    MaskedLMConfig(type="span", max_span=10, span_distribution="geometric", geometric_p=0.2),
    MaskedLMConfig(type="word", max_span=1),
    MaskedLMConfig(type="word", max_span=3),
]
IDS = ["token", "span-harmonic", "span-geometric", "word", "word-spans"]


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_only_real_tokens_change_and_labels_are_originals(cfg, static):
    from dataclasses import replace

    cfg = replace(cfg, static_targets=static)
    ids, attention, word_starts = pair_batch(256, 20, seed=1)
    maskable = maskable_positions(ids, attention)
    # independent definition of maskable: real token with a non-special id
    assert torch.equal(maskable, (ids != PAD_ID) & (ids != UNK_ID) & (ids != CLS_ID) & (ids != SEP_ID) & (ids != MASK_ID))
    masked, labels = mask_tokens(ids, maskable, cfg, VOCAB, word_starts, torch.Generator().manual_seed(2))
    targets = labels != IGNORE_INDEX
    assert not (targets & ~maskable).any(), "a special token or pad became a target"
    assert torch.equal(masked[~targets], ids[~targets]), "a non-target token changed"
    assert torch.equal(labels[targets], ids[targets])
    assert (masked[targets] >= N_SPECIAL).logical_or(masked[targets] == MASK_ID).all()
    assert targets.any(dim=1).eq(maskable.any(dim=1)).all() or static  # >= 1 target per row (dynamic)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_row_budget_and_overshoot(cfg):
    ids, attention, word_starts = pair_batch(512, 20, seed=3)
    maskable = maskable_positions(ids, attention)
    sel = select_targets(maskable, cfg, word_starts, torch.Generator().manual_seed(4))
    for b in range(ids.shape[0]):
        n = int(maskable[b].sum())
        k = expected_row_budget(n, cfg.budget)
        got = int(sel.targets[b].sum())
        if cfg.type == "token":
            assert got == k
        else:
            assert got >= k
            # overshoot: only the last span taken can pass the budget, by < its length
            longest = max((len(s) for s in spans_of(sel.span_ids[b : b + 1])), default=1)
            assert got - k <= longest - 1
            if cfg.type == "span":
                assert got - k <= cfg.max_span - 1


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=IDS[:3])
def test_masked_fraction_close_to_budget(cfg):
    # long single-segment rows: the rounding and the overshoot are small against n
    B, T = 128, 400
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=torch.Generator().manual_seed(5))
    maskable = maskable_positions(ids)
    sel = select_targets(maskable, cfg, None, torch.Generator().manual_seed(6))
    frac = sel.targets.float().mean().item()
    assert cfg.budget <= frac <= cfg.budget + 0.02


@pytest.mark.parametrize(
    "cfg",
    [
        MaskedLMConfig(type="span", max_span=3, span_distribution="harmonic"),
        MaskedLMConfig(type="span", max_span=5, span_distribution="harmonic"),
        MaskedLMConfig(type="span", max_span=10, span_distribution="geometric", geometric_p=0.2),
        MaskedLMConfig(type="span", max_span=6, span_distribution="geometric", geometric_p=0.5),
    ],
    ids=["harmonic3", "harmonic5", "geometric0.2", "geometric0.5"],
)
def test_span_length_histogram(cfg):
    B, T = 256, 400
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=torch.Generator().manual_seed(7))
    sel = select_targets(maskable_positions(ids), cfg, None, torch.Generator().manual_seed(8))
    counts = Counter(len(s) for s in spans_of(sel.span_ids))
    total = sum(counts.values())
    # the configured distribution, written out independently of span_length_probs
    lengths = range(1, cfg.max_span + 1)
    if cfg.span_distribution == "harmonic":
        w = [1 / n for n in lengths]
    else:
        w = [cfg.geometric_p * (1 - cfg.geometric_p) ** (n - 1) for n in lengths]
    expected = [x / sum(w) for x in w]
    assert torch.allclose(span_length_probs(cfg), torch.tensor(expected, dtype=torch.float64))
    observed = [counts[n] / total for n in lengths]
    assert max(counts) <= cfg.max_span
    assert total > 3000
    for n, (o, e) in enumerate(zip(observed, expected), start=1):
        assert abs(o - e) < 0.02, f"p({n}): observed {o:.3f}, expected {e:.3f}"


def test_harmonic_original_probabilities():
    probs = span_length_probs(MaskedLMConfig(max_span=3))
    assert torch.allclose(probs, torch.tensor([6 / 11, 3 / 11, 2 / 11], dtype=torch.float64))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_spans_are_contiguous_and_stay_inside_segments(cfg):
    ids, attention, word_starts = pair_batch(256, 20, seed=9, unk_rate=0.1)
    maskable = maskable_positions(ids, attention)
    sel = select_targets(maskable, cfg, word_starts, torch.Generator().manual_seed(10))
    for span in spans_of(sel.span_ids):
        assert span == list(range(span[0], span[-1] + 1)), "span with a hole"
    # spans never reach across [SEP]/[UNK]/pad: each one lies inside one maskable run
    for b in range(ids.shape[0]):
        for span in spans_of(sel.span_ids[b : b + 1]):
            assert bool(maskable[b, span[0] : span[-1] + 1].all())
    if cfg.type != "token":
        assert max(len(s) for s in spans_of(sel.span_ids)) > 1


@pytest.mark.parametrize("max_span", [1, 3])
def test_word_masking_takes_whole_words(max_span):
    cfg = MaskedLMConfig(type="word", max_span=max_span)
    ids, attention, word_starts = pair_batch(256, 20, seed=11)
    maskable = maskable_positions(ids, attention)
    sel = select_targets(maskable, cfg, word_starts, torch.Generator().manual_seed(12))
    words_per_span = Counter()
    for b in range(ids.shape[0]):
        words = words_of_row(maskable[b].tolist(), word_starts[b].tolist())
        for word in words:
            flags = {bool(sel.targets[b, t]) for t in word}
            assert len(flags) == 1, f"row {b}: word {word} partly masked"
            ids_in_word = {int(sel.span_ids[b, t]) for t in word}
            assert len(ids_in_word) == 1, "a word split between spans"
        starts = {w[0] for w in words}
        for span in spans_of(sel.span_ids[b : b + 1]):
            words_per_span[sum(t in starts for t in span)] += 1
    assert max(words_per_span) <= max_span
    if max_span == 1:
        assert set(words_per_span) == {1}


def test_word_type_needs_word_starts():
    ids, attention, _ = pair_batch(4, 5, seed=0)
    with pytest.raises(ValueError, match="word_starts"):
        mask_tokens(ids, maskable_positions(ids, attention), MaskedLMConfig(type="word"), VOCAB)


@pytest.mark.parametrize(
    "probs",
    [MaskProbs(), MaskProbs(mask=0.5, random=0.3, keep=0.2), MaskProbs(mask=0.0, random=1.0, keep=0.0)],
    ids=["80/10/10", "50/30/20", "all-random"],
)
def test_mask_random_keep_split(probs):
    cfg = MaskedLMConfig(type="token", budget=0.5, probs=probs)
    B, T = 200, 200
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=torch.Generator().manual_seed(13))
    masked, labels = mask_tokens(ids, maskable_positions(ids), cfg, VOCAB, generator=torch.Generator().manual_seed(14))
    t = labels != IGNORE_INDEX
    n = int(t.sum())
    is_mask = masked[t] == MASK_ID
    changed = (masked[t] != ids[t]) & ~is_mask
    # a random draw equals the original token with probability 1 / (VOCAB - N_SPECIAL)
    p_same = 1 / (VOCAB - N_SPECIAL)
    assert abs(is_mask.float().mean().item() - probs.mask) < 0.01
    assert abs(changed.float().mean().item() - probs.random * (1 - p_same)) < 0.01
    assert abs((masked[t] == ids[t]).float().mean().item() - (probs.keep + probs.random * p_same)) < 0.01
    assert n == B * expected_row_budget(T, 0.5)
    replaced = masked[t][changed]
    assert (replaced >= N_SPECIAL).all() and (replaced < VOCAB).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_static_targets_exact_count(cfg):
    from dataclasses import replace

    cfg = replace(cfg, static_targets=True)
    for seed in range(5):
        ids, attention, word_starts = pair_batch(64, 12, seed=100 + seed)
        maskable = maskable_positions(ids, attention)
        M = int(maskable.sum())
        K = int(Fraction(str(cfg.budget)) * M + Fraction(1, 2))  # round half up, exactly
        assert num_static_targets(maskable, cfg.budget) == max(1, K)
        masked, labels = mask_tokens(ids, maskable, cfg, VOCAB, word_starts, torch.Generator().manual_seed(seed))
        per_row = (labels != IGNORE_INDEX).sum(dim=1)
        assert int(per_row.sum()) == K
        if cfg.type == "token":  # largest remainder: every row gets ceil(x) or ceil(x) - 1
            for b in range(ids.shape[0]):
                k = expected_row_budget(int(maskable[b].sum()), cfg.budget)
                assert int(per_row[b]) in (k - 1, k)


def test_explicit_num_targets_and_too_many():
    ids, attention, word_starts = pair_batch(32, 10, seed=20)
    maskable = maskable_positions(ids, attention)
    M = int(maskable.sum())
    cfg = MaskedLMConfig(type="span")
    for K in (1, M // 2, M):  # M // 2 exceeds the dynamic selection: topped up with single tokens
        _, labels = mask_tokens(ids, maskable, cfg, VOCAB, word_starts, torch.Generator().manual_seed(K), num_targets=K)
        t = labels != IGNORE_INDEX
        assert int(t.sum()) == K and not (t & ~maskable).any()
    with pytest.raises(ValueError, match="maskable"):
        mask_tokens(ids, maskable, cfg, VOCAB, word_starts, num_targets=M + 1)


def test_rows_without_maskable_tokens():
    ids = torch.tensor([[CLS_ID, SEP_ID, SEP_ID, PAD_ID], [CLS_ID, 7, SEP_ID, SEP_ID], [CLS_ID, UNK_ID, SEP_ID, PAD_ID]])
    for cfg in CONFIGS:
        masked, labels = mask_tokens(ids, maskable_positions(ids), cfg, VOCAB, torch.ones_like(ids, dtype=torch.bool))
        assert (labels != IGNORE_INDEX).sum(dim=1).tolist() == [0, 1, 0]
        assert labels[1, 1] == 7
    empty = torch.full((2, 3), PAD_ID)
    _, labels = mask_tokens(empty, maskable_positions(empty), MaskedLMConfig(static_targets=True), VOCAB)
    assert (labels == IGNORE_INDEX).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_reproducible_with_generator(cfg):
    ids, attention, word_starts = pair_batch(64, 15, seed=21)
    maskable = maskable_positions(ids, attention)
    a = mask_tokens(ids, maskable, cfg, VOCAB, word_starts, torch.Generator().manual_seed(5))
    b = mask_tokens(ids, maskable, cfg, VOCAB, word_starts, torch.Generator().manual_seed(5))
    c = mask_tokens(ids, maskable, cfg, VOCAB, word_starts, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    B=st.integers(1, 8),
    max_seg=st.integers(0, 12),
    cfg_index=st.integers(0, len(CONFIGS) - 1),
    budget=st.sampled_from([0.05, 0.15, 0.3, 0.9]),
    static=st.booleans(),
)
def test_invariants_property(seed, B, max_seg, cfg_index, budget, static):
    from dataclasses import replace

    cfg = replace(CONFIGS[cfg_index], budget=budget, static_targets=static)
    ids, attention, word_starts = pair_batch(B, max_seg, seed=seed, unk_rate=0.2)
    maskable = maskable_positions(ids, attention)
    sel = select_targets(maskable, cfg, word_starts, torch.Generator().manual_seed(seed))
    assert not (sel.targets & ~maskable).any()
    assert torch.equal(sel.targets, sel.span_ids >= 0)
    n = maskable.sum(dim=1).tolist()
    got = sel.targets.sum(dim=1).tolist()
    if static:
        assert sum(got) == (max(1, int(Fraction(str(budget)) * sum(n) + Fraction(1, 2))) if sum(n) else 0)
    else:
        for nb, g in zip(n, got):
            assert expected_row_budget(nb, budget) <= g <= nb
