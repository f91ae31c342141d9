"""One task split file as a frame of strings, checked byte by byte: every problem names the file and line.

Files are read with polars without quoting (tweets may start with ``"``) and without type inference
(ids like ``007`` stay strings). An empty text or id, a row with fewer fields than the header (or a
blank line), a stray ``\r``, a control character (the corpus reader's set, :mod:`twilbert.text.corpus`),
a text over ``max_chars`` and invalid UTF-8 are errors naming the line, not silent drops: the splits
are the task's definition, and a shifted or truncated file (EmoEvent's test file had 30 label-only
rows, ``../shared/data/README.md``) must be fixed at the source. The original read these files
without such checks and failed, if at all, deep inside Keras (docs/deviations.md#finetune-data-strict).

The line helpers (:func:`undecodable_line`, :func:`ragged_line`) also explain the prediction input
reader's errors (:mod:`twilbert.inference`), in the same words.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl

from twilbert.config import ConfigError

ROW = "__row__"  # the frame's 0-based data row index column
SHOW = 5  # offending rows quoted in an error message


class TaskDataError(ConfigError):
    """A task file that cannot be used as it is; the message names the file (and line)."""


def file_line(row: int) -> int:
    """1-based file line of data row ``row`` (0-based): the header is line 1. Without quoting every
    line is one row (blank lines included), so this is exact (:func:`check_lines` verifies it)."""
    return row + 2


# C0 controls other than \t (the field separator), \n (the line end) and \r (a CRLF's, or a stray
# one, reported as such): the corpus reader's set (twilbert/text/corpus/rows.py ``CONTROL``), as bytes.
# In UTF-8 these bytes never occur inside a multi-byte character, so a byte scan is exact.
_CONTROL_BYTES = np.zeros(256, dtype=bool)
_CONTROL_BYTES[[*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]] = True


def read_frame(path: Path, delimiter: str) -> tuple[pl.DataFrame, bytes]:
    """The file as a frame of strings, and its bytes (for the line checks of :func:`check_lines`)."""
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise TaskDataError(f"{path}: empty file (no header, no rows)")
    try:
        df = pl.read_csv(
            io.BytesIO(data),
            separator=delimiter,
            quote_char=None,
            infer_schema=False,
            empty_string_is_null=False,
            row_index_name=ROW,
            raise_if_empty=True,
        )
    except pl.exceptions.NoDataError:
        raise TaskDataError(f"{path}: empty file (no header, no rows)") from None
    except pl.exceptions.ComputeError as exc:
        where = undecodable_line(data) or ragged_line(data, delimiter) or "cannot be read"
        raise TaskDataError(f"{path}: {where} ({str(exc).splitlines()[0]})") from None
    if b"\r" in data.split(b"\n", 1)[0].rstrip(b"\r"):  # else a CR-only file reads as one long header
        raise TaskDataError(
            f"{path}: line 1: a stray carriage return (\\r not ending the line) in the header (CR-only line ends? use \\n or \\r\\n)"
        )
    if df.height == 0:
        raise TaskDataError(f"{path}: empty split (a header and no rows)")
    return df, data


def undecodable_line(data: bytes) -> str | None:
    """Only on the error path: the first line that is not UTF-8, and where in it.

    ``byte`` is 1-based within the line (what an editor's column shows for ASCII text); the file
    offset is given too, for a hex dump."""
    offset = 0
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return f"line {n}: invalid UTF-8 at byte {err.start + 1} (0x{raw[err.start]:02x}; file offset {offset + err.start})"
        offset += len(raw) + 1
    return None


def ragged_line(data: bytes, delimiter: str) -> str | None:
    """Only on the error path: the first line with more fields than the header."""
    d = delimiter.encode()
    lines = data.split(b"\n")
    header = lines[0].count(d)
    for n, raw in enumerate(lines[1:], start=2):
        if raw.count(d) > header:
            cr = " (it holds a \\r: a file with CR-only line ends?)" if b"\r" in raw.rstrip(b"\r") else ""
            return f"line {n} has {raw.count(d) + 1} fields, the header has {header + 1}{cr}"
    return None


def _line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L,) start and (L,) end byte offsets of every line, the ``\\n`` and a CRLF's ``\\r`` excluded.
    A final newline ends the last line; it does not start a new one."""
    nl = np.flatnonzero(buf == 0x0A)  # (K,)
    starts = np.concatenate([[0], nl + 1])  # (K+1,)
    ends = np.concatenate([nl, [len(buf)]])  # (K+1,)
    if buf[-1] == 0x0A:
        starts, ends = starts[:-1], ends[:-1]
    crlf = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 0x0D)  # (L,) the line ends in \r\n (or \r at EOF)
    return starts, ends - crlf


