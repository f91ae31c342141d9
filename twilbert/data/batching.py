"""Pre-training batches: a deterministic length-bucketed batch plan, the collator, and masked batches.

Why length buckets: tweet pairs range from ~15 to ~100 tokens. Right-padding random batches to their
longest row wastes about 30% of the compute; grouping rows of similar length first cuts that to a few
percent while keeping batches random. Measured (sentencepiece vocab of the sample, 46k real tweets from
``shared/data`` paired at random plus single tweets, lengths 19/77/99 at p5/p50/p95, batch 64): padding
waste 32% for random batches, **6.3%** with ``bucket_width=8`` and T rounded up to a multiple of 8 (3.3%
without the rounding); the bundled sample: 8.4% (40% random). Sequence packing would remove the rest,
but Reply Order Prediction needs one ``[CLS]`` per pair, so packed rows would need block-diagonal
attention masks and per-segment position ids (SDPA then falls back from its fastest kernels): not worth
~6%, so there is no packing.

The original bucketed each *segment* length on a 5-token grid and left-padded every segment, so PADs
sat inside the sequence and were attended to, and it emitted a batch whenever a bucket filled, so an
"epoch" was not one pass over the data (docs/deviations.md#right-padding-attention-mask and
#epoch-is-one-pass). Here every row appears exactly once per epoch, the order depends on
``(seed, epoch)``, and padding is on the right with an attention mask.

Determinism and resumption: the plan of an epoch is a pure function of ``(lengths, batch_size,
bucket_width, max_tokens, seed, epoch)``, and the mask of a batch a pure function of ``(seed, epoch,
position of the batch in the plan)``. Nothing here has state to save: a resumed run recomputes the plan
and skips the batches already done (``start_batch``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from twilbert.data.masking import mask_tokens, maskable_positions
from twilbert.data.shards import ShardDataset
from twilbert.model.config import MaskedLMConfig
from twilbert.tokens import IGNORE_INDEX, PAD_ID

_PLAN_TAG = 0x504C414E  # "PLAN": keeps the plan's random stream apart from the masks'
_MASK_TAG = 0x4D41534B  # "MASK"


# --------------------------------------------------------------------------------------------------
# batch plan


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's batches in order, as offsets into one permutation (no list of millions of arrays).

    Batch ``p`` of the plan is ``order[starts[p]:ends[p]]``. Positions past ``n_batches`` (DDP padding)
    repeat batches from the start, as ``DistributedSampler`` repeats indices.
    """

    order: np.ndarray  # (N,) row indices grouped by bucket, shuffled within buckets
    starts: np.ndarray  # (n_batches,) in plan order (batch order already shuffled)
    ends: np.ndarray  # (n_batches,)
    padded_len: int  # n_batches rounded up to a multiple of world_size

    @property
    def n_batches(self) -> int:
        return int(self.starts.size)

    def __len__(self) -> int:
        return self.padded_len

    def __getitem__(self, position: int) -> np.ndarray:
        if not 0 <= position < self.padded_len:
            raise IndexError(f"batch position {position} outside [0, {self.padded_len})")
        b = position % self.n_batches  # a padding position repeats batch (position - n_batches)
        return self.order[self.starts[b] : self.ends[b]].astype(np.int64)


