"""Length-bucketed batch plans, the collator and masked batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.train.test_pretrain_fixtures import build_inputs
from twilbert.data.batching import LengthBucketBatches, MaskedBatches, PlanSampler, collate, mask_seed
from twilbert.data.shards import ShardDataset
from twilbert.model.config import MaskedLMConfig
from twilbert.text.tokenizer import Tokenizer, build_input
from twilbert.tokens import N_SPECIAL, PAD_ID


def all_batches(plan_maker: LengthBucketBatches, epoch: int) -> list[np.ndarray]:
    plan = plan_maker.plan(epoch)
    return [plan[p] for p in range(plan.n_batches)]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    batch_size=st.integers(1, 17),
    width=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 5),
)
def test_plan_covers_every_row_once_and_never_mixes_far_lengths(n, batch_size, width, seed, epoch):
    lengths = np.random.default_rng(seed).integers(3, 100, n).astype(np.uint16)
    maker = LengthBucketBatches(lengths, batch_size, width, seed)
    batches = all_batches(maker, epoch)
    rows = np.concatenate(batches)
    assert np.array_equal(np.sort(rows), np.arange(n))  # every row exactly once
    for b in batches:
        assert 1 <= b.size <= batch_size
        spread = int(lengths[b].max()) - int(lengths[b].min())
        assert spread < width
        assert np.unique(lengths[b] // width).size == 1  # one bucket per batch
    # only the last batch of a bucket may be partial: at most one partial batch per bucket
    n_buckets = np.unique(lengths // width).size
    assert sum(b.size < batch_size for b in batches) <= n_buckets
    assert len(batches) == maker.n_batches == len(maker)


def test_plan_is_a_function_of_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(5, 90, 500)
    a = all_batches(LengthBucketBatches(lengths, 16, 8, seed=7), epoch=3)
    b = all_batches(LengthBucketBatches(lengths, 16, 8, seed=7), epoch=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other_epoch = all_batches(LengthBucketBatches(lengths, 16, 8, seed=7), epoch=4)
    other_seed = all_batches(LengthBucketBatches(lengths, 16, 8, seed=8), epoch=3)
    assert not all(np.array_equal(x, y) for x, y in zip(a, other_epoch))
    assert not all(np.array_equal(x, y) for x, y in zip(a, other_seed))
    # batches are shuffled across buckets, not emitted bucket by bucket
    first_bucket = [int(lengths[x[0]]) // 8 for x in a]
    assert first_bucket != sorted(first_bucket)


def test_max_tokens_caps_batches_of_long_buckets():
    lengths = np.r_[np.full(40, 10), np.full(40, 60)]
    maker = LengthBucketBatches(lengths, 32, 8, seed=0, max_tokens=256)
    for b in all_batches(maker, 0):
        longest_possible = (int(lengths[b[0]]) // 8 + 1) * 8 - 1
        assert b.size * longest_possible <= 256 or b.size == 1
    assert sorted(np.concatenate(all_batches(maker, 0)).tolist()) == list(range(80))


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ddp_ranks_partition_the_plan_with_equal_counts(world_size):
    lengths = np.random.default_rng(1).integers(5, 90, 301)
    single = LengthBucketBatches(lengths, 8, 8, seed=3)
    n = single.n_batches
    plan = single.plan(2)
    per_rank = []
    for r in range(world_size):
        maker = LengthBucketBatches(lengths, 8, 8, seed=3, world_size=world_size, rank=r)
        per_rank.append(list(maker.batches(2)))
    counts = {len(b) for b in per_rank}
    assert counts == {-(-n // world_size)}  # equal counts, ceil(n / W)
    positions = sorted(p for b in per_rank for p, _ in b)
    assert positions == list(range(len(per_rank[0]) * world_size))  # disjoint, covering the padded plan
    for r, batches in enumerate(per_rank):
        for p, rows in batches:
            assert p % world_size == r
            assert np.array_equal(rows, plan[p % n])  # same global plan; padding repeats from the start
    rows = np.concatenate([rows for b in per_rank for _, rows in b])
    assert set(rows.tolist()) == set(range(301))
    extra = len(per_rank[0]) * world_size - n
    assert rows.size == 301 + sum(plan[p].size for p in range(extra))  # only the padding repeats


def test_start_batch_skips_without_reshuffling():
    lengths = np.random.default_rng(2).integers(5, 90, 200)
    maker = LengthBucketBatches(lengths, 8, 8, seed=3, world_size=2, rank=1)
    full = list(maker.batches(1))
    resumed = list(maker.batches(1, start_batch=5))
    assert [p for p, _ in resumed] == [p for p, _ in full[5:]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(resumed, full[5:], strict=True))
    with pytest.raises(ValueError):
        list(maker.batches(1, start_batch=len(maker) + 1))


# --------------------------------------------------------------------------------------------------
# collate and masked batches on real shards


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("batching"))


def test_collate_matches_build_input_row_by_row(inputs):
    ds = ShardDataset(inputs["shards"], "train")
    table = Tokenizer.from_file(inputs["tokenizer"]).word_start_table()
    idx = np.array([0, 5, len(ds) - 1, 40, 41, 77])  # rows from several shards
    batch = collate(ds, idx, table, pad_to_multiple=8)
    B, T = batch["input_ids"].shape
    longest = int(ds.lengths[idx].max())
    assert T % 8 == 0 and longest <= T < longest + 8
    assert batch["n_real"] == int(ds.lengths[idx].sum()) and batch["n_padded"] == B * T
    for i, j in enumerate(idx):
        row = ds[int(j)]
        ids, types = build_input(row.a, row.b)  # the tokenizer's reference layout
        L = ids.size
        assert batch["input_ids"][i, :L].tolist() == ids.tolist()
        assert batch["token_type_ids"][i, :L].tolist() == types.tolist()
        assert (batch["input_ids"][i, L:] == PAD_ID).all() and (batch["token_type_ids"][i, L:] == 0).all()
        assert batch["attention_mask"][i].tolist() == [True] * L + [False] * (T - L)
        assert batch["word_starts"][i, :L].tolist() == table[ids].tolist()
        assert not batch["word_starts"][i, L:].any()
        assert int(batch["rop_labels"][i]) == (row.label if row.label >= 0 else -100)
    assert batch["attention_mask"].dtype == torch.bool


def test_masked_batches_are_deterministic_and_only_touch_targets(inputs):
    ds = ShardDataset(inputs["shards"], "train")
    masking = MaskedLMConfig(type="span", budget=0.3)
    mb = MaskedBatches(inputs["shards"], masking, inputs["vocab_size"], seed=11)
    idx = np.arange(16)
    a, b = mb[(2, 5, idx)], mb[(2, 5, idx)]
    other = mb[(2, 6, idx)]
    for key in ("input_ids", "mlm_labels"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["mlm_labels"], other["mlm_labels"])  # each plan position has its own mask
    clean = collate(ds, idx)
    targets = a["mlm_labels"] != -100
    assert a["n_targets"] == int(targets.sum()) > 0
    assert torch.equal(a["mlm_labels"][targets], clean["input_ids"][targets])  # labels are the original ids
    assert (clean["input_ids"][targets] >= N_SPECIAL).all()  # never a special token or padding
    assert torch.equal(a["input_ids"][~targets], clean["input_ids"][~targets])  # the rest is untouched
    assert a["n_rop"] == int((clean["rop_labels"] != -100).sum())
    assert mask_seed(11, 2, 5) != mask_seed(11, 2, 6) != mask_seed(11, 3, 5)


def test_worker_processes_give_the_same_batches(inputs):
    ds = ShardDataset(inputs["shards"], "train")
    maker = LengthBucketBatches(ds.lengths, 8, 4, seed=5)
    mb = MaskedBatches(inputs["shards"], MaskedLMConfig(), inputs["vocab_size"], seed=5)

    def run(workers):
        loader = torch.utils.data.DataLoader(mb, sampler=PlanSampler(maker, 1, 2), batch_size=None, num_workers=workers)
        return list(loader)

    inline, forked = run(0), run(2)
    assert len(inline) == len(maker) - 2
    for x, y in zip(inline, forked, strict=True):
        assert x["position"] == y["position"]
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["mlm_labels"], y["mlm_labels"])


def test_whole_word_masking_gets_the_word_start_table(inputs):
    table = Tokenizer.from_file(inputs["tokenizer"]).word_start_table()
    masking = MaskedLMConfig(type="word", budget=0.3)
    with pytest.raises(ValueError, match="word_starts"):  # no table: the masker refuses, nothing silent
        MaskedBatches(inputs["shards"], masking, inputs["vocab_size"], seed=1)[(0, 0, np.arange(16))]
    batch = MaskedBatches(inputs["shards"], masking, inputs["vocab_size"], seed=1, word_start_table=table)[(0, 0, np.arange(16))]
    clean = collate(ShardDataset(inputs["shards"], "train"), np.arange(16), table)
    targets = batch["mlm_labels"] != -100
    assert batch["n_targets"] == int(targets.sum()) > 0
    # whole words: a target continuation piece always follows a target piece of the same word
    continuation = targets & ~clean["word_starts"]
    prev_target = torch.nn.functional.pad(targets[:, :-1], (1, 0), value=False)
    run_start = clean["attention_mask"] & ~torch.nn.functional.pad(clean["input_ids"][:, :-1] >= N_SPECIAL, (1, 0), value=False)
    assert bool((continuation & ~prev_target & ~run_start).sum() == 0)
