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
    select_targets,
    span_length_probs,
)
from twilbert.model.config import MaskedLMConfig, MaskProbs
from twilbert.tokens import CLS_ID, MASK_ID, N_SPECIAL, PAD_ID, SEP_ID, UNK_ID

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


def row_budget_bounds(n: int, budget: float) -> tuple[int, int]:
    """``(floor(budget · n), ceil(budget · n))`` in exact decimal arithmetic (0.15 · 20 = 3 exactly)."""
    x = Fraction(str(budget)) * n
    return math.floor(x), math.ceil(x)


def tweet_pairs(B: int, lo: int, hi: int, g: torch.Generator, unk_rate: float = 0.02):
    """Tweet-like ``[CLS] a [SEP] b [SEP] pad...`` rows: both segment lengths uniform in [lo, hi],
    a few [UNK]s (which split a segment into two runs), right-padded to the longest row."""
    len_a = torch.randint(lo, hi + 1, (B,), generator=g)
    len_b = torch.randint(lo, hi + 1, (B,), generator=g)
    T = int((len_a + len_b).max()) + 3
    t = torch.arange(T)
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=g)
    ids[torch.rand(B, T, generator=g) < unk_rate] = UNK_ID
    a_end = 1 + len_a[:, None]  # (B, 1) position of the first [SEP]
    b_end = a_end + 1 + len_b[:, None]  # (B, 1) position of the second [SEP]
    ids = torch.where(t == 0, CLS_ID, ids)
    ids = torch.where((t == a_end) | (t == b_end), SEP_ID, ids)
    ids = torch.where(t > b_end, PAD_ID, ids)
    return ids, ids != PAD_ID


def runs_of_row(maskable_row: list[bool]) -> list[int]:
    """Lengths of the maximal runs of maskable positions in one row (plain Python)."""
    runs, current = [], 0
    for m in maskable_row + [False]:
        if m:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def tiling_length_counts(r: int, probs: list[float]) -> list[float]:
    """Expected number of spans of each length 1..L when a run of r tokens is tiled left to right by
    i.i.d. lengths ~ probs, the last span cut at the run's end (renewal recursion, exact)."""
    L = len(probs)
    start = [0.0] * (r + 1)  # start[s]: probability that a span starts at offset s
    start[0] = 1.0
    counts = [0.0] * L
    for s in range(r):
        for ell in range(1, L + 1):
            length = min(ell, r - s)  # cut at the run's end
            counts[length - 1] += start[s] * probs[ell - 1]
            if s + ell < r:
                start[s + ell] += start[s] * probs[ell - 1]
    return counts


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


def z_tolerance(deviations: torch.Tensor, total: int, z: float = 4.0) -> float:
    """``z`` standard errors of ``sum(deviations) / total``, the standard error estimated from the
    sample itself: rows are independent and each row's deviation from its expectation has mean 0, so
    ``sum(d²)`` estimates the variance of ``sum(d)`` (no assumption on the per-row distribution)."""
    return z * math.sqrt(float((deviations.double() ** 2).sum())) / total


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
    assert targets.any()
    assert not (targets & ~maskable).any(), "a special token or pad became a target"
    assert torch.equal(masked[~targets], ids[~targets]), "a non-target token changed"
    assert torch.equal(labels[targets], ids[targets])
    assert (masked[targets] >= N_SPECIAL).logical_or(masked[targets] == MASK_ID).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_per_row_counts_are_a_rounding_of_the_budget(cfg):
    """token: floor or ceil of budget · n targets. span/word: each span is taken with probability
    budget, floor or ceil of budget · S spans, and S lies between ceil(units / max_span) and units."""
    ids, attention, word_starts = pair_batch(512, 20, seed=3)
    maskable = maskable_positions(ids, attention)
    sel = select_targets(maskable, cfg, word_starts, torch.Generator().manual_seed(4))
    for b in range(ids.shape[0]):
        n = int(maskable[b].sum())
        got = int(sel.targets[b].sum())
        if cfg.type == "token":
            assert got in row_budget_bounds(n, cfg.budget)
            continue
        units = n if cfg.type == "span" else len(words_of_row(maskable[b].tolist(), word_starts[b].tolist()))
        spans = len(spans_of(sel.span_ids[b : b + 1]))
        assert row_budget_bounds(math.ceil(units / cfg.max_span), cfg.budget)[0] <= spans <= row_budget_bounds(units, cfg.budget)[1]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_masked_fraction_close_to_budget_on_long_rows(cfg):
    B, T = 128, 400
    ids = torch.randint(N_SPECIAL, VOCAB, (B, T), generator=torch.Generator().manual_seed(5))
    word_starts = torch.rand(B, T, generator=torch.Generator().manual_seed(15)) < 0.6
    maskable = maskable_positions(ids)
    sel = select_targets(maskable, cfg, word_starts, torch.Generator().manual_seed(6))
    per_row = sel.targets.sum(dim=1)  # (B,)
    frac = per_row.sum().item() / (B * T)
    tol = z_tolerance(per_row - cfg.budget * T, B * T)
    assert tol < 0.01  # the sample is large enough to tell 15% from the original's 17%
    assert abs(frac - cfg.budget) <= tol, (frac, tol)  # token: exactly 60 of 400 per row, tol 0


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize(
    "lo,hi,resolution",  # resolution: at most half the old excess (2.2 points on 3-40, 7.2 on 3-10)
    [(3, 40, 0.006), (3, 10, 0.015)],
    ids=["segments3-40", "segments3-10"],
)
def test_masked_fraction_equals_budget_on_tweet_pairs(cfg, lo, hi, resolution):
    """Short segments, [SEP]/[UNK]/padding cutting spans: the fraction is still the budget. (With
    ceil-per-row budgets and an overshooting last span it was 17.2% on 5-40 and 22.3% on 3-10.)"""
    g, gm = torch.Generator().manual_seed(30), torch.Generator().manual_seed(31)
    deviations, n_total, hits = [], 0, 0
    for _ in range(60):  # 60 batches x 64 rows of lengths 6..80 tokens
        ids, attention = tweet_pairs(64, lo, hi, g)
        maskable = maskable_positions(ids, attention)
        word_starts = torch.rand(ids.shape, generator=g) < 0.6
        sel = select_targets(maskable, cfg, word_starts, gm)
        n = maskable.sum(dim=1)  # (B,)
        got = sel.targets.sum(dim=1)  # (B,)
        deviations.append(got - cfg.budget * n)
        n_total += int(n.sum())
        hits += int(got.sum())
    frac = hits / n_total
    tol = z_tolerance(torch.cat(deviations), n_total)
    assert tol < resolution  # enough rows to resolve the old bias
    assert abs(frac - cfg.budget) <= tol, f"masked fraction {frac:.4f}, budget {cfg.budget} +- {tol:.4f}"


