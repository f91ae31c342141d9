"""Reply Order Prediction examples, tokenised once and written as Arrow IPC shards per split.

Input: the normalise stage's parquet files (text already normalised), with the columns of
``twilbert.text.corpus.COLUMNS``: pairs give ROP rows (and MLM on both segments), single tweets give
MLM-only rows (``b`` empty, label -1). Output: shards and manifest in the format of
:mod:`twilbert.data.shard_format`.

As the original ``DataGenerator``, ``negatives: swap`` gives (tweet, reply, 1) and (reply, tweet, 0),
so labels are 50/50 in every split; each segment is right-truncated to ``max_len`` tokens (the
original's ``tok[:L]``), unpadded. Deviations (docs/deviations.md#rop-negatives, #reject-mangled-rows,
#deterministic-splits): ``random`` pairs a tweet with the reply of another pair of the same split and
input chunk (never of the same tweet, never with the true reply's or the tweet's own tokens; skipped
and counted as ``random_unavailable`` when none exists), ``both`` gives all three rows; rows the
original would have mangled (a null field, an empty segment, two identical segments) are rejected and
counted by reason; and there are splits, by a keyed blake2b hash (key from ``seed``) of the original
tweet id (``split_by: orig_id``: a tweet's replies, both orders and all negatives share a split, and a
single tweet hashes like the same tweet as an original) or of ``orig_id<TAB>reply_id`` (``pair_id``).

``chunk_rows`` is how many input rows are tokenised at once (memory and speed). With
``negatives: swap`` shards are byte-identical for any value; with ``random``/``both`` it is also the
pool random replies are drawn from, so it is part of the recipe there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from twilbert.config import ConfigError, check, to_dict
from twilbert.data.ragged import fingerprints, lengths, take, truncate
from twilbert.data.shard_format import SPLITS, build_manifest, clear_shards, shard_schema, token_dtype, write_manifest
from twilbert.data.shard_writer import Rows, SplitWriter
from twilbert.text.corpus_layout import COLUMNS
from twilbert.text.tokenizer import Tokenizer

PAIR_REJECTS = ("null_field", "empty_orig", "empty_reply", "identical_segments")
TWEET_REJECTS = ("null_field", "empty_text")
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
# Splits: a keyed hash of an id, so a split never depends on the order or chunking of the input.
# --------------------------------------------------------------------------------------------------


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
    # group's raw bytes until the file is closed, so Arrow memory grows with the whole file (pyarrow 25
    # held 437 MB after streaming a 458 MB parquet file; apache/arrow#39808). Without
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
        return lengths(self.offsets)


class _Builder:
    def __init__(self, tokenizer: Tokenizer, cfg: PairsConfig, max_len: int, num_threads: int):
        self.tok, self.cfg, self.max_len, self.num_threads = tokenizer, cfg, max_len, num_threads
        self.hash_key = b"twilbert-split:" + cfg.seed.to_bytes(8, "little")
        self.fp_weights = np.random.default_rng(0x7B17).integers(1, 2**63, size=max_len + 1, dtype=np.uint64)
        self.schema = shard_schema(tokenizer.vocab_size)
        self.tok_dtype = token_dtype(self.schema)
        self.truncated = 0

    def segments(self, texts: list[str]) -> _Segments:
        values, offsets = self.tok.encode_flat(texts, self.num_threads)
        values, offsets, cut = truncate(values, offsets, self.max_len)
        self.truncated += cut
        return _Segments(values.astype(self.tok_dtype), offsets, fingerprints(values, offsets, self.fp_weights))

    def rows(self, pool_values, pool_offsets, a_idx, b_idx, label, pair_id) -> Rows:
        """Rows ``(pool[a_idx], pool[b_idx] or empty when -1, label, pair_id)``."""
        a_val, a_off = take(pool_values, pool_offsets, a_idx)
        b_val, b_off = take(pool_values, pool_offsets, b_idx)
        label = np.asarray(label, dtype=np.int8)
        return Rows(a_val, lengths(a_off), b_val, lengths(b_off), label, np.asarray(pair_id, dtype=np.uint64))

    # -- pairs ----------------------------------------------------------------------------------
    def pair_chunk(self, table: pa.Table, chunk_no: int, counts: dict, negatives: dict) -> list[tuple[int, Rows]]:
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
    def tweet_chunk(self, table: pa.Table, counts: dict) -> list[tuple[int, Rows]]:
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
    """Tokenise, split, build negatives and write shards + ``manifest.json``; return the manifest
    (layout: :func:`twilbert.data.shard_format.build_manifest`). Counts reconcile:
    rows.total = pairs.kept + swap + random + tweets.kept.

    Memory is bounded by ``chunk_rows`` input rows plus up to ``rows_per_shard`` buffered output rows
    per split (~140 bytes a row at max_len 64), whatever the corpus size: the input is read without
    pyarrow's pre-buffer cache, and each split's buffer is filled in place and written from there
    (0.73 GB peak RSS at 1M pairs, 0.89 GB at 4M, ``rows_per_shard`` 1M, max_len 64).
    ``num_threads`` (0 = all usable cores) only changes speed.
    """
    out_dir = Path(out_dir)
    files = _open_inputs(pairs_parquet, tweets_parquet, cfg, max_len)
    clear_shards(out_dir)
    try:
        builder = _Builder(tokenizer, cfg, max_len, num_threads)
        writers = [SplitWriter(out_dir, s, builder.schema, cfg.rows_per_shard, 2 * max_len + 4) for s in SPLITS]
        counts = {
            "pairs": {"rows_in": 0, "kept": 0, "rejected": dict.fromkeys(PAIR_REJECTS, 0)},
            "tweets": {"rows_in": 0, "kept": 0, "rejected": dict.fromkeys(TWEET_REJECTS, 0)},
        }
        negatives = {"swap": 0, "random": 0, "random_unavailable": 0}
        _write_rows(files, builder, writers, counts, negatives, cfg.chunk_rows, progress)
        manifest = _manifest(writers, counts, negatives, builder, tokenizer, cfg, max_len)
        if manifest["rows"]["total"] == 0:
            raise PairsError(f"pairs: no row survived (inputs: {json.dumps(counts)})")
        write_manifest(out_dir, manifest)
    except BaseException:
        # Each shard is renamed into place only when complete, but without a manifest they are no
        # output: leave the directory empty rather than holding part of a run (and the space it took).
        with contextlib.suppress(OSError):
            clear_shards(out_dir)
        raise
    return manifest


def _open_inputs(
    pairs_parquet: Path | None, tweets_parquet: Path | None, cfg: PairsConfig, max_len: int
) -> dict[str, pq.ParquetFile]:
    """The input files by kind (``pairs``, ``tweets``), checked along with the limits of the format."""
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
    return {kind: _check_columns(Path(p), COLUMNS[kind]) for p, kind in inputs}


def _write_rows(files, builder, writers, counts, negatives, chunk_rows: int, progress: bool) -> None:
    """Every input chunk through the builder into the split writers, then the last shards flushed."""
    from twilbert.progress import Progress

    total = sum(pf.metadata.num_rows for pf in files.values())
    bar = Progress(total, "pairs", "rows", enabled=progress)
    with bar:
        for kind, pf in files.items():
            for chunk_no, chunk in enumerate(_chunks(pf, COLUMNS[kind], chunk_rows)):
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


def _manifest(writers, counts, negatives, builder, tokenizer, cfg, max_len) -> dict:
    rows = {w.split: w.counts() for w in writers}
    rows["total"] = sum(rows[s]["total"] for s in SPLITS)
    expected = counts["pairs"]["kept"] + negatives["swap"] + negatives["random"] + counts["tweets"]["kept"]
    # Reconcile, or fail loudly: these counts are the audit trail of the stage.
    for kind in ("pairs", "tweets"):
        c = counts[kind]
        if c["rows_in"] != c["kept"] + sum(c["rejected"].values()):
            raise RuntimeError(f"pairs: {kind} counts do not reconcile: {c}")
    if rows["total"] != expected:
        raise RuntimeError(f"pairs: wrote {rows['total']} rows, expected {expected} ({counts}, {negatives})")
    return build_manifest(
        max_len=max_len,
        vocab_size=tokenizer.vocab_size,
        schema=builder.schema,
        tokenizer_sha256=tokenizer.sha256,
        rows=rows,
        inputs=counts,
        negatives=negatives,
        truncated_segments=builder.truncated,
        config=to_dict(cfg),
        shards={w.split: w.shards for w in writers},
        length_histogram={w.split: w.hist.tolist() for w in writers},
    )


__all__ = ["PairsConfig", "PairsError", "build_pair_shards"]
