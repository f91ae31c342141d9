"""The split writer: shards of exactly ``rows_per_shard`` rows whatever the blocks it is fed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from twilbert.data.shard_format import open_shard, shard_schema
from twilbert.data.shard_writer import Rows, SplitWriter


def _rows(n: int) -> Rows:
    a_lens = np.arange(n) % 3 + 1  # 1..3 tokens
    b_lens = np.arange(n) % 2  # b empty on every other row
    return Rows(
        a_values=np.arange(int(a_lens.sum()), dtype=np.uint16) + 10,
        a_lens=a_lens,
        b_values=np.full(int(b_lens.sum()), 7, dtype=np.uint16),
        b_lens=b_lens,
        label=np.where(b_lens > 0, 1, -1).astype(np.int8),
        pair_id=np.arange(n, dtype=np.uint64),
    )


def _slice(rows: Rows, i: int, j: int) -> Rows:
    a0, a1 = int(rows.a_lens[:i].sum()), int(rows.a_lens[:j].sum())
    b0, b1 = int(rows.b_lens[:i].sum()), int(rows.b_lens[:j].sum())
    a, b = rows.a_values[a0:a1], rows.b_values[b0:b1]
    return Rows(a, rows.a_lens[i:j], b, rows.b_lens[i:j], rows.label[i:j], rows.pair_id[i:j])


def _write(tmp_path, blocks: list[int], rows_per_shard: int) -> SplitWriter:
    """The same rows, fed in blocks of the given sizes."""
    (tmp_path / "train").mkdir(parents=True)
    w = SplitWriter(tmp_path, "train", shard_schema(100), rows_per_shard, hist_size=12)
    rows, start = _rows(sum(blocks)), 0
    for n in blocks:
        w.add(_slice(rows, start, start + n))
        start += n
    w.close()
    return w


def test_shards_are_cut_at_fixed_row_counts_whatever_the_blocks(tmp_path):
    a = _write(tmp_path / "a", [5, 1, 17, 3], rows_per_shard=7)
    b = _write(tmp_path / "b", [26], rows_per_shard=7)
    assert [sh["rows"] for sh in a.shards] == [7, 7, 7, 5]
    assert [sh["file"] for sh in a.shards] == [f"train/shard-{i:05d}.arrow" for i in range(4)]
    assert [sh["sha256"] for sh in a.shards] == [sh["sha256"] for sh in b.shards]
    assert a.max_pending <= 7


def test_rows_round_trip_with_their_lengths_and_counts(tmp_path):
    w = _write(tmp_path, [4, 6], rows_per_shard=4)
    table = pa.concat_tables([open_shard(tmp_path / sh["file"]) for sh in w.shards])
    assert table.num_rows == 10 and table.schema == shard_schema(100)
    length = [len(a) + len(b) + (3 if b else 2) for a, b in zip(table["a"].to_pylist(), table["b"].to_pylist())]
    assert table["length"].to_pylist() == length
    assert table["pair_id"].to_pylist() == list(range(10))
    assert w.counts() == {"total": 10, "positive": 5, "negative": 0, "mlm_only": 5}
    assert w.hist.sum() == 10 and w.hist[length[0]] >= 1
