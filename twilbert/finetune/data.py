"""Downstream task data: read, validate, normalise, tokenise, batch.

Reading is strict where the original was silent or crashed deep inside Keras (inventory §9): every
problem is a :class:`TaskDataError` (a ``ConfigError``, so the CLI prints one line) naming the file and,
for a row, its 1-based line number (the header is line 1). Files are read with polars without quoting
(tweets may start with ``"``) and without type inference (ids like ``007`` stay strings).

Decisions:
* an empty text (or a row with fewer fields than the header) is an error, not a silent drop: the
  splits are the task's definition, and a shifted or truncated file (EmoEvent's test file had 30
  label-only rows, ``../shared/data/README.md``) must be fixed at the source;
* multi-label fields are ``label_separator``-joined label names (empty = no label), or one 0/1 per
  category (``multi_label_format: multi_hot``, the original's SemEval E-c layout);
* inputs are ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with each segment truncated on the right to
  ``max_len`` tokens, padded on the right per batch with an attention mask (the original left-padded
  each segment to a length bucket and attended to the pads, bugs §13.2).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from twilbert.config import ConfigError
from twilbert.finetune.config import TaskConfig
from twilbert.model.config import CLS_ID, PAD_ID, SEP_ID
from twilbert.text.normalize import EffectiveRules, NormalizeRules, normalize_expr
from twilbert.text.tokenizer import Tokenizer

SPLITS = ("train", "dev", "test")
_ROW = "__row__"
_SHOW = 5  # offending rows quoted in an error message


class TaskDataError(ConfigError):
    """A task file that cannot be used as it is; the message names the file (and line)."""


@dataclass
class TaskSplit:
    """One split as read from disk (texts raw, labels validated)."""

    path: Path
    ids: list[str]
    texts: list[str]
    aux_texts: list[str] | None  # text-pair tasks only
    labels: np.ndarray  # (N,) int64 single-label | (N, C) float32 0/1 multi-label | (N,) float32 regression

    def __len__(self) -> int:
        return len(self.ids)


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
    line is one row (blank lines included), so this is exact."""
    return row + 2


def _read_frame(path: Path, delimiter: str) -> pl.DataFrame:
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file")
    try:
        df = pl.read_csv(
            path,
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
        raise TaskDataError(f"{path}: {_ragged_line(path, delimiter) or 'cannot be read'} ({str(exc).splitlines()[0]})") from None
    if df.height == 0:
        raise TaskDataError(f"{path}: empty split (a header and no rows)")
    return df


def _ragged_line(path: Path, delimiter: str) -> str | None:
    """Only on the error path: the first line with more fields than the header."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        header = f.readline().rstrip("\r\n").count(delimiter)
        for n, line in enumerate(f, start=2):
            if line.rstrip("\r\n").count(delimiter) > header:
                return f"line {n} has {line.count(delimiter) + 1} fields, the header has {header + 1}"
    return None


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
    """Read and validate one split file of ``task``."""
    path = Path(path)
    df = _read_frame(path, task.delimiter)
    wanted = {"id_header": task.id_header, "text_header": task.text_header, "class_header": task.class_header}
    if task.aux_header is not None:
        wanted["aux_header"] = task.aux_header
    _require_columns(df, path, wanted)
    cols = list(wanted.values())
    _rows_where(df, df.select(pl.any_horizontal([pl.col(c).is_null() for c in cols])).to_series(), path, "fewer fields than the header")
    for key in ("text_header", "aux_header"):
        if key in wanted:
            col = wanted[key]
            _rows_where(df, df[col].str.strip_chars() == "", path, f"empty text in column '{col}'")
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
    )


def load_task(task: TaskConfig, root: str | Path | None = None) -> dict[str, TaskSplit]:
    """``{"train": ..., "dev": ..., "test": ...}``; relative file names are resolved against ``root``."""
    out = {}
    for split in SPLITS:
        p = Path(getattr(task, f"{split}_file"))
        if root is not None and not p.is_absolute():
            p = Path(root) / p
        out[split] = read_split(p, task)
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
    "SPLITS",
    "TaskDataError",
    "TaskSplit",
    "bucketed_batches",
    "class_weights",
    "collate",
    "encode_split",
    "encode_texts",
    "eval_batches",
    "load_task",
    "normalize_column",
    "read_split",
]
