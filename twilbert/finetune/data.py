"""Downstream task data: read, validate, normalise, tokenise, batch.

Reading is strict where the original was silent or crashed deep inside Keras (inventory §9): every
problem is a :class:`TaskDataError` (a ``ConfigError``, so the CLI prints one line) naming the file and,
for a row, its 1-based line number (the header is line 1). Files are read with polars without quoting
(tweets may start with ``"``) and without type inference (ids like ``007`` stay strings).

Decisions:
* an empty text or id, a row with fewer fields than the header (or a blank line), a stray ``\r``, a
  control character (the corpus reader's set, :mod:`twilbert.text.corpus`), a text over
  ``max_chars`` and invalid UTF-8 are errors naming the line, not silent drops: the splits are the
  task's definition, and a shifted or truncated file (EmoEvent's test file had 30 label-only rows,
  ``../shared/data/README.md``) must be fixed at the source;
* the one exception is leakage between splits: a dev/test row whose id an earlier split has is
  quarantined by default (``repeated_ids: drop``), i.e. left out, recorded in ``TaskSplit.rejected``
  (rejects.tsv and metrics.json "data" of the finetune run) and announced on stderr, so that
  ``rows_in = rows_used + rows_rejected`` for every split; ``repeated_ids: error`` refuses instead;
* multi-label fields are ``label_separator``-joined label names (empty = no label), or one 0/1 per
  category (``multi_label_format: multi_hot``, the original's SemEval E-c layout);
* inputs are ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with each segment truncated on the right to
  ``max_len`` tokens, padded on the right per batch with an attention mask (the original left-padded
  each segment to a length bucket and attended to the pads, bugs §13.2).
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from twilbert.config import ConfigError
from twilbert.finetune.config import TaskConfig
from twilbert.text.normalize import EffectiveRules, NormalizeRules, normalize_expr
from twilbert.text.tokenizer import Tokenizer
from twilbert.tokens import CLS_ID, PAD_ID, SEP_ID

SPLITS = ("train", "dev", "test")
# Why a row read from a split file is not used (a later split's row whose id an earlier split has).
REJECT_REASONS = ("id_in_train", "id_in_dev")
SPLIT_REASONS = {"train": (), "dev": ("id_in_train",), "test": ("id_in_train", "id_in_dev")}
_ROW = "__row__"
_SHOW = 5  # offending rows quoted in an error message


class TaskDataError(ConfigError):
    """A task file that cannot be used as it is; the message names the file (and line)."""


@dataclass(frozen=True)
class RejectedRow:
    """A row read from a split file and left out of the split, with the reason (:data:`REJECT_REASONS`)."""

    path: Path
    line: int  # 1-based file line (the header is line 1)
    id: str
    reason: str
    also_in: str  # where the id is too: "<file>:<line>"


@dataclass
class TaskSplit:
    """One split as read from disk (texts raw, labels validated), after the repeated-id quarantine.

    ``rows_in`` rows were read; ``len(split)`` are used; ``rejected`` holds the others, so that
    ``rows_in == len(split) + len(rejected)`` always.
    """

    path: Path
    ids: list[str]
    texts: list[str]
    aux_texts: list[str] | None  # text-pair tasks only
    labels: np.ndarray  # (N,) int64 single-label | (N, C) float32 0/1 multi-label | (N,) float32 regression
    lines: np.ndarray | None = None  # (N,) int64 file line of each row; None = not from a file
    rows_in: int | None = None  # rows read from the file (None = len(ids))
    rejected: list[RejectedRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rows_in is None:
            self.rows_in = len(self.ids) + len(self.rejected)
        if self.rows_in != len(self.ids) + len(self.rejected):  # a split built by hand must account for its rows too
            raise ValueError(f"{self.path}: rows_in {self.rows_in} != {len(self.ids)} used + {len(self.rejected)} rejected")
        if self.lines is not None and len(self.lines) != len(self.ids):
            raise ValueError(f"{self.path}: {len(self.lines)} line numbers for {len(self.ids)} rows")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray, rejected: list[RejectedRow]) -> "TaskSplit":
        """The rows ``keep`` (sorted indices), the others recorded as ``rejected``."""
        pick = lambda values: [values[i] for i in keep.tolist()]  # noqa: E731
        return TaskSplit(
            path=self.path,
            ids=pick(self.ids),
            texts=pick(self.texts),
            aux_texts=pick(self.aux_texts) if self.aux_texts is not None else None,
            labels=self.labels[keep],
            lines=self.lines[keep] if self.lines is not None else None,
            rows_in=self.rows_in,
            rejected=[*self.rejected, *rejected],
        )


@dataclass
class EncodedSplit:
    """Token ids of a split, flat (Arrow-style): example ``i`` is ``values[offsets[i]:offsets[i+1]]``.

    ``len_a`` is the length of ``[CLS] a [SEP]``; the token type is 1 from there on (segment b).
    """

    values: np.ndarray  # (M,) int64
    offsets: np.ndarray  # (N+1,) int64
    len_a: np.ndarray  # (N,) int64
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (N,)


# --------------------------------------------------------------------------------------------------
# reading and validation


def _line(row: int) -> int:
    """1-based file line of data row ``row`` (0-based): the header is line 1. Without quoting every
    line is one row (blank lines included), so this is exact (:func:`_check_lines` verifies it)."""
    return row + 2


# C0 controls other than \t (the field separator), \n (the line end) and \r (a CRLF's, or a stray
# one, reported as such): the corpus reader's set (twilbert/text/corpus.py ``_CONTROL``), as bytes.
# In UTF-8 these bytes never occur inside a multi-byte character, so a byte scan is exact.
_CONTROL_BYTES = np.zeros(256, dtype=bool)
_CONTROL_BYTES[[*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]] = True


def _read_frame(path: Path, delimiter: str) -> tuple[pl.DataFrame, bytes]:
    """The file as a frame of strings, and its bytes (for the line checks of :func:`_check_lines`)."""
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
            row_index_name=_ROW,
            raise_if_empty=True,
        )
    except pl.exceptions.NoDataError:
        raise TaskDataError(f"{path}: empty file (no header, no rows)") from None
    except pl.exceptions.ComputeError as exc:
        where = _undecodable_line(data) or _ragged_line(data, delimiter) or "cannot be read"
        raise TaskDataError(f"{path}: {where} ({str(exc).splitlines()[0]})") from None
    if b"\r" in data.split(b"\n", 1)[0].rstrip(b"\r"):  # else a CR-only file reads as one long header
        raise TaskDataError(
            f"{path}: line 1: a stray carriage return (\\r not ending the line) in the header (CR-only line ends? use \\n or \\r\\n)"
        )
    if df.height == 0:
        raise TaskDataError(f"{path}: empty split (a header and no rows)")
    return df, data


def _undecodable_line(data: bytes) -> str | None:
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


def _ragged_line(data: bytes, delimiter: str) -> str | None:
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


def _check_lines(path: Path, data: bytes, delimiter: str, n_rows: int) -> None:
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
    shown = ", ".join(str(int(n)) for n in lines[:_SHOW])
    return shown + (", ..." if len(lines) > _SHOW else "")


def _require_columns(df: pl.DataFrame, path: Path, wanted: dict[str, str]) -> None:
    available = [c for c in df.columns if c != _ROW]
    for key, col in wanted.items():
        if col not in available:
            raise TaskDataError(f"{path}: no column '{col}' ({key}); available columns: {available}")


def _rows_where(df: pl.DataFrame, mask: pl.Series, path: Path, what: str, col: str | None = None) -> None:
    """Raise naming the first offending lines when ``mask`` is true anywhere."""
    mask = mask.fill_null(True)
    if not mask.any():
        return
    bad = df.filter(mask)
    shown = []
    for r in bad.head(_SHOW).iter_rows(named=True):
        shown.append(f"line {_line(r[_ROW])}" + (f": {r[col]!r}" if col is not None else ""))
    more = f" (and {bad.height - _SHOW} more)" if bad.height > _SHOW else ""
    raise TaskDataError(f"{path}: {what}: {'; '.join(shown)}{more}")


def _single_labels(df: pl.DataFrame, col: str, task: TaskConfig, path: Path) -> np.ndarray:
    s = df[col]
    _rows_where(df, ~s.is_in(list(task.categories)), path, f"label not in categories {task.labels}", col)
    return s.replace_strict(dict(task.categories), return_dtype=pl.Int64).to_numpy()  # (N,)


def _multi_labels(df: pl.DataFrame, col: str, task: TaskConfig, path: Path) -> np.ndarray:
    n, c = df.height, len(task.categories)
    parts = df[col].str.split(task.label_separator)
    if task.multi_label_format == "multi_hot":
        _rows_where(df, parts.list.len() != c, path, f"expected {c} '{task.label_separator}'-separated 0/1 values ({task.labels})", col)
        _rows_where(df, ~parts.list.eval(pl.element().is_in(["0", "1"])).list.all(), path, "multi-hot values must be 0 or 1", col)
        return (parts.explode().to_numpy() == "1").reshape(n, c).astype(np.float32)  # (N, C)
    # names: an empty field is no label; every listed name must be a category ("a||b" names '')
    parts = df.select(
        pl.when(pl.col(col) == "").then(pl.lit([], dtype=pl.List(pl.String))).otherwise(pl.col(col).str.split(task.label_separator))
    ).to_series()
    known = parts.list.eval(pl.element().is_in(list(task.categories))).list.all()
    if not known.all():
        row = int(known.not_().arg_true()[0])
        bad = [v for v in parts[row].to_list() if v not in task.categories]
        count = int((~known).sum())
        raise TaskDataError(
            f"{path}: line {_line(df[_ROW][row])}: label {bad[0]!r} not in categories {task.labels}"
            + (f" ({count} rows with unknown labels)" if count > 1 else "")
        )
    out = np.zeros((n, c), dtype=np.float32)
    lens = parts.list.len().to_numpy()
    idx = parts.explode().drop_nulls().replace_strict(dict(task.categories), return_dtype=pl.Int64).to_numpy()
    out[np.repeat(np.arange(n), lens), idx] = 1.0  # (N, C) multi-hot
    return out


def _regression_labels(df: pl.DataFrame, col: str, path: Path) -> np.ndarray:
    values = df[col].str.strip_chars().cast(pl.Float64, strict=False)
    bad = values.is_null() | ~values.is_finite().fill_null(False)
    _rows_where(df, bad, path, "not a finite number", col)
    return values.to_numpy().astype(np.float32)  # (N,)


def read_split(path: str | Path, task: TaskConfig) -> TaskSplit:
    """Read and validate one split file of ``task`` (no cross-split checks: :func:`load_task`)."""
    path = Path(path)
    df, data = _read_frame(path, task.delimiter)
    wanted = {"id_header": task.id_header, "text_header": task.text_header, "class_header": task.class_header}
    if task.aux_header is not None:
        wanted["aux_header"] = task.aux_header
    _require_columns(df, path, wanted)
    _check_lines(path, data, task.delimiter, df.height)
    cols = list(wanted.values())
    _rows_where(df, df.select(pl.any_horizontal([pl.col(c).is_null() for c in cols])).to_series(), path, "fewer fields than the header")
    _rows_where(df, df[task.id_header].str.strip_chars() == "", path, f"empty id in column '{task.id_header}'")
    for key in ("text_header", "aux_header"):
        if key in wanted:
            col = wanted[key]
            _rows_where(df, df[col].str.strip_chars() == "", path, f"empty text in column '{col}'")
            n_chars = df[col].str.len_chars()
            if (n_chars > task.max_chars).any():
                row = int((n_chars > task.max_chars).arg_true()[0])
                count = int((n_chars > task.max_chars).sum())
                raise TaskDataError(
                    f"{path}: line {_line(df[_ROW][row])}: text in column '{col}' has {n_chars[row]} characters, more than "
                    f"max_chars ({task.max_chars}; often rows merged by a quoting error)"
                    + (f" ({count} rows over the limit)" if count > 1 else "")
                )
    if task.regression:
        labels = _regression_labels(df, task.class_header, path)
    elif task.multi_label:
        labels = _multi_labels(df, task.class_header, task, path)
    else:
        labels = _single_labels(df, task.class_header, task, path)
    return TaskSplit(
        path=path,
        ids=df[task.id_header].to_list(),
        texts=df[task.text_header].to_list(),
        aux_texts=df[task.aux_header].to_list() if task.aux_header is not None else None,
        labels=labels,
        lines=(df[_ROW].to_numpy().astype(np.int64) + 2),  # (N,) _line of every row
    )


def _first_lines(split: TaskSplit) -> dict[str, int]:
    """id -> the file line of its first row in ``split``."""
    out: dict[str, int] = {}
    lines = split.lines if split.lines is not None else np.arange(len(split)) + 2
    for i, line in zip(split.ids, lines.tolist()):
        out.setdefault(i, line)
    return out


def quarantine_repeated_ids(splits: dict[str, TaskSplit], mode: str) -> dict[str, TaskSplit]:
    """A dev row whose id is in train, and a test row whose id is in train or dev, would score the
    model on a tweet it was trained (or selected) on: ``mode="drop"`` removes such rows from the later
    split and records them (``TaskSplit.rejected``, reason ``id_in_train`` / ``id_in_dev``: train wins
    when the id is in both); ``mode="error"`` raises naming the first such row and where its id is.
    Train is never changed. Repeats within one split are left alone (they leak nothing)."""
    earlier: list[tuple[str, TaskSplit, dict[str, int]]] = []
    out: dict[str, TaskSplit] = {}
    for name in SPLITS:
        split = splits[name]
        if split.lines is None:
            split = dataclasses.replace(split, lines=np.arange(len(split), dtype=np.int64) + 2)
        if earlier:
            bad: dict[int, tuple[str, Path, int]] = {}  # row -> (reason, other file, other line)
            for other_name, other, first in earlier:
                for row, i in enumerate(split.ids):
                    if i in first and row not in bad:
                        bad[row] = (f"id_in_{other_name}", other.path, first[i])
            if bad and mode == "error":
                row = min(bad)
                _, other_path, other_line = bad[row]
                more = f" ({len(bad)} rows of this split repeat an id of an earlier split)" if len(bad) > 1 else ""
                raise TaskDataError(
                    f"{split.path}: line {split.lines[row]}: id {split.ids[row]!r} is also in {other_path} (line {other_line}){more}; "
                    "repeated_ids: drop quarantines such rows instead"
                )
            if bad:
                rejected = [RejectedRow(split.path, int(split.lines[r]), split.ids[r], reason, f"{p}:{line}")
                            for r, (reason, p, line) in sorted(bad.items())]
                keep = np.array([r for r in range(len(split)) if r not in bad], dtype=np.int64)
                if not len(keep):
                    raise TaskDataError(
                        f"{split.path}: empty split once quarantined: all {len(split)} rows repeat an id of an earlier split "
                        f"(first: line {rejected[0].line}, id {rejected[0].id!r} also in {rejected[0].also_in})"
                    )
                split = split.subset(keep, rejected)
        earlier.append((name, splits[name], _first_lines(splits[name])))
        out[name] = split
    return out


def data_counts(splits: dict[str, TaskSplit]) -> dict[str, dict]:
    """``{split: {"rows_in", "rows_used", "rejected": {reason: n}}}`` (for metrics.json); every split's
    own reasons are listed, zeros included, so the keys do not change from run to run."""
    out = {}
    for name, s in splits.items():
        counts = {r: 0 for r in SPLIT_REASONS.get(name, REJECT_REASONS)}
        for r in s.rejected:
            counts[r.reason] = counts.get(r.reason, 0) + 1
        out[name] = {"rows_in": s.rows_in, "rows_used": len(s), "rejected": counts}
    return out


def quarantine_message(splits: dict[str, TaskSplit]) -> str | None:
    """One line summarising the quarantined rows (file, count, first lines), or None when there are none."""
    parts = []
    for s in splits.values():
        if s.rejected:
            shown = "; ".join(f"line {r.line} id {r.id!r} also in {r.also_in}" for r in s.rejected[:_SHOW])
            more = ", ..." if len(s.rejected) > _SHOW else ""
            parts.append(f"{s.path}: {_rows(len(s.rejected))} ({shown}{more})")
    if not parts:
        return None
    total = sum(len(s.rejected) for s in splits.values())
    return f"quarantined {_rows(total)} whose id is in an earlier split (repeated_ids: drop): " + " | ".join(parts)


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def load_task(task: TaskConfig, root: str | Path | None = None, *, name: str | None = None, warn: bool = True) -> dict[str, TaskSplit]:
    """``{"train": ..., "dev": ..., "test": ...}``; relative file names are resolved against ``root``.

    Rows of dev/test whose id is in an earlier split follow ``task.repeated_ids``
    (:func:`quarantine_repeated_ids`); with ``warn``, quarantined rows get one line on stderr
    (``tasks.<name>: warning: ...``). Every reader of a task (fine-tuning, the baseline) goes through
    here, so all of them see the same splits."""
    read = {}
    for split in SPLITS:
        p = Path(getattr(task, f"{split}_file"))
        if root is not None and not p.is_absolute():
            p = Path(root) / p
        read[split] = read_split(p, task)
    out = quarantine_repeated_ids(read, task.repeated_ids)
    message = quarantine_message(out)
    if warn and message is not None:
        print(f"{f'tasks.{name}' if name else 'task'}: warning: {message}", file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------------------------------
# class weights


def class_weights(task: TaskConfig, train_labels: np.ndarray) -> np.ndarray:
    """(C,) float32 weights, one per category index.

    * a dict: the given weights, 1.0 for categories it does not name;
    * ``auto``: ``count(majority) / count(c)`` (the original's ``Utils.max_ratio_weights``); for a
      multi-label task the counts are each label's positives (the original silently dropped ``auto``
      for multi-label, bug §13.15). A category absent from train counts as 1 (its weight is then the
      largest, and finite);
    * ``ones``: all 1.
    """
    c = len(task.categories)
    if isinstance(task.class_weights, str) and task.class_weights == "ones":
        return np.ones(c, dtype=np.float32)
    if isinstance(task.class_weights, str):  # auto
        counts = train_labels.sum(0) if task.multi_label else np.bincount(train_labels, minlength=c)
        counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
        return (counts.max() / counts).astype(np.float32)
    w = np.ones(c, dtype=np.float32)
    for label, value in task.class_weights.items():
        w[task.categories[label]] = value
    return w


# --------------------------------------------------------------------------------------------------
# normalisation and tokenisation


def normalize_column(texts: Sequence[str], rules: EffectiveRules | NormalizeRules | None) -> list[str]:
    """The project's normaliser over a whole column (``rules=None``: texts unchanged)."""
    if rules is None:
        return list(texts)
    df = pl.DataFrame({"t": list(texts)}, schema={"t": pl.String})
    return df.select(normalize_expr(pl.col("t"), rules))["t"].to_list()


