"""Ragged token arrays as numpy ``(values (N,), offsets (n+1,))``, Arrow's list layout, handled
without per-row Python loops: row lengths, gathering rows, truncating rows, hashing rows."""

from __future__ import annotations

import numpy as np


def lengths(offsets: np.ndarray) -> np.ndarray:
    return np.diff(offsets)


def take(values: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` of a ragged array (``-1`` = an empty row)."""
    idx = np.asarray(idx, dtype=np.int64)
    real = idx >= 0
    safe = np.where(real, idx, 0)
    lens = np.where(real, offsets[safe + 1] - offsets[safe], 0)  # (k,)
    new_off = np.zeros(idx.size + 1, dtype=np.int64)
    np.cumsum(lens, out=new_off[1:])
    # source position of every output value: row start in the source + position inside the row
    src = np.repeat(offsets[safe] - new_off[:-1], lens) + np.arange(new_off[-1], dtype=np.int64)
    return values[src], new_off


def truncate(values: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the first ``max_len`` tokens of every row; also return how many rows were cut."""
    lens = lengths(offsets)
    if lens.size == 0 or lens.max() <= max_len:
        return values, offsets, 0
    pos = np.arange(values.size, dtype=np.int64) - np.repeat(offsets[:-1], lens)  # position in its row
    new_off = np.zeros_like(offsets)
    np.cumsum(np.minimum(lens, max_len), out=new_off[1:])
    return values[pos < max_len], new_off, int((lens > max_len).sum())


def fingerprints(values: np.ndarray, offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n,) uint64 hash of every row's token sequence (position-weighted sum mod 2**64, plus length).

    Lets us compare token sequences of whole batches at once; a false "equal" has probability ~2**-64.
    """
    lens = lengths(offsets)
    pos = np.arange(values.size, dtype=np.int64) - np.repeat(offsets[:-1], lens)
    terms = (values.astype(np.uint64) + np.uint64(1)) * weights[pos]  # wraps mod 2**64, on purpose
    csum = np.zeros(values.size + 1, dtype=np.uint64)
    np.cumsum(terms, out=csum[1:])
    return csum[offsets[1:]] - csum[offsets[:-1]] + lens.astype(np.uint64) * weights[-1]
