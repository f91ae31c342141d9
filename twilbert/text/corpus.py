"""Corpus ingestion: raw TSV -> validated, normalised, de-duplicated Parquet, with nothing lost.

Why it is built this way:
* The original skipped any line that did not split into 4 fields with a bare ``except: pass`` and
  dropped its first line as a "header" even in header-less files (inventory §2.1, §13.7). Here every
  line is accounted for: ``rows_in = rows_out + dropped (by rule) + rejected (by reason)``, and every
  rejected line goes to a rejects file with its file name, line number and reason.
* polars' CSV reader either errors on a ragged line or (with ``truncate_ragged_lines``) silently cuts it,
  and with default quoting it once swallowed half a file (environment notes). So we frame lines
  ourselves: the file is read in byte chunks of bounded size (memory stays bounded whatever the corpus
  size), each chunk is decoded as UTF-8 in one C call, and all row checks, normalisation and drop rules
  run as vectorised polars expressions. Only a chunk that fails strict decoding is split per line in
  Python, to find the bad lines.
* Exact duplicates are found across the whole corpus with 64-bit row hashes kept in a few sorted
  numpy runs (:class:`_Deduper`): 8 bytes per distinct row (80 MB per 10M rows), not the rows
  themselves, and O(N log N) time overall.
* A line longer than ``max_line_bytes(max_chars)`` is never held in memory whole: the reader keeps a
  short preview, skips to the next newline and reports the line as ``too_long``. Memory stays bounded
  by about two chunks even for a multi-GB file without newlines.
* Headers are checked by name, not only by column count: with ``data.header: true`` a header-less
  file would otherwise lose its first row silently.
* A file with no data rows (empty, or a header only) is a warning counted in the stats
  (``empty_files``); if no row at all comes out of the stage, it is an error: there is no corpus.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from twilbert.text.normalize import (  # noqa: I001
    NormalizeConfig,
    DropRules,
    EffectiveRules,
    SPACE,
    normalize_expr,
    placeholder_only_expr,
    word_count_expr,
)

CorpusKind = Literal["pairs", "tweets"]

# Column layouts of the two input formats (the original's pair TSV, and single tweets for MLM-only).
COLUMNS: dict[str, tuple[str, ...]] = {
    "pairs": ("orig_id", "orig_text", "reply_id", "reply_text"),
    "tweets": ("id", "text"),
}
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {"pairs": ("orig_text", "reply_text"), "tweets": ("text",)}
ID_COLUMNS: dict[str, tuple[str, ...]] = {"pairs": ("orig_id", "reply_id"), "tweets": ("id",)}
# Header lines accepted with ``data.header: true`` (compared case-insensitively, after stripping each
# name). The second pairs layout is that of ../shared/data/twilbert_reply_pairs_es/pairs.tsv.
HEADERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "pairs": (("ORIG_ID", "ORIG_TEXT", "REPLY_ID", "REPLY_TEXT"), ("ID", "TEXT", "REPLY_ID", "REPLY_TEXT")),
    "tweets": (("ID", "TEXT"),),
}

REJECT_REASONS = (
    "invalid_utf8",
    "wrong_column_count",
    "empty_id",
    "empty_text",
    "stray_cr",
    "control_chars",
    "csv_quoted_field",
    "too_long",
)
DROP_RULES = ("placeholder_only", "too_few_words", "duplicate", "empty_after_normalize")

_BOM = "\ufeff"
_PREVIEW_CHARS = 200  # how much of a too_long line the rejects file shows
_REJECT_CONTENT_CHARS = 2000  # other rejects: content cut to this many characters
# C0 controls other than \t (field separator) and \r (handled separately): NUL, bells, escapes...
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


class CorpusError(ValueError):
    """An input that cannot be read at all (missing, unreadable, wrong header). One line, names the path."""


@dataclass
class IngestStats:
    """Per-corpus-kind accounting. ``reconciles`` must hold, or the ingestion itself is buggy."""

    kind: str
    files: list[str] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    header_lines: int = 0
    crlf_line_endings: int = 0
    rejected: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    empty_files: list[str] = field(default_factory=list)  # inputs with no data row (a warning each)
    warnings: list[str] = field(default_factory=list)  # one-line messages, for the stage to print

    @property
    def reconciles(self) -> bool:
        return self.rows_in == self.rows_out + sum(self.rejected.values()) + sum(self.dropped.values())

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_rejected": sum(self.rejected.values()),
            "rows_dropped": sum(self.dropped.values()),
            "rejected": {r: self.rejected.get(r, 0) for r in REJECT_REASONS},
            "dropped": {r: self.dropped.get(r, 0) for r in DROP_RULES},
            "header_lines": self.header_lines,
            "crlf_line_endings": self.crlf_line_endings,
            "empty_files": len(self.empty_files),
            "empty_file_names": self.empty_files,
            "reconciles": self.reconciles,
        }


def max_line_bytes(max_chars: int) -> int:
    """Bytes beyond which a line is ``too_long`` whatever it holds: a UTF-8 character takes at most 4
    bytes, so a line of more than ``4 * max_chars + 1`` bytes (the 1 for a CRLF's ``\\r``) has more than
    ``max_chars`` characters. The reader never buffers more of such a line than this."""
    return 4 * max_chars + 1


@dataclass
class _Chunk:
    """Whole lines of one file, as read.

    ``lines`` is, on the fast path, a String Series of the chunk's lines (split and UTF-8-validated in
    vectorised code), or, when some line could not be used as text, a list of per-line strings in
    which each such line is ``""`` and listed in ``bad`` as ``(index_in_chunk, reason, raw_preview,
    n_bytes)``.
    """

    lines: pl.Series | list[str]
    bad: list[tuple[int, str, bytes, int]]
    n_bytes: int  # bytes of the file this chunk covers (for progress)
    is_last: bool


def _split_lines(data: bytes) -> pl.Series | None:
    """The lines of a block of whole lines (without the final newline) as a String Series, or None if
    the block is not valid UTF-8.

    Newline positions come from numpy and the line bytes become an Arrow array with one copy; polars'
    strict cast validates the UTF-8 (the same strict rules as Python's decoder: no surrogates, no
    overlong forms). Same lines as ``data.decode().split("\n")`` at a quarter of its CPU time, most of
    it outside the GIL (this runs in the reader thread)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)  # (L-1,) newline positions
    body = np.delete(buf, nl)  # the line bytes, back to back
    offsets = np.empty(nl.size + 2, dtype=np.int64)  # (L+1,)
    offsets[0], offsets[-1] = 0, body.size
    offsets[1:-1] = nl - np.arange(nl.size)
    arr = pa.LargeBinaryArray.from_buffers(pa.large_binary(), nl.size + 1, [None, pa.py_buffer(offsets), pa.py_buffer(body)])
    try:
        return pl.Series("line", arr).cast(pl.String)
    except pl.exceptions.ComputeError:  # invalid UTF-8 somewhere: the caller takes the per-line path
        return None