def _truncated(values: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``max_len`` tokens of every row of a flat (values, offsets) list."""
    lengths = np.diff(offsets)  # (N,)
    keep = np.minimum(lengths, max_len)  # (N,)
    pos = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)  # (M,) position within its row
    return values[pos < np.repeat(keep, lengths)].astype(np.int64), keep


def _scatter_rows(out: np.ndarray, dest_start: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> None:
    """``out[dest_start[i] : dest_start[i] + lengths[i]] = row i of values``, for all rows at once."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    pos = np.arange(len(values)) - np.repeat(starts, lengths)  # (M,)
    out[np.repeat(dest_start, lengths) + pos] = values


def encode_texts(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    aux_texts: Sequence[str] | None,
    *,
    max_len: int,
    rules: EffectiveRules | NormalizeRules | None,
    labels: np.ndarray | None = None,
    num_threads: int = 0,
) -> EncodedSplit:
    """Normalise, tokenise (SentencePiece thread pool), truncate each segment to ``max_len`` and lay
    out ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` (the layout of ``tokenizer.build_input``; a pair
    keeps its second ``[SEP]`` even when b normalises to nothing). Vectorised over the whole column.
    Used for training data and, later, for prediction."""
    va, la = _truncated(*tokenizer.encode_flat(normalize_column(texts, rules), num_threads=num_threads), max_len)
    lengths = la + 2
    if aux_texts is not None:
        vb, lb = _truncated(*tokenizer.encode_flat(normalize_column(aux_texts, rules), num_threads=num_threads), max_len)
        lengths = lengths + lb + 1
    offsets = np.zeros(len(la) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.int64)
    out[offsets[:-1]] = CLS_ID
    _scatter_rows(out, offsets[:-1] + 1, va, la)
    out[offsets[:-1] + la + 1] = SEP_ID
    if aux_texts is not None:
        _scatter_rows(out, offsets[:-1] + la + 2, vb, lb)
        out[offsets[1:] - 1] = SEP_ID
    if labels is None:
        labels = np.zeros(len(la), dtype=np.float32)
    return EncodedSplit(values=out, offsets=offsets, len_a=la + 2, labels=labels)


def encode_split(split: TaskSplit, tokenizer: Tokenizer, *, max_len: int, rules, num_threads: int = 0) -> EncodedSplit:
    return encode_texts(tokenizer, split.texts, split.aux_texts, max_len=max_len, rules=rules, labels=split.labels, num_threads=num_threads)


# --------------------------------------------------------------------------------------------------
# batching


@dataclass
class Batch:
    index: np.ndarray  # (B,) example indices into the split
    input_ids: torch.Tensor  # (B, T) long
    token_type_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) bool, True = real token
    labels: torch.Tensor  # (B,) long | (B, C) float | (B,) float

    def to(self, device) -> "Batch":
        nb = torch.device(device).type == "cuda"
        return Batch(
            self.index,
            self.input_ids.to(device, non_blocking=nb),
            self.token_type_ids.to(device, non_blocking=nb),
            self.attention_mask.to(device, non_blocking=nb),
            self.labels.to(device, non_blocking=nb),
        )


