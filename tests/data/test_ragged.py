"""Ragged token arrays (values + offsets): gathering, truncating and hashing rows without loops."""

from __future__ import annotations

import numpy as np

from twilbert.data.ragged import fingerprints, lengths, take, truncate


def _ragged(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    return np.array([t for r in rows for t in r], dtype=np.int64), offsets


def _rows(values: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [values[offsets[i] : offsets[i + 1]].tolist() for i in range(offsets.size - 1)]


ROWS = [[5, 6, 7], [], [8], [9, 10, 11, 12, 13]]


def test_take_gathers_rows_and_minus_one_is_empty():
    values, offsets = _ragged(ROWS)
    assert lengths(offsets).tolist() == [3, 0, 1, 5]
    got = take(values, offsets, np.array([3, -1, 0, 0, 2]))
    assert _rows(*got) == [ROWS[3], [], ROWS[0], ROWS[0], ROWS[2]]
    assert _rows(*take(values, offsets, np.array([], dtype=np.int64))) == []


def test_truncate_keeps_the_first_tokens_and_counts_the_rows_cut():
    values, offsets = _ragged(ROWS)
    v, o, cut = truncate(values, offsets, 2)
    assert _rows(v, o) == [[5, 6], [], [8], [9, 10]] and cut == 2
    v, o, cut = truncate(values, offsets, 5)
    assert v is values and o is offsets and cut == 0  # nothing to cut: no copy


def test_fingerprints_tell_sequences_apart_by_content_order_and_length():
    rows = [[1, 2], [2, 1], [1, 2], [1, 2, 0], [], [0]]
    values, offsets = _ragged(rows)
    weights = np.random.default_rng(0).integers(1, 2**63, size=8, dtype=np.uint64)
    fp = fingerprints(values, offsets, weights)
    assert fp[0] == fp[2]
    assert len({int(fp[i]) for i in (0, 1, 3, 4, 5)}) == 5
