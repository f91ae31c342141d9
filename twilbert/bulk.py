"""Bulk prediction: files of any size through :class:`~twilbert.inference.Predictor`, streamed.

``twilbert predict -i big.tsv`` reads its file in chunks of :data:`CHUNK_ROWS` rows (polars'
streaming reader), so neither the texts nor the predictions of the whole file are ever held at
once: memory is bounded by a few chunks whatever the file's size. Per chunk:

* a background thread reads the *next* chunk and normalises and tokenises it (polars, SentencePiece:
  native code that releases the GIL) while the model computes this one, so the cores never wait for
  tokenisation (at most :data:`PREFETCH` chunks wait, encoded, in the queue);
* :meth:`Predictor.outputs_of` runs the chunk's length-sorted batches (a chunk of thousands of texts
  sorts as well as the whole file does) and scatters the results back to row order;
* its JSON lines are written at once, in input order, and a progress bar on a terminal counts rows;
* the memory the chunk's batches freed is handed back to the OS (:func:`release_freed_memory`), and
  during the first chunk also every :data:`TRIM_EVERY_S` seconds while it computes.

Peak RSS is set by the first chunk, not by the input's size: while its batches run, oneDNN creates
and caches a primitive per tensor shape of its GELU, and these long-lived small objects pin freed
activations in glibc's heap (one 8,192-text pass of the small classifier: 0.47 GB -> 1.17 GB peak;
with oneDNN's cache off 0.64 GB; trimmed every 2 s 0.89 GB; ~0.47 GB again after ``malloc_trim``).

A file error (a missing column, a null, a bad line) is found by the chunk that holds it; its message
is :func:`twilbert.inference.read_input_file`'s, which re-reads the file to name the line.
"""

from __future__ import annotations

import ctypes
import functools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from twilbert.inference import InputError, InputTexts, OutputError, Predictor, _fmt_of, read_input_file

CHUNK_ROWS = 8192  # rows per chunk: enough for length sorting to leave little padding
PREFETCH = 2  # encoded chunks waiting for the model at most
TRIM_EVERY_S = 2.0  # freed heap handed back this often while the first chunk computes (every 0.5 s cost ~7% in-process)


def prefetch(items: Iterable[Any], depth: int = PREFETCH) -> Iterator[Any]:
    """``items`` produced by a background thread, at most ``depth`` ahead; its exceptions re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # handed to the consumer
            q.put((done, exc))

    thread = threading.Thread(target=produce, name="twilbert-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()  # the consumer stopped early (or failed): let the producer end


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):  # musl, macOS, Windows: nothing to call
        return None


def release_freed_memory() -> bool:
    """Return freed heap pages to the OS (glibc's ``malloc_trim(0)``, which also releases free pages
    inside the heap); False where there is no such call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@contextmanager
