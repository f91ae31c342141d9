"""Hand-overs between the reader, the query and the writer threads, each bounded to a few items.

File reads, the newline split and UTF-8 check, polars queries and Parquet encoding all release the
GIL for most of their time, so running them in separate threads overlaps them.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
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


class BackgroundWriter:
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
