"""Reply Order Prediction examples, tokenised once and written as Arrow IPC shards per split.

Input: the normalise stage's parquet files (text already normalised):
  pairs  ``orig_id, orig_text, reply_id, reply_text`` -> ROP rows (and MLM on both segments);
  tweets ``id, text``                                 -> MLM-only rows (``b`` empty, label -1).

Output: ``out_dir/{train,valid,test}/shard-00000.arrow ...`` with columns ``a, b: list<uint16>``
(``uint32`` when vocab_size > 65536), ``label: int8`` (1 in order, 0 negative, -1 MLM only),
``pair_id: uint64`` and ``length: uint16`` (= len(a) + len(b) + 3, or len(a) + 2 when b is empty),
plus ``out_dir/manifest.json`` (counts that reconcile, rejects by reason, length histograms, shard
checksums, tokenizer hash, config).

Relation to the original ``DataGenerator`` (inventory §4), and deviations:

* ``negatives: swap`` is the original: each pair gives (tweet, reply, 1) and (reply, tweet, 0), so
  labels are exactly 50/50 in every split. ``random`` gives (tweet, reply, 1) and
  (tweet, reply of another pair, 0), the other pair drawn from the same split and the same input
  chunk, never from the same original tweet and never with the true reply's (or the tweet's own)
  tokens. ``both`` gives all three rows: 1/3 positives, 2/3 negatives (half swapped, half random).
  When no valid random reply exists (a split holds one pair in a chunk) the random negative is skipped
  and counted as ``random_unavailable``; the positive is kept.
* Tokenising happens once here, not at every batch; masking stays dynamic (the collator's job).
* Each segment is right-truncated to ``max_len`` tokens, as the original's ``pad_tweet`` kept
  ``tok[:L]``. There is no padding here (the original left-padded per segment, bug §13.2).
* Rows the original would have silently mangled are rejected and counted by reason: a null field,
  an empty segment after tokenisation, and a pair whose two (truncated) segments are identical (its
  positive and swapped negative would be the same input with opposite labels).
* The original had no splits at all. Splits here are deterministic: a keyed blake2b hash (key from
  ``seed``) of the **original tweet id** by default (``split_by: orig_id``), so all replies to one
  tweet, both orders and all negatives land in one split and a tweet's text is never in two splits;
  single tweets are split by the hash of their id, with the same function, so a tweet that is both a
  single tweet and an original tweet of a pair lands in the same split. ``split_by: pair_id`` splits
  by ``orig_id<TAB>reply_id`` instead (the tweet's text can then be in several splits).

``chunk_rows`` is how many input rows are tokenised at once (memory and speed). With
``negatives: swap`` it changes nothing in the output (shards are byte-identical for any value). With
``random``/``both`` it is also the pool random replies are drawn from, so it changes *which* reply
is drawn (not the statistics): treat it as part of the recipe there.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from twilbert.config import ConfigError, check, to_dict
from twilbert.text.tokenizer import Tokenizer
from twilbert.utils import sha256_file as _sha256

SPLITS = ("train", "valid", "test")
PAIR_COLUMNS = ("orig_id", "orig_text", "reply_id", "reply_text")
TWEET_COLUMNS = ("id", "text")
PAIR_REJECTS = ("null_field", "empty_orig", "empty_reply", "identical_segments")
TWEET_REJECTS = ("null_field", "empty_text")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
RANDOM_TRIES = 8  # cyclic shifts tried per row when looking for a valid random reply


class PairsError(ConfigError):
    """Bad input for the pairs stage (a ConfigError so the stage guard prints it in one line)."""


@dataclass(frozen=True, kw_only=True)
class PairsConfig:
    """The ``pairs:`` section of params.yaml."""

    negatives: Literal["swap", "random", "both"] = "swap"
    split_by: Literal["orig_id", "pair_id"] = "orig_id"  # what the split hash is computed on
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    rows_per_shard: int = 100_000  # output rows per Arrow file (the last one may have fewer)
    seed: int = 1234  # split hash key and random-negative draws
    chunk_rows: int = 50_000  # input rows tokenised at once; see module docstring

    def __post_init__(self) -> None:
        for name in ("valid_fraction", "test_fraction"):
            check(0.0 <= getattr(self, name) < 1.0, name, f"must be in [0, 1), got {getattr(self, name)}")
        total = self.valid_fraction + self.test_fraction
        check(total < 1.0, "valid_fraction", f"valid_fraction + test_fraction must be < 1, got {total:g}")
        check(self.rows_per_shard >= 1, "rows_per_shard", "must be >= 1")
        check(self.chunk_rows >= 1, "chunk_rows", "must be >= 1")
        check(0 <= self.seed < 2**63, "seed", "must be in [0, 2**63)")


# --------------------------------------------------------------------------------------------------
# Ragged token arrays: (values (N,), offsets (n+1,)), Arrow's list layout, manipulated without loops.
# --------------------------------------------------------------------------------------------------


def _lengths(offsets: np.ndarray) -> np.ndarray:
    return np.diff(offsets)


def _take(values: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _truncate(values: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the first ``max_len`` tokens of every row; also return how many rows were cut."""
    lens = _lengths(offsets)
    if lens.size == 0 or lens.max() <= max_len:
        return values, offsets, 0
    pos = np.arange(values.size, dtype=np.int64) - np.repeat(offsets[:-1], lens)  # position in its row
    new_off = np.zeros_like(offsets)
    np.cumsum(np.minimum(lens, max_len), out=new_off[1:])
    return values[pos < max_len], new_off, int((lens > max_len).sum())