def _decode_lines(data: bytes, max_bytes: int) -> tuple[pl.Series | list[str], list[tuple[int, str, bytes, int]]]:
    """Decode a block of whole lines (without the final newline); slow path only on a decoding error."""
    lines = _split_lines(data)
    if lines is not None:
        return lines, []
    lines, bad = [], []
    for i, raw in enumerate(data.split(b"\n")):
        if len(raw) > max_bytes:  # too long to be kept, whatever its bytes (as in the reader)
            lines.append("")
            bad.append((i, "too_long", raw[: 4 * _PREVIEW_CHARS], len(raw)))
            continue
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append("")
            bad.append((i, "invalid_utf8", raw, len(raw)))
    return lines, bad


def _iter_line_chunks(path: Path, chunk_bytes: int, max_bytes: int) -> Iterator[_Chunk]:
    """Yield the lines of ``path`` in chunks of about ``chunk_bytes``, always cut on line boundaries.

    A line longer than ``max_bytes`` is not accumulated: once the unfinished line at the end of what
    was read exceeds it, its first bytes are kept as a preview, the rest is skipped up to the next
    newline, and it comes out alone as a ``too_long`` chunk. So memory stays within about
    ``2 * chunk_bytes + max_bytes`` whatever the file holds (the original grew its buffer until a
    newline came, ~700 MB RSS for one 30 MB line).
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from None
    preview_bytes = 4 * _PREVIEW_CHARS

    def skip_long_line(head: bytes) -> tuple[_Chunk, bytes]:
        """``head`` starts a line with no newline yet: skip the rest of it; return it and what follows."""
        n = len(head)
        while True:
            block = f.read(chunk_bytes)
            if not block:
                return _Chunk([""], [(0, "too_long", head[:preview_bytes], n)], n, True), b""
            j = block.find(b"\n")
            if j >= 0:
                n += j
                rest = block[j + 1 :]
                is_last = not rest and f.peek(1) == b""
                return _Chunk([""], [(0, "too_long", head[:preview_bytes], n)], n + 1, is_last), rest
            n += len(block)

    with f:
        pending = b""  # bytes read but not yet yielded; always starts at a line start
        first = True
        while True:
            block = f.read(chunk_bytes)
            data = pending + block
            if first and data:
                if data.startswith(b"\xef\xbb\xbf"):
                    data = data[3:]  # a UTF-8 BOM is an encoding marker, not content
                first = False
            if not data:
                return
            if block:
                cut = data.rfind(b"\n")
                if cut < 0:  # no line ends in what was read: one unfinished line
                    if len(data) > max_bytes:
                        chunk, pending = skip_long_line(data)
                        yield chunk
                        if chunk.is_last:
                            return
                    else:
                        pending = data
                    continue
                complete, pending = data[: cut + 1], data[cut + 1 :]
            else:
                complete, pending = data, b""
            is_last = (not block) or (not pending and f.peek(1) == b"")
            n_bytes = len(complete)
            if complete.endswith(b"\n"):
                complete = complete[:-1]
            lines, bad = _decode_lines(complete, max_bytes)
            yield _Chunk(lines, bad, n_bytes, is_last)
            if is_last:
                return
            if len(pending) > max_bytes:  # the unfinished line at the end is already too long
                chunk, pending = skip_long_line(pending)
                yield chunk
                if chunk.is_last:
                    return


# Backslash-escapes for the rejects file: its own separators (tab, newline), and every other control
# or line-breaking character (C0, DEL, C1, U+2028/9), so that any line reader (``str.splitlines``
# included) sees one reject per line and a terminal never runs an escape sequence from a bad input.
_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\r"): "\\r", ord("\n"): "\\n"}
_ESCAPES |= {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)] if c not in _ESCAPES}
_ESCAPES |= {0x2028: "\\u2028", 0x2029: "\\u2029"}


def _escape_raw(s: str) -> str:
    return s.translate(_ESCAPES)


class _Deduper:
    """Global exact-duplicate detection over 64-bit row hashes, as a small log-structured merge set.

    Memory: 8 bytes per distinct row (the uint64 hashes, nothing else: 80 MB per 10M distinct rows,
    750 MB for the 94M pairs of the original corpus), plus a transient copy of the runs being merged
    (at most 16 bytes per row for a moment, when the largest run is rebuilt). Acceptable: the rows
    themselves would take ~100x more.

    Time: O(N log N) for N rows. Hashes live in sorted runs whose sizes at least double from the newest
    to the oldest, so there are O(log N) of them; each chunk's new hashes become a run, and runs of
    comparable size are merged (like a binary counter), so a hash is merged O(log N) times.
    Membership is one ``searchsorted`` per run. The previous version merged every chunk into one
    array with ``np.union1d`` (a full re-sort per chunk): O(N^2 / chunk) overall, 17 s for 2M rows
    in 50k-row chunks, 224 s for 4M.

    Collisions: two different rows with the same 64-bit hash make the later one a false "duplicate".
    For n distinct rows the chance of any collision is about n^2 / 2^65: 3e-6 at 10M rows, 2.4e-4 at
    94M; at most a handful of rows would be affected even then. Hashes are polars' ``Expr.hash(seed=0)``,
    stable within a run (the only place they are compared), not necessarily across polars versions.
    """

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []  # sorted, pairwise disjoint uint64 arrays, oldest (largest) first

    def __len__(self) -> int:
        return sum(r.size for r in self.runs)

    def _seen(self, sorted_hashes: np.ndarray) -> np.ndarray:
        seen = np.zeros(sorted_hashes.size, dtype=bool)
        for run in self.runs:
            pos = np.minimum(np.searchsorted(run, sorted_hashes), run.size - 1)
            seen |= run[pos] == sorted_hashes
        return seen

    def first_occurrence(self, hashes: np.ndarray) -> np.ndarray:
        """Bool mask: True where the hash was not seen before (in earlier chunks or earlier in this one)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        keep = np.zeros(hashes.size, dtype=bool)
        if hashes.size == 0:
            return keep
        uniq, first_idx = np.unique(hashes, return_index=True)  # sorted distinct hashes of the chunk
        new = ~self._seen(uniq)
        keep[first_idx[new]] = True
        run = uniq[new]
        if run.size:
            self.runs.append(run)
            while len(self.runs) > 1 and self.runs[-2].size <= 2 * self.runs[-1].size:
                b, a = self.runs.pop(), self.runs.pop()
                merged = np.concatenate([a, b])
                merged.sort(kind="stable")  # timsort: two sorted runs merge in linear time
                self.runs.append(merged)
        return keep