class LengthBucketBatches:
    """Deterministic length-bucketed batches over ``lengths (N,)`` (``ShardDataset.lengths``).

    * Row ``i`` goes to bucket ``lengths[i] // bucket_width``, so within a batch ``max - min <
      bucket_width`` tokens. Tiny buckets are *not* merged: a bucket's last batch may be partial (at most
      one partial batch per bucket), so no row is dropped or duplicated within an epoch.
    * Per epoch: rows are shuffled within their bucket, cut into batches of ``batch_size`` sequences
      (fewer in a bucket whose padded token count would exceed ``max_tokens``, if given), and the batch
      order is shuffled, all from ``np.random.default_rng`` seeded by ``(seed, epoch)``.
    * DDP: the plan is the same on every rank; rank ``r`` takes positions ``r, r + W, r + 2W, ...``. The
      plan is padded to a multiple of ``W`` by repeating its first batches (as ``DistributedSampler``
      does with rows), so every rank runs the same number of batches; at most ``W - 1`` batches per
      epoch are seen twice. With one process there is no padding.

    The *position* of a batch in the plan (not its rank-local index) names it: masking seeds and the
    equivalence "W processes x accum A == 1 process x accum W*A" rest on it.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        bucket_width: int,
        seed: int,
        *,
        max_tokens: int | None = None,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or bucket_width < 1:
            raise ValueError(f"batch_size and bucket_width must be >= 1, got {batch_size}, {bucket_width}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or lengths.size == 0:
            raise ValueError("lengths must be a non-empty 1-D array (is the train split empty?)")
        self.batch_size, self.bucket_width, self.seed = batch_size, bucket_width, seed
        self.world_size, self.rank = world_size, rank
        self.n_rows = int(lengths.size)
        # uint8/uint16 bucket ids let numpy's stable sort use a radix sort: O(N) per epoch
        bucket = lengths.astype(np.int64) // bucket_width
        self._bucket = bucket.astype(np.uint16 if bucket.max() < 2**16 else np.int64)  # (N,)
        self.bucket_sizes = np.bincount(self._bucket)  # (n_buckets,) rows per bucket
        longest = np.maximum((np.arange(self.bucket_sizes.size) + 1) * bucket_width - 1, 1)  # longest row of a bucket
        cap = np.full(self.bucket_sizes.size, batch_size, dtype=np.int64)
        if max_tokens is not None:
            cap = np.clip(max_tokens // longest, 1, batch_size)
        self.bucket_batch_size = cap  # (n_buckets,)
        self.n_batches = int(np.sum(-(-self.bucket_sizes // cap)))  # global batches per epoch (fixed)

    def __len__(self) -> int:
        """Batches per epoch *per rank* (the padded plan split evenly)."""
        return math.ceil(self.n_batches / self.world_size)

    def plan(self, epoch: int) -> EpochPlan:
        """The whole (all ranks) plan of ``epoch``; identical on every rank."""
        rng = np.random.default_rng([self.seed, epoch, _PLAN_TAG])
        perm = rng.permutation(self.n_rows)  # (N,)
        order = perm[np.argsort(self._bucket[perm], kind="stable")]  # grouped by bucket, random inside
        order = order.astype(np.uint32 if self.n_rows < 2**32 else np.int64)
        bucket_start = np.concatenate([[0], np.cumsum(self.bucket_sizes)[:-1]])
        starts, ends = [], []
        for k, (begin, size, cap) in enumerate(zip(bucket_start, self.bucket_sizes, self.bucket_batch_size)):
            if size == 0:
                continue
            s = np.arange(begin, begin + size, cap)  # one entry per batch of bucket k (tens of buckets)
            starts.append(s)
            ends.append(np.minimum(s + cap, begin + size))
        starts, ends = np.concatenate(starts), np.concatenate(ends)  # (n_batches,)
        shuffle = rng.permutation(starts.size)
        padded = len(self) * self.world_size
        return EpochPlan(order=order, starts=starts[shuffle], ends=ends[shuffle], padded_len=padded)

    def positions(self, start_batch: int = 0) -> range:
        """Plan positions this rank runs, skipping its first ``start_batch`` (the resume cursor)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        return range(self.rank + start_batch * self.world_size, len(self) * self.world_size, self.world_size)

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """``(plan position, row indices)`` for this rank, from its ``start_batch``-th batch on."""
        plan = self.plan(epoch)
        for p in self.positions(start_batch):
            yield p, plan[p]


# --------------------------------------------------------------------------------------------------
# collation


