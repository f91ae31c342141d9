"""Row validation and the rejects file: which raw lines are malformed, why, and how they are shown.

Every line is accounted for: a line that cannot be a row gets the first reason that applies (see
``REJECT_REASONS``) and goes to the rejects file with its file name, line number and content.
Headers are checked by name, not only by column count: with ``data.header: true`` a header-less
file would otherwise lose its first row silently.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from twilbert.text.corpus_layout import COLUMNS, HEADERS, ID_COLUMNS, TEXT_COLUMNS, CorpusError, CorpusKind
from twilbert.text.corpus.lines import PREVIEW_CHARS

REJECT_CONTENT_CHARS = 2000  # other rejects: content cut to this many characters
# C0 controls other than \t (field separator) and \r (handled separately): NUL, bells, escapes...
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


# Backslash-escapes for the rejects file: its own separators (tab, newline), and every other control
# or line-breaking character (C0, DEL, C1, U+2028/9), so that any line reader (``str.splitlines``
# included) sees one reject per line and a terminal never runs an escape sequence from a bad input.
_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\r"): "\\r", ord("\n"): "\\n"}
_ESCAPES |= {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)] if c not in _ESCAPES}
_ESCAPES |= {0x2028: "\\u2028", 0x2029: "\\u2029"}


def escape_raw(s: str) -> str:
    return s.translate(_ESCAPES)


def validate_and_split(df: pl.DataFrame | pl.LazyFrame, kind: CorpusKind, max_chars: int) -> pl.DataFrame | pl.LazyFrame:
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
        .when(body.str.contains(CONTROL))
        .then(pl.lit("control_chars"))
        .when(pl.any_horizontal([pl.col(c).str.strip_chars().str.len_chars() == 0 for c in id_cols]))
        .then(pl.lit("empty_id"))
        .when(pl.any_horizontal([pl.col(c).str.strip_chars().str.len_chars() == 0 for c in text_cols]))
        .then(pl.lit("empty_text"))
        # CSV quoting only when unmistakable: quotes around the field *and* CSV's doubled "" escape
        # inside. A tweet may start and end with a quote ("Hola", dijo), so that alone is kept.
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

    Checking only the column count would let a header-less pairs file read with ``data.header: true``
    silently lose its first data row."""
    names = tuple(f.strip().upper() for f in line.split("\t"))
    if names in HEADERS[kind]:
        return
    expected = " or ".join(" ".join(h) for h in HEADERS[kind])
    shown = escape_raw(line)
    shown = shown if len(shown) <= 120 else shown[:120] + "..."
    raise CorpusError(
        f"{path}: line 1 is not a {kind} header: '{shown}' (expected {expected}, any case); "
        "if the file has no header, set data.header: false"
    )


def reject_content(line: str, reason: str, raw: tuple[bytes, int] | None) -> str:
    """The rejects file's ``content`` field: the line escaped (raw bytes backslash-escaped when it was
    never decoded), cut to 2000 characters; a too_long line shows a 200-character preview and its size."""
    if raw is not None:
        text, size = raw[0].decode("utf-8", "backslashreplace"), raw[1]
    else:
        text, size = line, len(line.encode("utf-8"))
    if reason == "too_long":
        return f"{escape_raw(text[:PREVIEW_CHARS])}... [too_long: {size} bytes]"
    return escape_raw(text)[:REJECT_CONTENT_CHARS]
