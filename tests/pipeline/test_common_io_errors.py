"""pipeline.common: a failed read or write, however a library reports it, is one line naming the path
and the cause (exit 2); anything else keeps its traceback."""

from __future__ import annotations

import errno

import pytest
import typer

from pipeline.common import guarded, io_error_line, run_guarded


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as e:
        return e


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/d/out.parquet"), "/d/out.parquet: no space left on device"),
        (PermissionError(errno.EACCES, "Permission denied", "/ro/stats.json"), "/ro/stats.json: permission denied"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "/ro/x: read-only file system"),
        # pyarrow: errno only in the message; the path attached by twilbert.utils.writing
        (OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"), "a file: no space left on device"),
        # safetensors (Rust): "os error 28"; tokenizers: "Os { code: 28, ... }"
        (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), "a file: no space left on device"),
        (RuntimeError('IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'), "a file: no space left on device"),
        (_chained(RuntimeError("saving failed"), OSError(errno.ENOSPC, "No space left on device", "/d/w")), "/d/w: no space left on device"),
    ],
)
def test_io_errors_become_one_line(exc, line):
    assert io_error_line(exc) == line


def test_torch_unexpected_pos_is_reported_as_a_full_disk():
    exc = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726")
    exc.twilbert_path = "/d/model.pt"
    line = io_error_line(exc)
    assert line.startswith("/d/model.pt: no space left on device") and "unexpected pos 832 vs 726" in line
    assert "\n" not in line


@pytest.mark.parametrize("exc", [ValueError("bad value"), RuntimeError("error code: 3"), KeyError("x"), typer.Exit(2)])
def test_other_errors_are_not_io_errors(exc):
    assert io_error_line(exc) is None


def test_guarded_exits_2_with_one_line(capsys):
    with pytest.raises(typer.Exit) as info, guarded():
        raise OSError(errno.ENOSPC, "No space left on device", "/d/stats.json")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err == "error: /d/stats.json: no space left on device\n"


def test_guarded_keeps_bugs_as_tracebacks():
    with pytest.raises(ZeroDivisionError):
        run_guarded(lambda: 1 / 0)
    with pytest.raises(typer.Exit) as info, guarded():
        raise typer.Exit(0)
    assert info.value.exit_code == 0
