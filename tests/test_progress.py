"""twilbert.progress: a bar on a terminal, plain timed status lines (no ANSI, no carriage return) elsewhere."""

from __future__ import annotations

import io

import pytest

import twilbert.progress as P
from twilbert.progress import Progress, duration, is_terminal


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_lines_are_plain_and_carry_position_figures_rate_and_eta(monkeypatch):
    monkeypatch.setattr(P, "STATUS_EVERY_S", 0.0)
    out = io.StringIO()
    with Progress(4, "pretrain", "step", stream=out) as bar:
        for _ in range(3):
            bar.update(1, {"loss": "2.5000"})
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["1/4", "2/4", "3/4"]
    assert "(75%)" in lines[-1] and "loss 2.5000" in lines[-1] and "step/s" in lines[-1] and "ETA" in lines[-1]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_slow_loop_shows_seconds_per_step():
    bar = Progress(10, "pretrain", "step", stream=io.StringIO(), every_s=3600)
    bar.update(2)
    bar.t0 -= 8.0  # as if the two steps had taken 8 s
    line = bar.line()
    assert "4 s/step" in line and "ETA 32s" in line


def test_lines_wait_for_the_interval_and_a_quick_loop_stays_quiet():
    out = io.StringIO()
    with Progress(100, "pairs", "rows", stream=out, every_s=3600) as bar:
        bar.update(100)
    assert out.getvalue() == ""  # done before the first line was due: the caller reports the result


def test_a_loop_that_printed_says_where_it_ended(monkeypatch):
    out = io.StringIO()
    bar = Progress(10, "finetune", "batch", stream=out, every_s=0.0)
    bar.update(4)
    bar.every_s = 3600
    bar.update(6)
    bar.close()
    assert [line.split()[2] for line in out.getvalue().splitlines()] == ["4/10", "10/10"]


def test_fields_from_a_callable_are_computed_only_when_shown():
    calls = []
    out = io.StringIO()
    with Progress(10, "x", stream=out, every_s=3600) as bar:
        for _ in range(5):
            bar.update(1, lambda: calls.append(1) or {"loss": 1.0})
    assert calls == []


def test_note_prints_when_forced_and_lines_on_update_can_be_off():
    out = io.StringIO()
    with Progress(4, "pretrain", "step", stream=out, every_s=3600, lines_on_update=False) as bar:
        bar.update(2)
        bar.note({"loss": "3.0"}, force=True)
        bar.update(2)
    first, last = out.getvalue().splitlines()
    assert first.startswith("pretrain: step 2/4 (50%), loss 3.0")
    assert last.startswith("pretrain: step 4/4 (100%)") and "ETA" not in last


def test_on_a_terminal_a_bar_and_no_lines():
    out = FakeTTY()
    with Progress(3, "embed", "texts", stream=out, terminal=True, every_s=0.0) as bar:
        bar.update(3, {"loss": "1"})
    assert "embed" in out.getvalue() and "embed: texts" not in out.getvalue()


def test_disabled_shows_nothing():
    out = FakeTTY()
    with Progress(3, "x", stream=out, enabled=False, every_s=0.0) as bar:
        bar.update(3)
    assert out.getvalue() == ""


def test_byte_counts_scale():
    bar = Progress(2_500_000, "normalize pairs", "B", stream=io.StringIO(), unit_scale=True)
    bar.update(1_200_000)
    assert bar.line().startswith("normalize pairs: B 1.2M/2.5M (48%)")


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (250, "4m10s"), (11100, "3h05m"), (float("nan"), "?")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_is_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert is_terminal(FakeTTY()) and not is_terminal(io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not is_terminal(FakeTTY())
