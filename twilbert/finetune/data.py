"""A task's three splits, read and validated: ``load_task`` is what every reader of a task goes through.

Each split file is read strictly (:mod:`twilbert.finetune.task_files`: errors name the file and line),
and its labels by the task's type (:mod:`twilbert.finetune.task_types`). The one tolerated problem is
leakage between splits: a dev/test row whose id an earlier split has is quarantined by default
(``repeated_ids: drop``), i.e. left out, recorded in ``TaskSplit.rejected`` (rejects.tsv and
metrics.json "data" of the finetune run) and announced on stderr, so that
``rows_in = rows_used + rows_rejected`` for every split; ``repeated_ids: error`` refuses instead.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from twilbert.finetune.config import TaskConfig
from twilbert.finetune.task_files import (
    ROW,
    SHOW,
    TaskDataError,
    check_lines,
    file_line,
    read_frame,
    require_columns,
    rows_where,
)

SPLITS = ("train", "dev", "test")
# Why a row read from a split file is not used (a later split's row whose id an earlier split has).
REJECT_REASONS = ("id_in_train", "id_in_dev")
SPLIT_REASONS = {"train": (), "dev": ("id_in_train",), "test": ("id_in_train", "id_in_dev")}


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
    labels: np.ndarray  # as the task type reads them: (N,) int64 single-label, (N, C) float32 0/1 multi-label, (N,) float32 regression
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



def _check_texts(df: pl.DataFrame, col: str, path: Path, max_chars: int) -> None:
    """No empty text, none over ``max_chars`` (often rows merged by a quoting error)."""
    rows_where(df, df[col].str.strip_chars() == "", path, f"empty text in column '{col}'")
    n_chars = df[col].str.len_chars()
    if (n_chars > max_chars).any():
        row = int((n_chars > max_chars).arg_true()[0])
        count = int((n_chars > max_chars).sum())
        raise TaskDataError(
            f"{path}: line {file_line(df[ROW][row])}: text in column '{col}' has {n_chars[row]} characters, more than "
            f"max_chars ({max_chars}; often rows merged by a quoting error)"
            + (f" ({count} rows over the limit)" if count > 1 else "")
        )


def read_split(path: str | Path, task: TaskConfig) -> TaskSplit:
    """Read and validate one split file of ``task`` (no cross-split checks: :func:`load_task`)."""
    path = Path(path)
    df, data = read_frame(path, task.delimiter)
    wanted = {"id_header": task.id_header, "text_header": task.text_header, "class_header": task.class_header}
    if task.aux_header is not None:
        wanted["aux_header"] = task.aux_header
    require_columns(df, path, wanted)
    check_lines(path, data, task.delimiter, df.height)
    cols = list(wanted.values())
    rows_where(df, df.select(pl.any_horizontal([pl.col(c).is_null() for c in cols])).to_series(), path, "fewer fields than the header")
    rows_where(df, df[task.id_header].str.strip_chars() == "", path, f"empty id in column '{task.id_header}'")
    for key in ("text_header", "aux_header"):
        if key in wanted:
            _check_texts(df, wanted[key], path, task.max_chars)
    labels = task.kind.read_labels(df, task.class_header, task, path)
    return TaskSplit(
        path=path,
        ids=df[task.id_header].to_list(),
        texts=df[task.text_header].to_list(),
        aux_texts=df[task.aux_header].to_list() if task.aux_header is not None else None,
        labels=labels,
        lines=(df[ROW].to_numpy().astype(np.int64) + 2),  # (N,) file_line of every row
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
    """``{split: {"rows_in", "rows_used", "rejected": {reason: n}, "repeated_ids"}}`` (for metrics.json);
    every split's own reasons are listed, zeros included, so the keys do not change from run to run.
    ``repeated_ids`` counts used rows whose id an earlier row of the same split has (kept: they leak
    nothing, but a user should know their ids are not unique)."""
    out = {}
    for name, s in splits.items():
        counts = {r: 0 for r in SPLIT_REASONS.get(name, REJECT_REASONS)}
        for r in s.rejected:
            counts[r.reason] = counts.get(r.reason, 0) + 1
        ids = list(s.ids)
        out[name] = {"rows_in": s.rows_in, "rows_used": len(s), "rejected": counts, "repeated_ids": len(ids) - len(set(ids))}
    return out


def quarantine_message(splits: dict[str, TaskSplit]) -> str | None:
    """One line summarising the quarantined rows (file, count, first lines), or None when there are none."""
    parts = []
    for s in splits.values():
        if s.rejected:
            shown = "; ".join(f"line {r.line} id {r.id!r} also in {r.also_in}" for r in s.rejected[:SHOW])
            more = ", ..." if len(s.rejected) > SHOW else ""
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


__all__ = [
    "REJECT_REASONS",
    "RejectedRow",
    "SPLITS",
    "TaskDataError",
    "TaskSplit",
    "data_counts",
    "load_task",
    "quarantine_message",
    "quarantine_repeated_ids",
    "read_split",
]