def _validate_and_split(df: pl.DataFrame | pl.LazyFrame, kind: CorpusKind, max_chars: int) -> pl.DataFrame | pl.LazyFrame:
    """Add the parsed columns and a ``reason`` column (null = accepted) to a frame of raw lines."""
    cols = COLUMNS[kind]
    line = pl.col("line")
    fields = line.str.split("\t")
    df = df.with_columns(
        fields.alias("_fields"),
        line.str.ends_with("\r").alias("_crlf"),
    ).with_columns(pl.col("_fields").list.len().alias("_nf"))
    df = df.with_columns(
        [
            pl.col("_fields").list.get(i, null_on_oob=True).str.strip_suffix("\r").alias(c)
            if i == len(cols) - 1
            else pl.col("_fields").list.get(i, null_on_oob=True).alias(c)
            for i, c in enumerate(cols)
        ]
    )
    text_cols, id_cols = TEXT_COLUMNS[kind], ID_COLUMNS[kind]
    body = pl.col("line").str.strip_suffix("\r")
    # First reason wins. A line the reader could not use as text (undecodable, or over the byte cap)
    # comes with its reason; then length, before column counts: a line over max_chars is not looked
    # into (the reader cannot count the fields of a line it skipped, and both must agree).
    reason = (
        pl.when(pl.col("_pre_reason").is_not_null())
        .then(pl.col("_pre_reason"))
        .when(body.str.len_chars() > max_chars)
        .then(pl.lit("too_long"))
        .when(pl.col("_nf") != len(cols))
        .then(pl.lit("wrong_column_count"))
        .when(body.str.contains("\r", literal=True))
        .then(pl.lit("stray_cr"))
        .when(body.str.contains(_CONTROL))
        .then(pl.lit("control_chars"))
        .when(pl.any_horizontal([pl.col(c).str.strip_chars().str.len_chars() == 0 for c in id_cols]))
        .then(pl.lit("empty_id"))
        .when(pl.any_horizontal([pl.col(c).str.strip_chars().str.len_chars() == 0 for c in text_cols]))
        .then(pl.lit("empty_text"))
        .when(
            pl.any_horizontal(
                [
                    pl.col(c).str.starts_with('"') & pl.col(c).str.ends_with('"') & pl.col(c).str.contains('""', literal=True)
                    for c in text_cols
                ]
            )
        )
        .then(pl.lit("csv_quoted_field"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    return df.with_columns(reason.alias("reason"))


def check_header(line: str, kind: CorpusKind, path: Path) -> None:
    """Raise CorpusError unless ``line`` (the first line, BOM and CR stripped) names a known layout.

    Only the column count was checked before, so a header-less pairs file read with ``data.header:
    true`` silently lost its first data row."""
    names = tuple(f.strip().upper() for f in line.split("\t"))
    if names in HEADERS[kind]:
        return
    expected = " or ".join(" ".join(h) for h in HEADERS[kind])
    shown = _escape_raw(line)
    shown = shown if len(shown) <= 120 else shown[:120] + "..."
    raise CorpusError(
        f"{path}: line 1 is not a {kind} header: '{shown}' (expected {expected}, any case); "
        "if the file has no header, set data.header: false"
    )


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """``items`` produced by a background thread, up to ``depth`` ahead (bounded memory).

    The reader's file reads, newline split and UTF-8 check then overlap with the main thread's polars
    query (both release the GIL for most of their time). Errors in the thread are raised here, in
    order; a consumer that stops early stops the thread and closes ``items``."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(msg) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for x in items:
                if not put((True, x)):
                    break
            else:
                put((False, None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="twilbert-reader", daemon=True)
    thread.start()
    try:
        while True:
            ok, x = q.get()
            if not ok:
                if x is not None:
                    raise x
                return
            yield x
    finally:
        stop.set()
        thread.join()


class _BackgroundWriter:
    """Calls ``write(item)`` in one background thread, in order, at most ``depth`` items queued.

    Parquet encoding and compression release the GIL, so they overlap with the next chunk's query.
    An error in the thread is raised by the next :meth:`put` or by :meth:`close`."""

    def __init__(self, write: Callable, depth: int = 2):
        self._write, self._q, self._error = write, queue.Queue(maxsize=depth), None
        self._thread = threading.Thread(target=self._run, name="twilbert-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item) -> None:
        self._check()
        self._q.put(item)

    def close(self) -> None:
        """Wait for every queued item to be written; raise the thread's error, if any."""
        self._q.put(None)
        self._thread.join()
        self._check()


def few_words_expr(expr: pl.Expr, max_words: int) -> pl.Expr:
    """True where a text has at most ``max_words`` whitespace-separated words (``len(t.split()) <= k``).

    An anchored regex whose DFA gives up as soon as word ``k + 1`` starts, so a tweet costs a few
    bytes of scanning instead of a match per word: ~10x cheaper than counting the words with
    :func:`word_count_expr` (0.07 vs 0.8 s of CPU per 1M tweets), same answer. Each iteration of
    the group takes one run of non-spaces then spaces, so a text of n words needs n iterations."""
    if max_words > 64:  # keep the regex small; counting is exact at any size
        return word_count_expr(expr) <= max_words
    return expr.str.contains(rf"^[{SPACE}]*(?:[^{SPACE}]+[{SPACE}]*){{0,{max_words}}}$")


def _chunk_query(
    df: pl.DataFrame, kind: CorpusKind, rules: EffectiveRules, drop: DropRules, max_chars: int
) -> pl.DataFrame:
    """Validation, normalisation and drop rules of one chunk of raw lines, as one streaming query.

    Every line gets ``reason`` (null = accepted), and accepted lines their stripped and normalised
    fields, the drop rule that fires first in ``_drop`` (null = kept, duplicates aside) and, when
    duplicates are dropped, the ``_hash`` of the normalised texts. The text columns of rejected lines
    are nulled before normalisation, so their content costs nothing and can never reach a rule.
    One query, not an eager validation then a streaming normalisation: the streaming engine spreads
    all of it over the cores.
    """
    cols, text_cols = COLUMNS[kind], TEXT_COLUMNS[kind]
    ok = pl.col("reason").is_null()
    lf = _validate_and_split(df.lazy(), kind, max_chars)
    lf = lf.with_columns([pl.when(ok).then(pl.col(c).str.strip_chars()).alias(c) for c in cols])
    # The "too few words" rule looks at the raw text, as the original did: emoji names and split
    # hashtags must not turn "vale👍" into a 4-word reply.
    few = pl.all_horizontal([few_words_expr(pl.col(c), drop.max_words) for c in text_cols]) if drop.max_words > 0 else None
    if few is not None:
        lf = lf.with_columns(few.alias("_few"))
    lf = lf.with_columns([normalize_expr(pl.col(c), rules).alias(c) for c in text_cols])
    empty = pl.any_horizontal([pl.col(c).str.len_chars() == 0 for c in text_cols])
    rule = pl.when(empty).then(pl.lit("empty_after_normalize"))
    if drop.placeholder_only:
        rule = rule.when(pl.all_horizontal([placeholder_only_expr(pl.col(c), rules) for c in text_cols])).then(
            pl.lit("placeholder_only")
        )
    if few is not None:
        rule = rule.when(pl.col("_few")).then(pl.lit("too_few_words"))
    extra = [rule.otherwise(pl.lit(None, dtype=pl.String)).alias("_drop")]
    if drop.duplicates:
        # Duplicates are judged on the normalised texts (what the model would see), ignoring ids.
        extra.append(pl.concat_str([pl.col(c) for c in text_cols], separator="\t").hash(seed=0).alias("_hash"))
    return lf.with_columns(extra).collect(engine="streaming")


def ingest(
    paths: list[Path],
    kind: CorpusKind,
    rules: EffectiveRules,
    drop: DropRules,
    out_parquet: Path,
    rejects_path: Path,
    *,
    header: bool = True,
    max_chars: int = 5000,
    chunk_bytes: int = 16 << 20,
    progress: bool = False,
) -> IngestStats:
    """Read ``paths`` (all of one ``kind``), write accepted normalised rows to ``out_parquet``.

    Rejected lines (malformed) are appended to ``rejects_path`` as TSV ``file line reason content``
    (content backslash-escaped and cut to 2000 characters; a ``too_long`` line shows its first 200
    characters and its size). A file without data rows is a warning in ``stats.warnings`` and
    ``stats.empty_files``. Returns the reconciled statistics. Raises CorpusError for an unreadable file
    or a bad header.

    Three threads: a reader (file reads, newline split, UTF-8 check), this one (one streaming polars
    query per chunk: validation, normalisation, drop rules; then de-duplication and the rejects), and
    a Parquet writer (one row group per chunk). At most two chunks wait at each hand-over, so memory
    stays bounded by a few chunks whatever the corpus size; the output does not depend on the threads.
    """
    cols = COLUMNS[kind]
    stats = IngestStats(kind=kind, files=[str(p) for p in paths])
    dedupe = _Deduper()
    max_bytes = max_line_bytes(max_chars)
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(c, pa.string()) for c in cols] + [("source", pa.string()), ("line", pa.int64())])
    # Dictionary encoding only for `source` (one value per file): ids and tweets are nearly all
    # distinct, so trying a dictionary first cost 40 % of the writer's CPU and made the file larger.
    writer = pq.ParquetWriter(out_parquet, schema, compression="zstd", use_dictionary=["source"])
    background = _BackgroundWriter(writer.write_table)
    rejects = open(rejects_path, "a", encoding="utf-8")
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(p.stat().st_size for p in paths if p.exists())
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"normalize {kind}")
    chunks = None  # the current file's reader thread (a _prefetch generator)
    try:
        for path in paths:
            if not path.is_file():
                raise CorpusError(f"{path}: no such file (listed in params data.{kind})")
            line_no = 0  # 1-based line number of the next line
            rows_before = stats.rows_in
            chunks = _prefetch(_iter_line_chunks(path, chunk_bytes, max_bytes))
            for chunk in chunks:
                if isinstance(chunk.lines, pl.Series):
                    df = chunk.lines.to_frame("line")
                else:
                    df = pl.DataFrame({"line": chunk.lines}, schema={"line": pl.String})
                n = df.height
                pre_reason = [None] * n
                raw_bad = {}
                for i, reason, raw, size in chunk.bad:
                    pre_reason[i] = reason
                    raw_bad[i] = (raw, size)
                df = df.with_columns(
                    pl.Series("_pre_reason", pre_reason, dtype=pl.String),
                    (pl.int_range(n, dtype=pl.Int64) + line_no + 1).alias("_line"),
                )
                if line_no == 0 and header:
                    if 0 in raw_bad:
                        raw, size = raw_bad[0]
                        check_header(raw[:400].decode("utf-8", "backslashreplace") + (" ..." if size > 400 else ""), kind, path)
                    check_header(df["line"][0].removesuffix("\r"), kind, path)
                    df = df.slice(1)
                    stats.header_lines += 1
                chunk_start = line_no
                line_no += n
                # A blank line at the very end of a file is not a row; interior blank lines are
                # rejects (wrong_column_count).
                if chunk.is_last and df.height and df["line"][-1] == "" and df["_pre_reason"][-1] is None:
                    df = df.slice(0, df.height - 1)
                stats.rows_in += df.height
                df = _chunk_query(df, kind, rules, drop, max_chars)
                stats.crlf_line_endings += int(df["_crlf"].sum())
                bad_rows = df.filter(pl.col("reason").is_not_null())
                if bad_rows.height:
                    for reason, count in bad_rows.group_by("reason").len().iter_rows():
                        stats.rejected[reason] += count
                    for ln, reason, content in bad_rows.select("_line", "reason", "line").iter_rows():
                        rejects.write(f"{path}\t{ln}\t{reason}\t{_reject_content(content, reason, raw_bad.get(ln - chunk_start - 1))}\n")
                good = _apply_drop_rules(df.filter(pl.col("reason").is_null()), drop, stats, dedupe)
                good = good.select([*cols, pl.lit(str(path)).alias("source"), pl.col("_line").alias("line")])
                stats.rows_out += good.height
                if good.height:
                    background.put(good.to_arrow().cast(schema))
                if bar is not None:
                    bar.update(chunk.n_bytes)
                    bar.set_postfix(rows=stats.rows_in)
            chunks.close()  # (also closed by the finally below when the loop is left by an error)
            if stats.rows_in == rows_before:
                what = "is empty" if line_no == 0 else ("has a header but no rows" if header and line_no == 1 else "has no rows")
                stats.empty_files.append(str(path))
                stats.warnings.append(f"{path}: {what}; nothing read from it (listed in params data.{kind})")
    finally:
        if chunks is not None:
            chunks.close()  # stops the reader thread
        try:
            background.close()
        finally:
            writer.close()
            rejects.close()
            if bar is not None:
                bar.close()
    assert stats.reconciles, f"internal error: counts do not reconcile: {stats.to_dict()}"
    return stats


