"""Ingestion: raw TSV -> validated, normalised, de-duplicated Parquet, with nothing lost.

Every line is accounted for: ``rows_in = rows_out + dropped (by rule) + rejected (by reason)``, and
every rejected line goes to the rejects file (the original TWilBERT skipped bad lines silently, see
docs/deviations.md). All row checks, normalisation and drop rules of a chunk run as one streaming
polars query. A file with no data rows is a warning counted in the stats (``empty_files``); if no
row at all comes out of the stage, it is an error: there is no corpus.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from twilbert.text.corpus.dedupe import Deduper
from twilbert.text.corpus_layout import (
    COLUMNS,
    DROP_RULES,
    REJECT_REASONS,
    TEXT_COLUMNS,
    UNIQUE_ID_COLUMN,
    CorpusError,
    CorpusKind,
)
from twilbert.text.corpus.lines import Chunk, iter_line_chunks, max_line_bytes
from twilbert.text.corpus.rows import check_header, reject_content, validate_and_split
from twilbert.text.corpus.threads import BackgroundWriter, prefetch
from twilbert.utils import atomic_outputs, atomic_write_text, writing
from twilbert.text.normalize import (
    DropRules,
    EffectiveRules,
    NormalizeConfig,
    few_words_expr,
    normalize_expr,
    placeholder_only_expr,
)


@dataclass
class IngestStats:
    """Per-corpus-kind accounting. ``reconciles`` must hold, or the ingestion itself is buggy."""

    kind: str
    files: list[str] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    header_lines: int = 0
    crlf_line_endings: int = 0
    repeated_ids: int = 0  # rows out whose UNIQUE_ID_COLUMN value an earlier row out had (counted, all kept)
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
            "repeated_ids": self.repeated_ids,
            "empty_files": len(self.empty_files),
            "empty_file_names": self.empty_files,
            "reconciles": self.reconciles,
        }


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
    lf = validate_and_split(df.lazy(), kind, max_chars)
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


@dataclass
class _Outputs:
    """Where an ingestion writes: the Parquet writer thread, the rejects file and the progress bar."""

    schema: pa.Schema
    writer: BackgroundWriter
    rejects: TextIO
    bar: object | None


def _chunk_frame(chunk: Chunk, line_no: int) -> tuple[pl.DataFrame, dict[int, tuple[bytes, int]]]:
    """A chunk's lines as a frame with the reader's verdict (``_pre_reason``) and 1-based ``_line``
    numbers, and the raw bytes and size of each line the reader could not use, by index in the chunk."""
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
    return df, raw_bad


def _check_header_row(df: pl.DataFrame, raw_bad: dict, kind: CorpusKind, path: Path) -> None:
    if 0 in raw_bad:
        raw, size = raw_bad[0]
        check_header(raw[:400].decode("utf-8", "backslashreplace") + (" ..." if size > 400 else ""), kind, path)
    check_header(df["line"][0].removesuffix("\r"), kind, path)


def _ingest_file(
    path: Path, kind: CorpusKind, rules: EffectiveRules, drop: DropRules, out: _Outputs, stats: IngestStats,
    dedupe: Deduper, ids: Deduper, *, header: bool, max_chars: int, chunk_bytes: int,
) -> None:
    """One input file through the chunk queries into ``out``, counted in ``stats``."""
    line_no = 0  # 1-based line number of the next line
    rows_before = stats.rows_in
    chunks = prefetch(iter_line_chunks(path, chunk_bytes, max_line_bytes(max_chars)))
    try:
        for chunk in chunks:
            df, raw_bad = _chunk_frame(chunk, line_no)
            if line_no == 0 and header:
                _check_header_row(df, raw_bad, kind, path)
                df = df.slice(1)
                stats.header_lines += 1
            chunk_start = line_no
            line_no += len(chunk.lines)
            # A blank line at the very end of a file is not a row; interior blank lines are
            # rejects (wrong_column_count).
            if chunk.is_last and df.height and df["line"][-1] == "" and df["_pre_reason"][-1] is None:
                df = df.slice(0, df.height - 1)
            stats.rows_in += df.height
            df = _chunk_query(df, kind, rules, drop, max_chars)
            stats.crlf_line_endings += int(df["_crlf"].sum())
            with writing(out.rejects.name):
                _write_rejects(df, path, raw_bad, chunk_start, out.rejects, stats)
            good = _apply_drop_rules(df.filter(pl.col("reason").is_null()), drop, stats, dedupe)
            good = good.select([*COLUMNS[kind], pl.lit(str(path)).alias("source"), pl.col("_line").alias("line")])
            stats.rows_out += good.height
            id_hashes = good[UNIQUE_ID_COLUMN[kind]].hash(seed=0).to_numpy().astype(np.uint64)
            stats.repeated_ids += int(id_hashes.size - ids.first_occurrence(id_hashes).sum())
            if good.height:
                out.writer.put(good.to_arrow().cast(out.schema))
            if out.bar is not None:
                out.bar.update(chunk.n_bytes, {"rows": stats.rows_in})
    finally:
        chunks.close()  # stops the reader thread
    if stats.rows_in == rows_before:
        what = "is empty" if line_no == 0 else ("has a header but no rows" if header and line_no == 1 else "has no rows")
        stats.empty_files.append(str(path))
        stats.warnings.append(f"{path}: {what}; nothing read from it (listed in params data.{kind})")


def _write_rejects(df: pl.DataFrame, path: Path, raw_bad: dict, chunk_start: int, rejects: TextIO, stats: IngestStats) -> None:
    bad_rows = df.filter(pl.col("reason").is_not_null())
    if not bad_rows.height:
        return
    for reason, count in bad_rows.group_by("reason").len().iter_rows():
        stats.rejected[reason] += count
    for ln, reason, content in bad_rows.select("_line", "reason", "line").iter_rows():
        rejects.write(f"{path}\t{ln}\t{reason}\t{reject_content(content, reason, raw_bad.get(ln - chunk_start - 1))}\n")


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
    stats = IngestStats(kind=kind, files=[str(p) for p in paths])
    dedupe, ids = Deduper(), Deduper()
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(c, pa.string()) for c in COLUMNS[kind]] + [("source", pa.string()), ("line", pa.int64())])
    # Dictionary encoding only for `source` (one value per file): ids and tweets are nearly all
    # distinct, so trying a dictionary first cost 40 % of the writer's CPU and made the file larger.
    with writing(out_parquet):
        writer = pq.ParquetWriter(out_parquet, schema, compression="zstd", use_dictionary=["source"])
    with writing(rejects_path):
        rejects = open(rejects_path, "a", encoding="utf-8")
    out = _Outputs(schema, BackgroundWriter(_named(writer.write_table, out_parquet)), rejects, None)
    if progress:
        from twilbert.progress import Progress

        total = sum(p.stat().st_size for p in paths if p.exists())
        out.bar = Progress(total, f"normalize {kind}", "B", unit_scale=True)
    try:
        for path in paths:
            if path.is_dir():
                raise CorpusError(f"{path}: is a directory, not a corpus file (listed in params data.{kind})")
            if not path.is_file():
                raise CorpusError(f"{path}: no such file (listed in params data.{kind})")
            _ingest_file(
                path, kind, rules, drop, out, stats, dedupe, ids, header=header, max_chars=max_chars, chunk_bytes=chunk_bytes
            )
    finally:
        try:
            out.writer.close()
        finally:
            try:
                with writing(out_parquet):
                    writer.close()
            finally:
                with writing(rejects_path):
                    out.rejects.close()
                if out.bar is not None:
                    out.bar.close()
    assert stats.reconciles, f"internal error: counts do not reconcile: {stats.to_dict()}"
    return stats


def _named(write, path: Path):
    """``write`` whose errors name ``path`` (it runs in the writer thread, so outside any ``with``)."""

    def call(table: pa.Table) -> None:
        with writing(path):
            write(table)

    return call


def _apply_drop_rules(df: pl.DataFrame, drop: DropRules, stats: IngestStats, dedupe: Deduper) -> pl.DataFrame:
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
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
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
    ``out_dir/rejects.tsv`` and ``out_dir/stats.json``. Returns the stats dict (also written).

    Each output is written under a temp name and renamed when all are complete; a failure removes
    the temps. The previous ``stats.json`` goes first and the new one is written last, so a stats file
    always describes the outputs beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").unlink(missing_ok=True)
    rejects = out_dir / "rejects.tsv"
    rules = cfg.rules.effective()
    stats = {}
    with atomic_outputs(out_dir / "pairs.parquet", out_dir / "tweets.parquet", rejects) as (*parquets, rejects_tmp):
        with writing(rejects_tmp):
            rejects_tmp.write_text("file\tline\treason\tcontent\n", encoding="utf-8")
        for (kind, paths), parquet in zip((("pairs", pairs), ("tweets", tweets)), parquets):
            stats[kind] = ingest(
                paths, kind, rules, cfg.drop, parquet, rejects_tmp,
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