def _fingerprints(values: np.ndarray, offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n,) uint64 hash of every row's token sequence (position-weighted sum mod 2**64, plus length).

    Lets us compare token sequences of whole batches at once; a false "equal" has probability ~2**-64.
    """
    lens = _lengths(offsets)
    pos = np.arange(values.size, dtype=np.int64) - np.repeat(offsets[:-1], lens)
    terms = (values.astype(np.uint64) + np.uint64(1)) * weights[pos]  # wraps mod 2**64, on purpose
    csum = np.zeros(values.size + 1, dtype=np.uint64)
    np.cumsum(terms, out=csum[1:])
    return csum[offsets[1:]] - csum[offsets[:-1]] + lens.astype(np.uint64) * weights[-1]


def _hash64(keys: list[str], key: bytes) -> np.ndarray:
    """Keyed blake2b of each string, as uint64: stable across runs, machines and Python versions."""
    base = hashlib.blake2b(digest_size=8, key=key)

    def one(s: str) -> int:
        h = base.copy()
        h.update(s.encode("utf-8"))
        return int.from_bytes(h.digest(), "little")

    return np.fromiter(map(one, keys), dtype=np.uint64, count=len(keys))


def _split_of(h: np.ndarray, cfg: PairsConfig) -> np.ndarray:
    """(n,) int8 split index (0 train, 1 valid, 2 test) from uint64 hashes: u = top 53 bits in [0, 1)."""
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    split = np.zeros(h.size, dtype=np.int8)
    split[u < cfg.test_fraction + cfg.valid_fraction] = 1
    split[u < cfg.test_fraction] = 2
    return split


# --------------------------------------------------------------------------------------------------
# Reading: exact-size chunks, so the output does not depend on the parquet row-group layout.
# --------------------------------------------------------------------------------------------------


def _check_columns(path: Path, columns: tuple[str, ...]) -> pq.ParquetFile:
    # pre_buffer=False: with pyarrow's default (True) the reader's read-range cache keeps every row
    # group's raw bytes until the file is closed, so Arrow memory grew with the whole file (measured
    # with pyarrow 25: 437 MB held after streaming a 458 MB parquet file; apache/arrow#39808). Without
    # it, memory stays at about one row group, and reading is no slower on a local disk.
    pf = pq.ParquetFile(path, pre_buffer=False)
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise PairsError(f"pairs: {path} lacks columns {missing} (has {pf.schema_arrow.names})")
    return pf


def _chunks(pf: pq.ParquetFile, columns: tuple[str, ...], chunk_rows: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    n_pending = 0
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(columns)):
        pending.append(batch)
        n_pending += batch.num_rows
        while n_pending >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, n_pending = rest.to_batches(), rest.num_rows
    if n_pending:
        yield pa.Table.from_batches(pending)


def _strings(col: pa.ChunkedArray) -> list[str]:
    """Python strings for SentencePiece; nulls become "" (rejected separately)."""
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())
    return pc.fill_null(col, "").to_pylist()


def _null_mask(table: pa.Table) -> np.ndarray:
    mask = np.zeros(table.num_rows, dtype=bool)
    for col in table.columns:
        if col.null_count:
            mask |= pc.is_null(col).to_numpy(zero_copy_only=False)
    return mask


# --------------------------------------------------------------------------------------------------
# Writing: one buffer per split, flushed as fixed-size shards (one record batch each).
# --------------------------------------------------------------------------------------------------


@dataclass
class _Rows:
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


class _SplitWriter:
    """Buffers rows of one split and writes ``shard-%05d.arrow`` files of exactly ``rows_per_shard`` rows.

    Shards are cut at fixed row counts whatever the chunking, and each is one record batch built from
    fresh arrays, so the bytes depend only on the rows (determinism) and readers get contiguous
    zero-copy columns.

    Memory: rows are copied as they come into one preallocated buffer per split (at most
    ``rows_per_shard`` rows; token arrays grow by doubling up to what a shard needs, then are reused),
    and a shard is written straight from that buffer (zero copy into Arrow), so a split costs about
    one shard of rows whatever the corpus size, with no per-flush concatenation. (The previous
    version concatenated its pending blocks at each flush and kept the remainder as a view of that
    concatenation: two shards' worth of memory per split.)
    """

    def __init__(self, out_dir: Path, split: str, schema: pa.Schema, rows_per_shard: int, hist_size: int):
        self.dir = out_dir / split
        self.split, self.schema, self.rows_per_shard = split, schema, rows_per_shard
        tok = np.uint16 if schema.field("a").type.value_type == pa.uint16() else np.uint32
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
        self.labels = {1: 0, 0: 0, -1: 0}

    def add(self, rows: _Rows) -> None:
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
        shard = _Rows(self._values[0][:na], lens[0], self._values[1][:nb], lens[1], self._label[:n], self._pair_id[:n])
        name = f"shard-{len(self.shards):05d}.arrow"
        path = self.dir / name
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.schema) as writer:
            writer.write_table(shard.to_arrow(self.schema), max_chunksize=max(n, 1))
        del shard  # the Arrow arrays were views of the buffer, which the next rows overwrite
        self.n_pending, self._n_tok = 0, [0, 0]
        self.shards.append({"file": f"{self.split}/{name}", "rows": n, "sha256": _sha256(path)})


def shard_schema(vocab_size: int) -> pa.Schema:
    tok = pa.uint16() if vocab_size <= 2**16 else pa.uint32()
    return pa.schema(
        [
            ("a", pa.list_(tok)),
            ("b", pa.list_(tok)),
            ("label", pa.int8()),
            ("pair_id", pa.uint64()),
            ("length", pa.uint16()),
        ]
    )


# --------------------------------------------------------------------------------------------------
# Building rows.
# --------------------------------------------------------------------------------------------------


@dataclass
class _Segments:
    """Tokenised, truncated segments of a chunk: a ragged array plus per-row fingerprints."""

    values: np.ndarray
    offsets: np.ndarray
    fp: np.ndarray

    @property
    def lens(self) -> np.ndarray:
        return _lengths(self.offsets)


class _Builder:
    def __init__(self, tokenizer: Tokenizer, cfg: PairsConfig, max_len: int, num_threads: int):
        self.tok, self.cfg, self.max_len, self.num_threads = tokenizer, cfg, max_len, num_threads
        self.hash_key = b"twilbert-split:" + cfg.seed.to_bytes(8, "little")
        self.fp_weights = np.random.default_rng(0x7B17).integers(1, 2**63, size=max_len + 1, dtype=np.uint64)
        self.schema = shard_schema(tokenizer.vocab_size)
        self.tok_dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
        self.truncated = 0

    def segments(self, texts: list[str]) -> _Segments:
        values, offsets = self.tok.encode_flat(texts, self.num_threads)
        values, offsets, cut = _truncate(values, offsets, self.max_len)
        self.truncated += cut
        return _Segments(values.astype(self.tok_dtype), offsets, _fingerprints(values, offsets, self.fp_weights))

    def rows(self, pool_values, pool_offsets, a_idx, b_idx, label, pair_id) -> _Rows:
        """Rows ``(pool[a_idx], pool[b_idx] or empty when -1, label, pair_id)``."""
        a_val, a_off = _take(pool_values, pool_offsets, a_idx)
        b_val, b_off = _take(pool_values, pool_offsets, b_idx)
        label = np.asarray(label, dtype=np.int8)
        return _Rows(a_val, _lengths(a_off), b_val, _lengths(b_off), label, np.asarray(pair_id, dtype=np.uint64))

    # -- pairs ----------------------------------------------------------------------------------
    def pair_chunk(self, table: pa.Table, chunk_no: int, counts: dict, negatives: dict) -> list[tuple[int, _Rows]]:
        n = table.num_rows
        orig_ids, reply_ids = _strings(table["orig_id"]), _strings(table["reply_id"])
        orig = self.segments(_strings(table["orig_text"]))
        reply = self.segments(_strings(table["reply_text"]))

        # First matching reason wins, so each rejected row is counted exactly once.
        reason = np.full(n, -1, dtype=np.int8)
        checks = (
            _null_mask(table),
            orig.lens == 0,
            reply.lens == 0,
            (orig.fp == reply.fp) & (orig.lens == reply.lens),
        )
        for r, bad in enumerate(checks):
            reason[(reason < 0) & bad] = r
        for r, name in enumerate(PAIR_REJECTS):
            counts["rejected"][name] += int((reason == r).sum())
        keep = np.flatnonzero(reason < 0)
        counts["kept"] += int(keep.size)

        orig_h = _hash64(orig_ids, self.hash_key)
        pair_h = _hash64([f"{o}\t{r}" for o, r in zip(orig_ids, reply_ids)], self.hash_key)
        split = _split_of(orig_h if self.cfg.split_by == "orig_id" else pair_h, self.cfg)

        # Pool of segments: orig i is row i, reply i is row n + i.
        pool_values = np.concatenate([orig.values, reply.values])
        pool_offsets = np.concatenate([orig.offsets, orig.offsets[-1] + reply.offsets[1:]])
        out = []
        for s in range(len(SPLITS)):
            rows = keep[split[keep] == s]  # kept pairs of this split, in input order
            if rows.size == 0:
                continue
            kinds = [(rows, n + rows, 1)]  # positive: (tweet, reply, 1)
            if self.cfg.negatives in ("swap", "both"):
                kinds.append((n + rows, rows, 0))  # swapped: (reply, tweet, 0)
                negatives["swap"] += int(rows.size)
            if self.cfg.negatives in ("random", "both"):
                rng = np.random.default_rng([self.cfg.seed, chunk_no, s])
                other = _random_others(rows, orig_h, orig.fp, reply.fp, rng)
                ok = other >= 0
                negatives["random"] += int(ok.sum())
                negatives["random_unavailable"] += int((~ok).sum())
                neg = np.full(rows.size, -2, dtype=np.int64)  # -2 marks "no random negative"
                neg[ok] = n + other[ok]
                kinds.append((rows, neg, 0))
            # Interleave so a pair's rows are adjacent: pair-major, kind-minor order.
            a_idx = np.stack([k[0] for k in kinds], axis=1).ravel()
            b_idx = np.stack([k[1] for k in kinds], axis=1).ravel()
            label = np.repeat(np.array([k[2] for k in kinds], np.int8)[None, :], rows.size, axis=0).ravel()
            pid = np.repeat(pair_h[rows], len(kinds))
            real = b_idx != -2
            out.append((s, self.rows(pool_values, pool_offsets, a_idx[real], b_idx[real], label[real], pid[real])))
        return out

    # -- single tweets --------------------------------------------------------------------------
    def tweet_chunk(self, table: pa.Table, counts: dict) -> list[tuple[int, _Rows]]:
        ids = _strings(table["id"])
        seg = self.segments(_strings(table["text"]))
        reason = np.full(table.num_rows, -1, dtype=np.int8)
        for r, bad in enumerate((_null_mask(table), seg.lens == 0)):
            reason[(reason < 0) & bad] = r
        for r, name in enumerate(TWEET_REJECTS):
            counts["rejected"][name] += int((reason == r).sum())
        keep = np.flatnonzero(reason < 0)
        counts["kept"] += int(keep.size)
        h = _hash64(ids, self.hash_key)
        split = _split_of(h, self.cfg)
        out = []
        for s in range(len(SPLITS)):
            rows = keep[split[keep] == s]
            if rows.size:
                empty = np.full(rows.size, -1, dtype=np.int64)
                label = np.full(rows.size, -1, dtype=np.int8)  # MLM only
                out.append((s, self.rows(seg.values, seg.offsets, rows, empty, label, h[rows])))
        return out


def _random_others(rows: np.ndarray, orig_h: np.ndarray, orig_fp: np.ndarray, reply_fp: np.ndarray, rng) -> np.ndarray:
    """For each pair in ``rows``, another pair of ``rows`` whose reply can serve as a negative, or -1.

    Shifting a random permutation by one gives every row a uniformly drawn *other* row, and uses each
    reply as a negative once, so negatives keep the replies' own distribution. A candidate is refused
    if it answers the same original tweet, or if its reply has the same tokens as this pair's true
    reply or as the tweet itself; refused rows try the next shifts (up to RANDOM_TRIES), vectorised.
    """
    n = rows.size
    order = rng.permutation(n)  # local indices into rows
    perm = rows[order]
    chosen = np.full(n, -1, dtype=np.int64)  # chosen[j]: the other pair for perm[j]
    todo = np.arange(n)
    for shift in range(1, min(RANDOM_TRIES, n - 1) + 1):
        cand = perm[(todo + shift) % n]
        me = perm[todo]
        ok = (orig_h[cand] != orig_h[me]) & (reply_fp[cand] != reply_fp[me]) & (reply_fp[cand] != orig_fp[me])
        chosen[todo[ok]] = cand[ok]
        todo = todo[~ok]
        if todo.size == 0:
            break
    out = np.empty(n, dtype=np.int64)
    out[order] = chosen  # back to the order of `rows`
    return out


# --------------------------------------------------------------------------------------------------
# The stage body.
# --------------------------------------------------------------------------------------------------


def build_pair_shards(
    pairs_parquet: Path | None,
    tweets_parquet: Path | None,
    tokenizer: Tokenizer,
    cfg: PairsConfig,
    max_len: int,
    out_dir: Path,
    progress: bool = True,
    num_threads: int = 0,
) -> dict:
    """Tokenise, split, build negatives and write shards + ``manifest.json``; return the manifest.

    Manifest keys: ``rows`` (per split: total/positive/negative/mlm_only, and the grand total),
    ``input`` (per input kind: rows_in = kept + sum(rejected by reason)), ``negatives`` (swap, random,
    random_unavailable), ``truncated_segments`` (input segments cut to max_len), ``shards`` (per split:
    file, rows, sha256), ``length_histogram`` (per split: count of rows by length, index = length),
    ``tokenizer_sha256``, ``vocab_size``, ``token_dtype``, ``max_len``, ``config``, ``format_version``.
    Counts reconcile: rows.total = pairs.kept + swap + random + tweets.kept.

    Memory is bounded by ``chunk_rows`` input rows plus up to ``rows_per_shard`` buffered output rows
    per split (~140 bytes a row at max_len 64), whatever the corpus size: the input is read without
    pyarrow's pre-buffer cache (which kept the whole file), and each split's buffer is filled in place
    and written from there. Measured (``rows_per_shard`` 1M, max_len 64): 0.73 GB peak RSS at 1M pairs,
    0.89 GB at 4M (valid/test buffers still filling; at most 3 shards of rows), was 0.91 / 1.45 GB
    (2.48 GB at 10M). ``num_threads`` (0 = all usable cores) only changes speed.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if not 1 <= max_len <= (2**16 - 4) // 2:
        top = (2**16 - 4) // 2
        raise PairsError(f"representation.max_len: must be in [1, {top}] (lengths are uint16), got {max_len}")
    if cfg.rows_per_shard * max_len >= 2**31:
        raise PairsError("pairs.rows_per_shard: too large for int32 list offsets at this max_len")
    inputs = [(p, kind) for p, kind in ((pairs_parquet, "pairs"), (tweets_parquet, "tweets")) if p is not None]
    for p, _ in inputs:
        if not Path(p).exists():
            raise PairsError(f"pairs: input {p} does not exist")
    if not inputs:
        raise PairsError("pairs: no input: give a pairs and/or a tweets parquet file")

    # Start clean: a stale shard from a previous, larger run must not survive, nor a stale manifest.
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for split in SPLITS:
        (out_dir / split).mkdir(exist_ok=True)
        for old in (out_dir / split).glob("shard-*.arrow"):
            old.unlink()

    builder = _Builder(tokenizer, cfg, max_len, num_threads)
    writers = [_SplitWriter(out_dir, s, builder.schema, cfg.rows_per_shard, 2 * max_len + 4) for s in SPLITS]
    counts = {
        "pairs": {"rows_in": 0, "kept": 0, "rejected": dict.fromkeys(PAIR_REJECTS, 0)},
        "tweets": {"rows_in": 0, "kept": 0, "rejected": dict.fromkeys(TWEET_REJECTS, 0)},
    }
    negatives = {"swap": 0, "random": 0, "random_unavailable": 0}
    files = {kind: _check_columns(Path(p), PAIR_COLUMNS if kind == "pairs" else TWEET_COLUMNS) for p, kind in inputs}
    total = sum(pf.metadata.num_rows for pf in files.values())
    bar = tqdm(total=total, unit="rows", desc="pairs", disable=not (progress and sys.stderr.isatty()))
    with bar:
        for kind, pf in files.items():
            columns = PAIR_COLUMNS if kind == "pairs" else TWEET_COLUMNS
            for chunk_no, chunk in enumerate(_chunks(pf, columns, cfg.chunk_rows)):
                counts[kind]["rows_in"] += chunk.num_rows
                if kind == "pairs":
                    parts = builder.pair_chunk(chunk, chunk_no, counts["pairs"], negatives)
                else:
                    parts = builder.tweet_chunk(chunk, counts["tweets"])
                for s, rows in parts:
                    writers[s].add(rows)
                bar.update(chunk.num_rows)
    for w in writers:
        w.close()

    manifest = _manifest(writers, counts, negatives, builder, tokenizer, cfg, max_len)
    if manifest["rows"]["total"] == 0:
        raise PairsError(f"pairs: no row survived (inputs: {json.dumps(counts)})")
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out_dir / MANIFEST)
    return manifest