def _reject_content(line: str, reason: str, raw: tuple[bytes, int] | None) -> str:
    """The rejects file's ``content`` field: the line escaped (raw bytes backslash-escaped when it was
    never decoded), cut to 2000 characters; a too_long line shows a 200-character preview and its size."""
    if raw is not None:
        text, size = raw[0].decode("utf-8", "backslashreplace"), raw[1]
    else:
        text, size = line, len(line.encode("utf-8"))
    if reason == "too_long":
        return f"{_escape_raw(text[:_PREVIEW_CHARS])}... [too_long: {size} bytes]"
    return _escape_raw(text)[:_REJECT_CONTENT_CHARS]


def _apply_drop_rules(df: pl.DataFrame, drop: DropRules, stats: IngestStats, dedupe: _Deduper) -> pl.DataFrame:
    """Drop the accepted rows of a chunk by the rules (``_drop`` from :func:`_chunk_query`, then
    corpus-wide duplicates), counting each drop under the first rule that fires."""
    if drop.duplicates:
        candidates = df["_drop"].is_null().to_numpy()
        hashes = df["_hash"].to_numpy().astype(np.uint64)
        keep = np.ones(df.height, dtype=bool)
        idx = np.flatnonzero(candidates)
        keep[idx] = dedupe.first_occurrence(hashes[idx])
        df = df.with_columns(
            pl.when(pl.col("_drop").is_null() & ~pl.Series(keep)).then(pl.lit("duplicate")).otherwise(pl.col("_drop")).alias("_drop")
        )
    counts = df.filter(pl.col("_drop").is_not_null()).group_by("_drop").len()
    for name, count in counts.iter_rows():
        stats.dropped[name] += count
    return df.filter(pl.col("_drop").is_null())