def _count_in(positions: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(L,) how many of the sorted ``positions`` fall in each line ``[start, end)``."""
    return np.searchsorted(positions, ends) - np.searchsorted(positions, starts)


def check_lines(path: Path, data: bytes, delimiter: str, n_rows: int) -> None:
    """Byte-level checks of a file polars has read (so it is valid UTF-8), vectorised over lines.

    * a row with fewer fields than the header (polars fills the missing ones with ``""``, which would
      then read as an empty text or a label ``''``), a blank line;
    * a stray ``\\r`` (one that does not end its line): polars keeps it, or silently drops it before a
      delimiter, so a CR-only file or a CR inside a field would change the text unseen;
    * a control character (NUL, escape, ...: the corpus reader's ``control_chars``).
    Tabs are the usual delimiter, so a tab inside a field shows as a row with too many fields.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = _line_bounds(buf)  # (L,), (L,); line 1 is the header
    if len(starts) - 1 != n_rows:  # the reader and this scan must agree on what a line is
        raise TaskDataError(f"{path}: read {n_rows} rows but the file has {len(starts) - 1} lines after the header")
    sep = delimiter.encode()[0]
    seps = np.flatnonzero(buf == sep)  # (S,)
    fields = _count_in(seps, starts, ends) + 1  # (L,)
    header = data[starts[0] : ends[0]].decode("utf-8").removeprefix("\ufeff").split(delimiter)

    short = np.flatnonzero(fields < fields[0])  # 0-based line indices
    if len(short):
        k = int(short[0])
        what = "is blank" if ends[k] == starts[k] else f"has {fields[k]} fields"
        more = f" (and {len(short) - 1} more short rows: {_lines_list(short[1:] + 1)})" if len(short) > 1 else ""
        raise TaskDataError(f"{path}: line {k + 1} {what}, the header has {fields[0]} (a short or truncated row){more}")

    control = _CONTROL_BYTES.copy()
    control[sep] = False
    for positions, what in (
        (np.flatnonzero(buf == 0x0D), "a stray carriage return (\\r not ending the line)"),
        (np.flatnonzero(control[buf]), None),
    ):
        inside = positions[np.isin(positions, ends, invert=True)]  # a CRLF's \r sits at its line's end
        if not len(inside):
            continue
        p = int(inside[0])
        k = int(np.searchsorted(starts, p, side="right")) - 1  # line index of byte p
        col = int(np.searchsorted(seps, p) - np.searchsorted(seps, starts[k]))  # fields before p on its line
        name = header[col] if col < len(header) else f"#{col + 1}"
        bad_lines = np.unique(np.searchsorted(starts, inside, side="right"))  # 1-based line numbers
        more = f" (and {len(bad_lines) - 1} more lines: {_lines_list(bad_lines[1:])})" if len(bad_lines) > 1 else ""
        what = what or f"control character U+{int(buf[p]):04X}"
        raise TaskDataError(f"{path}: line {k + 1}: {what} in column '{name}'{more}")


def _lines_list(lines: np.ndarray) -> str:
    shown = ", ".join(str(int(n)) for n in lines[:SHOW])
    return shown + (", ..." if len(lines) > SHOW else "")


def require_columns(df: pl.DataFrame, path: Path, wanted: dict[str, str]) -> None:
    available = [c for c in df.columns if c != ROW]
    for key, col in wanted.items():
        if col not in available:
            raise TaskDataError(f"{path}: no column '{col}' ({key}); available columns: {available}")


def rows_where(df: pl.DataFrame, mask: pl.Series, path: Path, what: str, col: str | None = None) -> None:
    """Raise naming the first offending lines when ``mask`` is true anywhere."""
    mask = mask.fill_null(True)
    if not mask.any():
        return
    bad = df.filter(mask)
    shown = []
    for r in bad.head(SHOW).iter_rows(named=True):
        shown.append(f"line {file_line(r[ROW])}" + (f": {r[col]!r}" if col is not None else ""))
    more = f" (and {bad.height - SHOW} more)" if bad.height > SHOW else ""
    raise TaskDataError(f"{path}: {what}: {'; '.join(shown)}{more}")



__all__ = ["ROW", "TaskDataError", "check_lines", "file_line", "ragged_line", "read_frame", "require_columns", "rows_where", "undecodable_line"]
