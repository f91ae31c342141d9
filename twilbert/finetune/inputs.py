"""Model inputs of a task: normalise, tokenise, lay out, batch.

Inputs are ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with each segment truncated on the right to
``max_len`` tokens, padded on the right per batch with an attention mask (the original left-padded
each segment to a length bucket and attended to the pads: docs/deviations.md#right-padding-attention-mask). Everything is
vectorised over whole columns (polars, SentencePiece's thread pool, numpy), and the same functions
serve training, evaluation and prediction (:mod:`twilbert.inference`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from twilbert.tokens import CLS_ID, PAD_ID, SEP_ID
from twilbert.text.normalize import EffectiveRules, NormalizeRules, normalize_expr
from twilbert.text.tokenizer import Tokenizer

if TYPE_CHECKING:
    from twilbert.finetune.data import TaskSplit


@dataclass
class EncodedSplit:
    """Token ids of a split, flat (Arrow-style): example ``i`` is ``values[offsets[i]:offsets[i+1]]``.

    ``len_a`` is the length of ``[CLS] a [SEP]``; the token type is 1 from there on (segment b).
    """

    values: np.ndarray  # (M,) int64
    offsets: np.ndarray  # (N+1,) int64
    len_a: np.ndarray  # (N,) int64
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (N,)



# --------------------------------------------------------------------------------------------------
# normalisation and tokenisation


def normalize_column(texts: Sequence[str], rules: EffectiveRules | NormalizeRules | None) -> list[str]:
    """The project's normaliser over a whole column (``rules=None``: texts unchanged)."""
    if rules is None:
        return list(texts)
    df = pl.DataFrame({"t": list(texts)}, schema={"t": pl.String})
    return df.select(normalize_expr(pl.col("t"), rules))["t"].to_list()


def _truncated(values: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``max_len`` tokens of every row of a flat (values, offsets) list."""
    lengths = np.diff(offsets)  # (N,)
    keep = np.minimum(lengths, max_len)  # (N,)
    pos = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)  # (M,) position within its row
    return values[pos < np.repeat(keep, lengths)].astype(np.int64), keep


def _scatter_rows(out: np.ndarray, dest_start: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> None:
    """``out[dest_start[i] : dest_start[i] + lengths[i]] = row i of values``, for all rows at once."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    pos = np.arange(len(values)) - np.repeat(starts, lengths)  # (M,)
    out[np.repeat(dest_start, lengths) + pos] = values


def encode_texts(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    aux_texts: Sequence[str] | None,
    *,
    max_len: int,
    rules: EffectiveRules | NormalizeRules | None,
    labels: np.ndarray | None = None,
    num_threads: int = 0,
) -> EncodedSplit:
    """Normalise, tokenise (SentencePiece thread pool), truncate each segment to ``max_len`` and lay
    out ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` (the layout of ``tokenizer.build_input``; a pair
    keeps its second ``[SEP]`` even when b normalises to nothing). Vectorised over the whole column.
    Used for training data and, later, for prediction."""
    va, la = _truncated(*tokenizer.encode_flat(normalize_column(texts, rules), num_threads=num_threads), max_len)
    lengths = la + 2
    if aux_texts is not None:
        vb, lb = _truncated(*tokenizer.encode_flat(normalize_column(aux_texts, rules), num_threads=num_threads), max_len)
        lengths = lengths + lb + 1
    offsets = np.zeros(len(la) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.int64)
    out[offsets[:-1]] = CLS_ID
    _scatter_rows(out, offsets[:-1] + 1, va, la)
    out[offsets[:-1] + la + 1] = SEP_ID
    if aux_texts is not None:
        _scatter_rows(out, offsets[:-1] + la + 2, vb, lb)
        out[offsets[1:] - 1] = SEP_ID
    if labels is None:
        labels = np.zeros(len(la), dtype=np.float32)
    return EncodedSplit(values=out, offsets=offsets, len_a=la + 2, labels=labels)


def encode_split(split: TaskSplit, tokenizer: Tokenizer, *, max_len: int, rules, num_threads: int = 0) -> EncodedSplit:
    return encode_texts(tokenizer, split.texts, split.aux_texts, max_len=max_len, rules=rules, labels=split.labels, num_threads=num_threads)


# --------------------------------------------------------------------------------------------------
# batching


@dataclass
class Batch:
    index: np.ndarray  # (B,) example indices into the split
    input_ids: torch.Tensor  # (B, T) long
    token_type_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) bool, True = real token
    labels: torch.Tensor  # (B,) long | (B, C) float | (B,) float

    def to(self, device) -> "Batch":
        nb = torch.device(device).type == "cuda"
        return Batch(
            self.index,
            self.input_ids.to(device, non_blocking=nb),
            self.token_type_ids.to(device, non_blocking=nb),
            self.attention_mask.to(device, non_blocking=nb),
            self.labels.to(device, non_blocking=nb),
        )


def collate(data: EncodedSplit, index: np.ndarray) -> Batch:
    """Right-pad examples ``index`` to the batch's longest, vectorised (no per-token Python)."""
    starts, lengths = data.offsets[index], data.lengths[index]  # (B,), (B,)
    T = int(lengths.max())
    pos = np.arange(T)[None, :]  # (1, T)
    mask = pos < lengths[:, None]  # (B, T)
    gather = np.minimum(starts[:, None] + pos, max(len(data.values) - 1, 0))  # (B, T)
    ids = np.where(mask, data.values[gather], PAD_ID)  # (B, T)
    types = (pos >= data.len_a[index][:, None]) & mask  # (B, T)
    return Batch(
        index=index,
        input_ids=torch.from_numpy(ids.astype(np.int64)),
        token_type_ids=torch.from_numpy(types.astype(np.int64)),
        attention_mask=torch.from_numpy(mask),
        labels=torch.from_numpy(np.ascontiguousarray(data.labels[index])),
    )


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Training batches of similar lengths, in a new random order every call.

    Shuffle all examples, cut the permutation into pools of ``pool * batch_size``, sort each pool by
    length (stable, so ties keep the random order), cut pools into batches, shuffle the batches. Less
    padding than random batches while every epoch sees different batches (the original re-seeded every
    epoch and so repeated one order, and its batches were whole length buckets: docs/deviations.md#finetune-batches).
    """
    perm = rng.permutation(len(lengths))
    batches = []
    size = pool * batch_size
    for start in range(0, len(perm), size):
        chunk = perm[start : start + size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def eval_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Deterministic batches sorted by length (least padding); callers scatter results back by index."""
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]



__all__ = ["Batch", "EncodedSplit", "bucketed_batches", "collate", "encode_split", "encode_texts", "eval_batches", "normalize_column"]