def write_stats(path: Path, stats: dict[str, IngestStats], extra: dict | None = None) -> dict:
    """Write the DVC metrics JSON for the normalize stage."""
    data = {kind: s.to_dict() for kind, s in stats.items()}
    data["total"] = {
        "files": sum(len(s.files) for s in stats.values()),
        "empty_files": sum(len(s.empty_files) for s in stats.values()),
        "rows_in": sum(s.rows_in for s in stats.values()),
        "rows_out": sum(s.rows_out for s in stats.values()),
        "rows_rejected": sum(sum(s.rejected.values()) for s in stats.values()),
        "rows_dropped": sum(sum(s.dropped.values()) for s in stats.values()),
    }
    if extra:
        data.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return data


def normalize_corpora(
    *,
    pairs: list[Path],
    tweets: list[Path],
    cfg: "NormalizeConfig",
    out_dir: Path,
    header: bool = True,
    max_chars: int = 5000,
    progress: bool = False,
) -> dict:
    """The normalize stage's core: both corpus kinds -> ``out_dir/{pairs,tweets}.parquet``,
    ``out_dir/rejects.tsv`` and ``out_dir/stats.json``. Returns the stats dict (also written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rejects = out_dir / "rejects.tsv"
    rejects.write_text("file\tline\treason\tcontent\n", encoding="utf-8")
    rules = cfg.rules.effective()
    stats = {}
    for kind, paths in (("pairs", pairs), ("tweets", tweets)):
        stats[kind] = ingest(
            paths, kind, rules, cfg.drop, out_dir / f"{kind}.parquet", rejects,
            header=header, max_chars=max_chars, progress=progress,
        )
    # Only counts go in the metrics file (`dvc exp show` columns); the rule set is logged by the stage.
    data = write_stats(out_dir / "stats.json", stats)
    if data["total"]["rows_out"] == 0:
        # Written first, so stats.json and rejects.tsv show why; the next stages would fail later and
        # less clearly ("no text to train on").
        files = [f for s in stats.values() for f in s.files]
        t = data["total"]
        raise CorpusError(
            f"normalize: no row to write from {len(files)} input file(s) ({', '.join(files) or 'none'}): "
            f"{t['rows_in']} rows in, {t['rows_rejected']} rejected, {t['rows_dropped']} dropped; "
            f"see {out_dir / 'stats.json'} and {rejects}"
        )
    return data