def releasing_freed_memory(every_s: float | None = None) -> Iterator[None]:
    """While the body runs, a thread calls :func:`release_freed_memory` every ``every_s`` seconds
    (:data:`TRIM_EVERY_S`); glibc locks each arena while trimming, so the workers' allocations are safe."""
    if _malloc_trim() is None:
        yield
        return
    period, stop = every_s or TRIM_EVERY_S, threading.Event()

    def run() -> None:
        while not stop.wait(period):
            release_freed_memory()

    thread = threading.Thread(target=run, name="twilbert-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def predict_chunks(predictor: Predictor, chunks: Iterable[InputTexts], *, batch_size: int = 64) -> Iterator[tuple[list[dict[str, Any]], InputTexts]]:
    """(prediction rows, chunk) per chunk, in order; the next chunk is read and encoded meanwhile."""
    encoded = prefetch((chunk, predictor.encode(chunk.texts, chunk.aux)) for chunk in chunks)
    start = 0
    for chunk, data in encoded:
        try:
            with releasing_freed_memory() if start == 0 else nullcontext():  # the first chunk creates oneDNN's primitives
                rows = predictor.format(predictor.outputs_of(data, batch_size=batch_size))
        except OutputError as exc:  # its row numbers count within the chunk
            raise OutputError(f"{exc} (rows counted from 0-based input row {start}, where this chunk starts; "
                              f"on stdout the {start} rows before it were written)") from None
        release_freed_memory()  # the chunk's activations are freed: RSS stays flat in the input's size
        yield rows, chunk
        start += len(rows)


def chunked(texts: Iterable[str], rows: int | None = None) -> Iterator[InputTexts]:
    """Texts (any iterable, a generator included) as chunks of ``rows`` (:data:`CHUNK_ROWS`)."""
    rows = rows or CHUNK_ROWS
    buf: list[str] = []
    for t in texts:
        buf.append(t)
        if len(buf) == rows:
            yield InputTexts(texts=buf)
            buf = []
    if buf:
        yield InputTexts(texts=buf)


def read_file_chunks(
    path: str | Path,
    text_column: str,
    aux_column: str | None = None,
    id_column: str | None = None,
    fmt: str = "auto",
    rows: int | None = None,
) -> Iterator[InputTexts]:
    """:func:`read_input_file`'s texts, aux texts and ids, streamed in chunks of ``rows`` (:data:`CHUNK_ROWS`)."""
    import polars as pl

    path = Path(path)

    def refuse():  # read_input_file names the problem (and its line); a generic line if it finds none
        read_input_file(path, text_column, aux_column, id_column, fmt)
        raise InputError(f"{path}: cannot be read as {kind}")

    kind = _fmt_of(path, fmt)
    if not path.is_file():
        refuse()
    columns = {"texts": text_column, "aux": aux_column, "ids": id_column}
    wanted = [c for c in columns.values() if c is not None]
    try:
        if kind == "jsonl":
            scan = pl.scan_ndjson(path, infer_schema_length=None)
        else:
            scan = pl.scan_csv(path, separator="\t" if kind == "tsv" else ",", quote_char=None if kind == "tsv" else '"',
                               infer_schema=False, empty_string_is_null=False, raise_if_empty=True)
        if not set(wanted) <= set(scan.collect_schema().names()):
            refuse()
        seen = 0
        for df in scan.collect_batches(chunk_size=rows or CHUNK_ROWS):  # every column: a select would skip ragged-line checks
            out: dict[str, list[str] | None] = {}
            for key, col in columns.items():
                if col is None:
                    out[key] = None
                    continue
                s = df[col]
                if isinstance(s.dtype, (pl.List, pl.Struct, pl.Array)) or s.null_count():
                    refuse()
                out[key] = (s if s.dtype == pl.String else s.cast(pl.String)).to_list()
            seen += df.height
            if df.height:
                yield InputTexts(**out)  # type: ignore[arg-type]
    except pl.exceptions.PolarsError:
        refuse()
    if not seen:
        refuse()


def count_rows(path: Path, fmt: str = "auto") -> int | None:
    """Rows of a TSV / JSON-lines file from its line count (for the progress bar); None for CSV (quoted
    line breaks) or when unknown."""
    kind = _fmt_of(path, fmt)
    if kind == "csv":
        return None
    with open(path, "rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    return max(lines - (kind == "tsv"), 0)


def predict_file(
    predictor: Predictor,
    chunks: Iterable[InputTexts],
    write: Callable[[list[dict[str, Any]], list[str] | None], None],
    *,
    batch_size: int = 64,
    total: int | None = None,
    progress: bool = False,
) -> int:
    """Predict every chunk and ``write(rows, ids)`` each as soon as it is computed; returns the row count."""
    from tqdm.auto import tqdm

    n = 0
    with tqdm(total=total, desc="predict", unit="text", disable=not progress, leave=False) as bar:
        for rows, chunk in predict_chunks(predictor, chunks, batch_size=batch_size):
            write(rows, chunk.ids)
            n += len(rows)
            bar.update(len(rows))
    return n


__all__ = ["CHUNK_ROWS", "PREFETCH", "TRIM_EVERY_S", "chunked", "count_rows", "predict_chunks", "predict_file", "prefetch", "read_file_chunks", "release_freed_memory",
           "releasing_freed_memory"]
