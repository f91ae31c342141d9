"""Progress of a long loop, for whoever reads the output: a tqdm bar on a terminal, plain lines elsewhere.

Under ``dvc repro`` / ``dvc exp run``, nohup, CI or a cluster job, stderr is a file or a pipe: a bar
would either print nothing or fill the log with carriage returns and ANSI codes. There a
:class:`Progress` prints one plain line at most every ``STATUS_EVERY_S`` seconds (and a last one when
it closes): where it is (``step 120/500 (24%)``), the caller's figures (loss, tokens/s), the rate and
an ETA, so the reader sees the run is alive and when it ends. Every stage (normalize, pairs,
pretrain, finetune) and predict/embed go through here, so all of them behave alike.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

STATUS_EVERY_S = 30.0

Fields = Mapping[str, object] | Callable[[], Mapping[str, object]]


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr by default) is an interactive terminal that can draw a bar."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb" and not os.environ.get("CI")


def duration(seconds: float) -> str:
    """``3h05m``, ``4m10s``, ``12s``: short enough for a status line."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """``update(n)`` as work is done, ``note(fields)`` when new figures are at hand; use it as a context.

    ``fields`` map a name to a value (``{"loss": "2.3456"}`` -> ``loss 2.3456``); a callable is only
    called when something is shown, so an expensive figure (a device sync) costs nothing between lines.
    ``lines_on_update=False`` leaves the lines to :meth:`note` (pre-training prints at its log steps,
    where its figures are fresh). ``enabled=False`` shows nothing at all.
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        unit: str = "it",
        *,
        initial: float = 0,
        enabled: bool = True,
        terminal: bool | None = None,
        stream: TextIO | None = None,
        every_s: float | None = None,
        lines_on_update: bool = True,
        unit_scale: bool = False,
    ) -> None:
        self.total, self.desc, self.unit, self.n, self.initial = total, desc, unit, initial, initial
        self.unit_scale = unit_scale
        self.stream = sys.stderr if stream is None else stream
        self.every_s = STATUS_EVERY_S if every_s is None else every_s
        self.lines_on_update = lines_on_update
        terminal = is_terminal(self.stream) if terminal is None else terminal
        self.bar = None
        if enabled and terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, unit_scale=unit_scale, dynamic_ncols=True, leave=False, file=self.stream)
        self.lines = enabled and not terminal
        self.fields: Fields = {}
        self.t0 = self.last = time.perf_counter()
        self.printed_at: float | None = None  # self.n when the last line was printed

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close(final=exc[0] is None)

    def update(self, n: float = 1, fields: Fields | None = None) -> None:
        self.n += n
        if fields is not None:
            self.fields = fields
        if self.bar is not None:
            self.bar.update(n)
            if fields is not None:
                self.bar.set_postfix(self._fields(), refresh=False)
        elif self.lines_on_update:
            self._maybe_line(force=False)

    def note(self, fields: Fields, force: bool = False) -> None:
        """New figures: shown on the bar, or as a line if one is due (or ``force``)."""
        self.fields = fields
        if self.bar is not None:
            self.bar.set_postfix(self._fields())
        else:
            self._maybe_line(force)

    def line(self) -> str:
        """The status line as it would print now."""
        where = f"{self.unit} {self._count(self.n)}"
        if self.total:
            where += f"/{self._count(self.total)} ({100 * self.n / self.total:.0f}%)"
        parts = [where, *(f"{k} {v}" for k, v in self._fields().items())]
        elapsed = time.perf_counter() - self.t0
        done = self.n - self.initial
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            if self.unit_scale:
                parts.append(f"{self._count(rate)} {self.unit}/s")
            else:  # a slow loop reads better as seconds per step
                parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
            if self.total and self.n < self.total:
                parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        parts.append(f"elapsed {duration(elapsed)}")
        return f"{self.desc}: " + ", ".join(parts)

    def close(self, final: bool = True) -> None:
        """Ends the bar; without a terminal, a last line if a loop that printed lines has moved on since
        (a loop done before its first line stays quiet: its caller reports the result)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines and final and self.printed_at is not None and self.printed_at != self.n:
            self._print()
        self.lines = False

    def _maybe_line(self, force: bool) -> None:
        if self.lines and (force or time.perf_counter() - self.last >= self.every_s):
            self._print()

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last, self.printed_at = time.perf_counter(), self.n

    def _fields(self) -> dict[str, str]:
        fields = self.fields() if callable(self.fields) else self.fields
        return {k: str(v) for k, v in fields.items()}

    def _count(self, x: float) -> str:
        if self.unit_scale and x >= 1000:
            for prefix in "kMGT":
                x /= 1000
                if x < 1000:
                    break
            return f"{x:.1f}{prefix}"
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


__all__ = ["STATUS_EVERY_S", "Progress", "duration", "is_terminal"]