def _manifest(writers, counts, negatives, builder, tokenizer, cfg, max_len) -> dict:
    rows = {}
    for w in writers:
        n = sum(sh["rows"] for sh in w.shards)
        rows[w.split] = {"total": n, "positive": w.labels[1], "negative": w.labels[0], "mlm_only": w.labels[-1]}
    rows["total"] = sum(rows[s]["total"] for s in SPLITS)
    expected = counts["pairs"]["kept"] + negatives["swap"] + negatives["random"] + counts["tweets"]["kept"]
    # Reconcile, or fail loudly: these counts are the audit trail of the stage.
    for kind in ("pairs", "tweets"):
        c = counts[kind]
        if c["rows_in"] != c["kept"] + sum(c["rejected"].values()):
            raise RuntimeError(f"pairs: {kind} counts do not reconcile: {c}")
    if rows["total"] != expected:
        raise RuntimeError(f"pairs: wrote {rows['total']} rows, expected {expected} ({counts}, {negatives})")
    return {
        "format_version": FORMAT_VERSION,
        "max_len": max_len,
        "vocab_size": tokenizer.vocab_size,
        "token_dtype": str(builder.schema.field("a").type.value_type),
        "tokenizer_sha256": tokenizer.sha256,
        "rows": rows,
        "input": counts,
        "negatives": negatives,
        "truncated_segments": builder.truncated,
        "config": to_dict(cfg),
        "shards": {w.split: w.shards for w in writers},
        "length_histogram": {w.split: w.hist.tolist() for w in writers},
    }


__all__ = ["PairsConfig", "PairsError", "build_pair_shards", "shard_schema", "SPLITS", "MANIFEST"]