def pad_length(T: int, multiple: int) -> int:
    return -(-T // multiple) * multiple if multiple > 1 else T


def collate(
    dataset: ShardDataset,
    indices: np.ndarray,
    word_start_table: np.ndarray | None = None,
    pad_to_multiple: int = 8,
    max_positions: int | None = None,
) -> dict:
    """Right-padded tensors for rows ``indices`` of ``dataset``.

    Returns ``input_ids`` (B, T) long (PAD = 0), ``token_type_ids`` (B, T) long, ``attention_mask``
    (B, T) bool (True = real token), ``rop_labels`` (B,) long (1 in order, 0 swapped, -100 for MLM-only
    rows, which the shards store as -1), ``word_starts`` (B, T) bool when a table is given (False on
    specials and padding), and plain ints ``n_real`` (non-pad tokens) and ``n_padded`` (B * T). T is
    the longest row rounded up to ``pad_to_multiple`` (tensor-core friendly shapes, and few distinct
    shapes for ``torch.compile``), but never past ``max_positions`` (the model's position table).
    """
    ids, types, labels = dataset.packed(indices)  # (B, T0), (B, T0), (B,) int64
    B, T0 = ids.shape
    T = pad_length(T0, pad_to_multiple)
    if max_positions is not None:
        T = max(T0, min(T, max_positions))
    if T > T0:
        ids = np.pad(ids, ((0, 0), (0, T - T0)), constant_values=PAD_ID)
        types = np.pad(types, ((0, 0), (0, T - T0)))
    mask = ids != PAD_ID  # (B, T)
    batch = {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(mask),
        "rop_labels": torch.from_numpy(np.where(labels < 0, IGNORE_INDEX, labels)),
        "n_real": int(mask.sum()),
        "n_padded": B * T,
    }
    if word_start_table is not None:
        batch["word_starts"] = torch.from_numpy(word_start_table[ids] & mask)  # (B, T)
    return batch


def mask_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of the masking generator of plan position ``position`` in ``epoch`` (63 bits)."""
    hi, lo = np.random.SeedSequence([seed, epoch, position, _MASK_TAG]).generate_state(2, np.uint32)
    return (int(hi) << 31) ^ int(lo)


class MaskedBatches(torch.utils.data.Dataset):
    """Map-style dataset: ``(epoch, plan position, row indices)`` -> a collated, masked batch.

    Meant for a ``DataLoader(batch_size=None)`` whose sampler yields those triples, so collation and
    masking run in worker processes when ``num_workers > 0``. The masking generator is a fresh
    ``torch.Generator`` seeded by :func:`mask_seed`: masks do not depend on workers, devices, ranks or
    on where a run was resumed. The shards are opened lazily in each process (memory maps are not
    pickled). Adds ``mlm_labels`` (B, T) (-100 off target), ``n_targets`` and ``n_rop`` (labelled
    rows; 0 without ROP) to :func:`collate`'s dict; ``input_ids`` are the corrupted ids. Under
    ``masked_lm.static_targets`` also ``mlm_slots`` (int): the MLM head's fixed row count for the batch.
    """

    def __init__(
        self,
        shards_dir: str | Path,
        masking: MaskedLMConfig,
        vocab_size: int,
        seed: int,
        *,
        split: str = "train",
        word_start_table: np.ndarray | None = None,
        use_rop: bool = True,
        pad_to_multiple: int = 8,
        max_positions: int | None = None,
    ) -> None:
        self.shards_dir, self.split = Path(shards_dir), split
        self.masking, self.vocab_size, self.seed = masking, vocab_size, seed
        self.word_start_table = word_start_table
        self.use_rop, self.pad_to_multiple, self.max_positions = use_rop, pad_to_multiple, max_positions
        self._ds: ShardDataset | None = None

    @property
    def dataset(self) -> ShardDataset:
        if self._ds is None:
            self._ds = ShardDataset(self.shards_dir, self.split)
        return self._ds

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ds": None}

    def __len__(self) -> int:  # not used by the sampler-driven loader; for completeness
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int, np.ndarray]) -> dict:
        epoch, position, indices = item
        table = self.word_start_table if self.masking.type == "word" else None
        batch = collate(self.dataset, indices, table, self.pad_to_multiple, self.max_positions)
        generator = torch.Generator().manual_seed(mask_seed(self.seed, epoch, position))
        ids = batch["input_ids"]
        maskable = maskable_positions(ids, batch["attention_mask"])  # (B, T)
        # static_targets: the MLM head gathers exactly K rows for this (B, T) shape; masking caps at K
        slots = self.masking.target_slots(ids.numel()) if self.masking.static_targets else None
        masked, labels = mask_tokens(ids, maskable, self.masking, self.vocab_size, batch.get("word_starts"), generator, slots)
        batch["input_ids"], batch["mlm_labels"] = masked, labels
        batch["n_targets"] = int((labels != IGNORE_INDEX).sum())
        if slots is not None:
            batch["mlm_slots"] = slots  # pass as TWilBERT(..., mlm_slots=...)
        batch["n_rop"] = int((batch["rop_labels"] != IGNORE_INDEX).sum()) if self.use_rop else 0
        batch["position"] = position
        return batch


class PlanSampler:
    """Yields ``(epoch, position, indices)`` for one rank's share of an epoch, from ``start_batch`` on."""

    def __init__(self, batches: LengthBucketBatches, epoch: int, start_batch: int = 0) -> None:
        self.batches, self.epoch, self.start_batch = batches, epoch, start_batch

    def __len__(self) -> int:
        return len(self.batches) - self.start_batch

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        for position, indices in self.batches.batches(self.epoch, self.start_batch):
            yield self.epoch, position, indices


__all__ = [
    "EpochPlan",
    "LengthBucketBatches",
    "MaskedBatches",
    "PlanSampler",
    "collate",
    "mask_seed",
    "pad_length",
]
