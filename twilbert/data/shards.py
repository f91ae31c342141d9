"""Reading the pair shards written by ``twilbert.data.pairs``: memory-mapped, zero-copy, torch-free.

Each shard is an Arrow IPC *file* (random access, uncompressed) opened with ``pa.memory_map``, so
opening a split costs milliseconds and the OS page cache is shared by DataLoader workers. (polars 2.x
``read_ipc(memory_map=True)`` raises ``TypeError``, so we use pyarrow directly.)

Token ids come back as numpy views of the shard's ``uint16`` (or ``uint32``) buffers; :meth:`ShardDataset.packed`
builds right-padded ``[CLS] a [SEP] b [SEP]`` batches without a per-token Python loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from twilbert.data.shard_format import SPLITS, ShardError, load_manifest, open_shard, verify_manifest
from twilbert.tokens import CLS_ID, PAD_ID, SEP_ID


def open_split(out_dir: str | Path, split: str) -> list[pa.Table]:
    """The split's shards as memory-mapped tables, in manifest order (an empty split gives [])."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    manifest = load_manifest(out_dir)
    return [open_shard(Path(out_dir) / sh["file"]) for sh in manifest["shards"][split]]


@dataclass(frozen=True)
class Row:
    a: np.ndarray  # (La,) token ids, a view into the shard
    b: np.ndarray  # (Lb,) token ids; empty for MLM-only rows
    label: int  # 1 in order, 0 negative, -1 MLM only
    pair_id: int
    length: int  # tokens of [CLS] a [SEP] (b [SEP])


def iter_rows(out_dir: str | Path, split: str) -> Iterator[Row]:
    """Every row of a split, in file order (for inspection and tests; training uses ShardDataset)."""
    ds = ShardDataset(out_dir, split)
    for i in range(len(ds)):
        yield ds[i]


class ShardDataset:
    """All rows of one split as one indexable dataset over memory-mapped shards.

    ``lengths`` and ``labels`` are materialised (small, needed for length bucketing and balance
    checks); token ids stay in the mapped files until a row is fetched.
    """

    def __init__(self, out_dir: str | Path, split: str):
        self.manifest = load_manifest(out_dir)
        self.split = split
        self._pieces = []  # one per record batch: (a_values, a_offsets, b_values, b_offsets, pair_ids)
        starts, lengths, labels = [0], [], []
        for table in open_split(out_dir, split):
            for batch in table.to_batches():
                a, b = batch.column("a"), batch.column("b")
                self._pieces.append(
                    (
                        a.values.to_numpy(),  # zero copy: the list child buffer
                        a.offsets.to_numpy(),
                        b.values.to_numpy(),
                        b.offsets.to_numpy(),
                        batch.column("pair_id").to_numpy(),
                    )
                )
                lengths.append(batch.column("length").to_numpy())
                labels.append(batch.column("label").to_numpy())
                starts.append(starts[-1] + batch.num_rows)
        self._starts = np.asarray(starts, dtype=np.int64)
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.uint16)  # (N,)
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int8)  # (N,)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        piece = np.searchsorted(self._starts, idx, side="right") - 1
        return piece, idx - self._starts[piece]

    def __getitem__(self, i: int) -> Row:
        (p,), (j,) = self._locate(np.array([int(i)], dtype=np.int64))
        av, ao, bv, bo, pid = self._pieces[p]
        return Row(av[ao[j] : ao[j + 1]], bv[bo[j] : bo[j + 1]], int(self.labels[i]), int(pid[j]), int(self.lengths[i]))

    def rows(self, indices: Sequence[int] | np.ndarray) -> list[Row]:
        return [self[int(i)] for i in indices]

    def packed(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A right-padded batch: ``ids`` (B, T) int64, ``token_type_ids`` (B, T) int64, ``labels`` (B,) int64.

        T = the longest row in the batch. Padding is ``[PAD]`` (=0) with token type 0; the attention
        mask is ``ids != PAD_ID``. Rows are ``[CLS] a [SEP] b [SEP]`` or ``[CLS] a [SEP]`` (b empty).
        """
        idx = np.asarray(indices, dtype=np.int64)
        piece, local = self._locate(idx)
        B = idx.size
        seg_len = np.zeros((2, B), dtype=np.int64)  # (2, B): len(a), len(b)
        rows: list[list[np.ndarray]] = [[], []]  # per segment: batch row, position in segment, token
        pos: list[list[np.ndarray]] = [[], []]
        tok: list[list[np.ndarray]] = [[], []]
        for p in np.unique(piece):  # one vectorised gather per shard piece touched
            sel = np.flatnonzero(piece == p)  # (k,) batch rows stored in this piece
            av, ao, bv, bo, _ = self._pieces[p]
            for s, (values, offsets) in enumerate(((av, ao), (bv, bo))):
                start = offsets[local[sel]].astype(np.int64)
                lens = offsets[local[sel] + 1].astype(np.int64) - start  # (k,)
                seg_len[s, sel] = lens
                within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)  # (n_tok,)
                rows[s].append(np.repeat(sel, lens))
                pos[s].append(within)
                tok[s].append(values[np.repeat(start, lens) + within])
        la, lb = seg_len
        has_b = lb > 0
        length = la + 2 + np.where(has_b, lb + 1, 0)  # (B,)
        T = int(length.max()) if B else 0
        ids = np.full((B, T), PAD_ID, dtype=np.int64)
        types = np.zeros((B, T), dtype=np.int64)
        ar = np.arange(B)
        if B:
            a_row, a_pos, a_tok = (np.concatenate(x) for x in (rows[0], pos[0], tok[0]))
            b_row, b_pos, b_tok = (np.concatenate(x) for x in (rows[1], pos[1], tok[1]))
            ids[:, 0] = CLS_ID
            ids[a_row, 1 + a_pos] = a_tok  # a after [CLS]
            ids[ar, la + 1] = SEP_ID
            ids[b_row, la[b_row] + 2 + b_pos] = b_tok  # b after [CLS] a [SEP]
            types[b_row, la[b_row] + 2 + b_pos] = 1
            ids[ar[has_b], length[has_b] - 1] = SEP_ID
            types[ar[has_b], length[has_b] - 1] = 1
        return ids, types, self.labels[idx].astype(np.int64)


# ShardError, load_manifest, verify_manifest and SPLITS belong to shard_format; re-exported for readers.
__all__ = ["ShardDataset", "ShardError", "Row", "open_split", "iter_rows", "verify_manifest", "load_manifest", "SPLITS"]