def test_mask_random_keep_split_on_tweet_pairs():
    """80/10/10 of the selected targets on realistic pair batches, within 4 binomial standard errors."""
    cfg = MaskedLMConfig(type="span")
    g, gm = torch.Generator().manual_seed(40), torch.Generator().manual_seed(41)
    n = n_mask = n_changed = n_same = 0
    for _ in range(40):
        ids, attention = tweet_pairs(64, 3, 40, g)
        masked, labels = mask_tokens(ids, maskable_positions(ids, attention), cfg, VOCAB, generator=gm)
        t = labels != IGNORE_INDEX
        n += int(t.sum())
        n_mask += int((masked[t] == MASK_ID).sum())
        n_changed += int(((masked[t] != ids[t]) & (masked[t] != MASK_ID)).sum())
        n_same += int((masked[t] == ids[t]).sum())
    p_same = 1 / (VOCAB - N_SPECIAL)  # a random replacement can draw the original token
    expected = {"mask": 0.8, "random": 0.1 * (1 - p_same), "same": 0.1 + 0.1 * p_same}
    observed = {"mask": n_mask / n, "random": n_changed / n, "same": n_same / n}
    for key, p in expected.items():
        assert abs(observed[key] - p) < 4 * math.sqrt(p * (1 - p) / n), (key, observed[key], p, n)


def test_span_lengths_on_tweet_pairs_follow_the_cut_tiling():
    """On short segments the taken spans follow the tiling of each run with its last span cut (every
    span is taken with the same probability, whatever its length). The expectation is computed from
    the runs in the data with an exact recursion; the shift from the configured 6/11, 3/11, 2/11 is
    what cutting at [SEP]/[UNK]/padding costs, and is reported."""
    cfg = MaskedLMConfig(type="span", max_span=3)
    probs = [6 / 11, 3 / 11, 2 / 11]
    g, gm = torch.Generator().manual_seed(50), torch.Generator().manual_seed(51)
    observed, expected = Counter(), [0.0, 0.0, 0.0]
    for _ in range(25):
        ids, attention = tweet_pairs(64, 3, 40, g)
        maskable = maskable_positions(ids, attention)
        sel = select_targets(maskable, cfg, None, gm)
        observed.update(len(s) for s in spans_of(sel.span_ids))
        for row in maskable.tolist():
            for r in runs_of_row(row):
                expected = [e + c for e, c in zip(expected, tiling_length_counts(r, probs))]
    total = sum(observed.values())
    exp_p = [e / sum(expected) for e in expected]
    obs_p = [observed[n] / total for n in (1, 2, 3)]
    print(f"span lengths on 3-40 token pairs: observed {[round(x, 4) for x in obs_p]}, cut tiling "
          f"{[round(x, 4) for x in exp_p]}, configured {[round(x, 4) for x in probs]} ({total} spans)")
    assert set(observed) <= {1, 2, 3}
    for o, e in zip(obs_p, exp_p):
        assert abs(o - e) < 4 * math.sqrt(e * (1 - e) / total), (obs_p, exp_p)
    assert abs(exp_p[0] - probs[0]) < 0.05  # cutting shifts the histogram only slightly


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
        # 4 binomial standard errors, plus the one cut span per 400-token row (< 1/200 of the spans)
        assert abs(o - e) < 4 * math.sqrt(e * (1 - e) / total) + 0.01, f"p({n}): observed {o:.3f}, expected {e:.3f}"


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
    assert n == B * row_budget_bounds(T, 0.5)[0]  # 0.5 * 200 is an integer: no rounding at all
    replaced = masked[t][changed]
    assert (replaced >= N_SPECIAL).all() and (replaced < VOCAB).all()


