"""Writing pair shards: one buffer per split, flushed as fixed-size shards of one record batch each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from twilbert.data.shard_format import LABELS, shard_file, split_counts, token_dtype
from twilbert.utils import atomic_write, sha256_file


@dataclass
class Rows:
    """A block of output rows as numpy arrays (ragged ``a``/``b`` stored as values + per-row lengths)."""

    a_values: np.ndarray
    a_lens: np.ndarray
    b_values: np.ndarray
    b_lens: np.ndarray
    label: np.ndarray
    pair_id: np.ndarray

    def __len__(self) -> int:
        return self.label.size

    @property
    def length(self) -> np.ndarray:
        """Tokens of ``[CLS] a [SEP] b [SEP]``, or ``[CLS] a [SEP]`` when b is empty."""
        return self.a_lens + self.b_lens + np.where(self.b_lens > 0, 3, 2)

    def to_arrow(self, schema: pa.Schema) -> pa.Table:
        """Fresh, unsliced Arrow arrays: identical rows always give identical buffers (and bytes)."""

        def offsets(lens: np.ndarray) -> pa.Array:
            off = np.zeros(lens.size + 1, dtype=np.int32)
            np.cumsum(lens, out=off[1:])
            return pa.array(off)

        tok = schema.field("a").type
        return pa.table(
            {
                "a": pa.ListArray.from_arrays(offsets(self.a_lens), pa.array(self.a_values), type=tok),
                "b": pa.ListArray.from_arrays(offsets(self.b_lens), pa.array(self.b_values), type=tok),
                "label": pa.array(self.label.astype(np.int8)),
                "pair_id": pa.array(self.pair_id.astype(np.uint64)),
                "length": pa.array(self.length.astype(np.uint16)),
            },
            schema=schema,
        )


class SplitWriter:
    """Buffers rows of one split and writes shards of exactly ``rows_per_shard`` rows (the last: the rest).

    Shards are cut at fixed row counts whatever the chunking, and each is one record batch built from
    fresh arrays, so the bytes depend only on the rows (determinism) and readers get contiguous
    zero-copy columns.

    Memory: rows are copied as they come into one preallocated buffer per split (at most
    ``rows_per_shard`` rows; token arrays grow by doubling up to what a shard needs, then are reused),
    and a shard is written straight from that buffer (zero copy into Arrow), so a split costs about
    one shard of rows whatever the corpus size, with no per-flush concatenation.
    """

    def __init__(self, out_dir: Path, split: str, schema: pa.Schema, rows_per_shard: int, hist_size: int):
        self.out_dir = out_dir
        self.split, self.schema, self.rows_per_shard = split, schema, rows_per_shard
        tok = token_dtype(schema)
        cap = min(rows_per_shard, 1 << 16)  # rows; grows by doubling up to rows_per_shard
        self._lens = np.zeros((2, cap), dtype=np.int32)  # (2, cap): len(a), len(b) of each buffered row
        self._label = np.zeros(cap, dtype=np.int8)
        self._pair_id = np.zeros(cap, dtype=np.uint64)
        self._values = [np.zeros(cap * 16, dtype=tok), np.zeros(cap * 16, dtype=tok)]  # a, b tokens; grow
        self.n_pending = 0  # rows in the buffer
        self._n_tok = [0, 0]  # tokens of a and b in the buffer
        self.max_pending = 0  # high-water mark of buffered rows (tests check it never passes rows_per_shard)
        self.shards: list[dict] = []
        self.hist = np.zeros(hist_size, dtype=np.int64)
        self.labels = dict.fromkeys(LABELS.values(), 0)  # rows per label value

    def add(self, rows: Rows) -> None:
        if len(rows) == 0:
            return
        self.hist += np.bincount(rows.length, minlength=self.hist.size)
        for k in self.labels:
            self.labels[k] += int((rows.label == k).sum())
        lens = (rows.a_lens, rows.b_lens)
        ends = [np.cumsum(x) for x in lens]  # token end of each row of the block, per segment
        vals = (rows.a_values, rows.b_values)
        i, n = 0, len(rows)
        while i < n:
            take = min(n - i, self.rows_per_shard - self.n_pending)
            r0, r1 = self.n_pending, self.n_pending + take
            self._reserve_rows(r1)
            for s in (0, 1):
                t_start = int(ends[s][i - 1]) if i else 0
                t_end = int(ends[s][i + take - 1])
                t0 = self._n_tok[s]
                t1 = t0 + t_end - t_start
                self._reserve_tokens(s, t1)
                self._values[s][t0:t1] = vals[s][t_start:t_end]
                self._lens[s, r0:r1] = lens[s][i : i + take]
                self._n_tok[s] = t1
            self._label[r0:r1] = rows.label[i : i + take]
            self._pair_id[r0:r1] = rows.pair_id[i : i + take]
            self.n_pending = r1
            self.max_pending = max(self.max_pending, r1)
            i += take
            if self.n_pending == self.rows_per_shard:
                self._flush()

    def close(self) -> None:
        if self.n_pending:
            self._flush()

    def _reserve_rows(self, need: int) -> None:
        cap = self._label.size
        if need <= cap:
            return
        new = min(self.rows_per_shard, max(need, 2 * cap))
        lens = np.zeros((2, new), dtype=self._lens.dtype)
        lens[:, :cap] = self._lens
        label, pair_id = np.zeros(new, dtype=np.int8), np.zeros(new, dtype=np.uint64)
        label[:cap], pair_id[:cap] = self._label, self._pair_id
        self._lens, self._label, self._pair_id = lens, label, pair_id

    def _reserve_tokens(self, s: int, need: int) -> None:
        old = self._values[s]
        if need <= old.size:
            return
        new = np.zeros(max(need, 2 * old.size), dtype=old.dtype)
        new[: self._n_tok[s]] = old[: self._n_tok[s]]
        self._values[s] = new

    def _flush(self) -> None:
        n = self.n_pending
        (na, nb), lens = self._n_tok, self._lens[:, :n]
        shard = Rows(self._values[0][:na], lens[0], self._values[1][:nb], lens[1], self._label[:n], self._pair_id[:n])
        file = shard_file(self.split, len(self.shards))
        path = self.out_dir / file

        def write(tmp: Path) -> None:  # complete under its final name, or not there at all
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, self.schema) as writer:
                writer.write_table(shard.to_arrow(self.schema), max_chunksize=max(n, 1))

        atomic_write(path, write)
        del shard  # the Arrow arrays were views of the buffer, which the next rows overwrite
        self.n_pending, self._n_tok = 0, [0, 0]
        self.shards.append({"file": file, "rows": n, "sha256": sha256_file(path)})

    def counts(self) -> dict[str, int]:
        """The manifest's ``rows`` entry of this split."""
        return split_counts(sum(sh["rows"] for sh in self.shards), self.labels)