def collate(data: EncodedSplit, index: np.ndarray) -> Batch:
    """Right-pad examples ``index`` to the batch's longest, vectorised (no per-token Python)."""
    starts, lengths = data.offsets[index], data.lengths[index]  # (B,), (B,)
    T = int(lengths.max())
    pos = np.arange(T)[None, :]  # (1, T)
    mask = pos < lengths[:, None]  # (B, T)
    gather = np.minimum(starts[:, None] + pos, max(len(data.values) - 1, 0))  # (B, T)
    ids = np.where(mask, data.values[gather], PAD_ID)  # (B, T)
    types = (pos >= data.len_a[index][:, None]) & mask  # (B, T)
    return Batch(
        index=index,
        input_ids=torch.from_numpy(ids.astype(np.int64)),
        token_type_ids=torch.from_numpy(types.astype(np.int64)),
        attention_mask=torch.from_numpy(mask),
        labels=torch.from_numpy(np.ascontiguousarray(data.labels[index])),
    )


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Training batches of similar lengths, in a new random order every call.

    Shuffle all examples, cut the permutation into pools of ``pool * batch_size``, sort each pool by
    length (stable, so ties keep the random order), cut pools into batches, shuffle the batches. Less
    padding than random batches while every epoch sees different batches (the original re-seeded every
    epoch and so repeated one order, bug §13.19; its batches were whole length buckets).
    """
    perm = rng.permutation(len(lengths))
    batches = []
    size = pool * batch_size
    for start in range(0, len(perm), size):
        chunk = perm[start : start + size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def eval_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Deterministic batches sorted by length (least padding); callers scatter results back by index."""
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


__all__ = [
    "Batch",
    "EncodedSplit",
    "REJECT_REASONS",
    "RejectedRow",
    "SPLITS",
    "TaskDataError",
    "TaskSplit",
    "bucketed_batches",
    "class_weights",
    "collate",
    "encode_split",
    "encode_texts",
    "eval_batches",
    "data_counts",
    "load_task",
    "normalize_column",
    "quarantine_message",
    "quarantine_repeated_ids",
    "read_split",
]