def test_target_slots_is_a_shape_function_above_the_budget():
    for cfg in CONFIGS:
        slots = [cfg.target_slots(n) for n in range(0, 3000, 7)]
        assert slots == sorted(slots)  # monotone in the batch size
        for n, k in zip(range(0, 3000, 7), slots):
            assert cfg.budget * n <= k <= n
            if n >= 100:  # three "standard deviations" of margin: sqrt(budget * n * longest span)
                longest = 1 if cfg.type == "token" else cfg.max_span
                assert k - cfg.budget * n >= 3 * math.sqrt(cfg.budget * n * longest)
    with pytest.raises(ValueError):
        CONFIGS[0].target_slots(-1)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_static_targets_do_not_change_the_masks_of_real_batches(cfg):
    """static_targets changes the MLM head's shape, not the recipe: on tweet-like batches the cap
    target_slots(B * T) never binds, so the masks are those of dynamic masking, bit for bit."""
    from dataclasses import replace

    static = replace(cfg, static_targets=True)
    g = torch.Generator().manual_seed(60)
    for seed in range(20):
        ids, attention = tweet_pairs(32, 3, 40, g)
        maskable = maskable_positions(ids, attention)
        word_starts = torch.rand(ids.shape, generator=g) < 0.6
        a = mask_tokens(ids, maskable, cfg, VOCAB, word_starts, torch.Generator().manual_seed(seed))
        b = mask_tokens(ids, maskable, static, VOCAB, word_starts, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert int((b[1] != IGNORE_INDEX).sum()) < static.target_slots(ids.numel())


@pytest.mark.parametrize("cfg", CONFIGS[1:3], ids=IDS[1:3])
def test_cap_drops_whole_random_spans(cfg):
    ids, attention, word_starts = pair_batch(64, 20, seed=20)
    maskable = maskable_positions(ids, attention)
    full = select_targets(maskable, cfg, word_starts, torch.Generator().manual_seed(3))
    n_full = int(full.targets.sum())
    for K in (0, 1, n_full // 2, n_full - 1, n_full, n_full + 5):
        capped = select_targets(maskable, cfg, word_starts, torch.Generator().manual_seed(3), max_targets=K)
        assert int(capped.targets.sum()) == min(K, n_full)
        assert not (capped.targets & ~full.targets).any()  # a subset of the uncapped selection
        assert torch.equal(capped.targets, capped.span_ids >= 0)
        kept = spans_of(capped.span_ids)
        whole = {tuple(s) for s in spans_of(full.span_ids)}
        partial = [s for s in kept if tuple(s) not in whole]
        assert len(partial) <= 1  # whole spans are dropped; at most one is cut at the boundary
        for s in partial:
            assert s == list(range(s[0], s[-1] + 1)) and any(tuple(s) == w[: len(s)] for w in whole)


def test_rows_without_maskable_tokens():
    ids = torch.tensor([[CLS_ID, SEP_ID, SEP_ID, PAD_ID], [CLS_ID, 7, SEP_ID, SEP_ID], [CLS_ID, UNK_ID, SEP_ID, PAD_ID]])
    hits = 0
    trials = 400
    for cfg in CONFIGS:
        for seed in range(trials // len(CONFIGS)):
            g = torch.Generator().manual_seed(seed)
            masked, labels = mask_tokens(ids, maskable_positions(ids), cfg, VOCAB, torch.ones_like(ids, dtype=torch.bool), g)
            per_row = (labels != IGNORE_INDEX).sum(dim=1).tolist()
            assert per_row[0] == 0 and per_row[2] == 0 and per_row[1] in (0, 1)
            if per_row[1]:
                assert labels[1, 1] == 7
                hits += 1
    # the single maskable token is a target with probability budget (no "at least one per row" rule)
    p = CONFIGS[0].budget
    assert abs(hits / trials - p) < 4 * math.sqrt(p * (1 - p) / trials)
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
        assert sum(got) <= cfg.target_slots(ids.numel())
    if cfg.type == "token" and not static:
        for nb, g in zip(n, got):
            assert g in row_budget_bounds(nb, budget)
    for nb, g in zip(n, got):
        assert 0 <= g <= nb
