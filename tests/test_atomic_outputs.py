"""twilbert.utils: atomic_outputs / atomic_write publish complete files only, and a failure names the
final path (not a temp file's, nor none at all)."""

from __future__ import annotations

import errno

import pytest

from twilbert.utils import atomic_outputs, atomic_write, atomic_write_text, name_path, writing


def test_all_outputs_appear_together_when_the_block_succeeds(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    with atomic_outputs(a, b) as (ta, tb):
        assert ta.parent == tmp_path and ta.name.startswith(".a.txt.") and ta.name.endswith(".tmp")
        ta.write_text("new a")
        tb.write_text("new b")
        assert a.read_text() == "old a" and not b.exists()  # nothing under a final name yet
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_failure_removes_every_temp_and_keeps_the_old_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    with pytest.raises(OSError) as info, atomic_outputs(a, b) as (ta, tb):
        ta.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tb))
    assert info.value.filename == str(b)  # the temp's name is mapped to the final one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and a.read_text() == "old a"


def test_atomic_write_names_the_final_path(tmp_path):
    target = tmp_path / "x.bin"

    def fail(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write(target, fail)
    assert info.value.filename == str(target) and list(tmp_path.iterdir()) == []

    class Unexpected(RuntimeError):
        pass

    with pytest.raises(Unexpected) as info:
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(Unexpected("unexpected pos 10 vs 5")))
    assert info.value.twilbert_path == str(target)


def test_writing_keeps_a_filename_the_error_already_has(tmp_path):
    with pytest.raises(OSError) as info, writing(tmp_path / "out"):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/elsewhere/in.tsv")
    assert info.value.filename == "/elsewhere/in.tsv"
    with pytest.raises(OSError) as info, writing(tmp_path / "out"):
        raise OSError(errno.EIO, "Input/output error")
    assert info.value.filename == str(tmp_path / "out")


def test_name_path_leaves_non_exceptions_alone():
    exc = KeyboardInterrupt()
    name_path(exc, "x")
    assert not hasattr(exc, "twilbert_path")


def test_atomic_write_text_replaces_whole(tmp_path):
    target = tmp_path / "stats.json"
    target.write_text("old")
    atomic_write_text(target, '{"new": 1}\n')
    assert target.read_text() == '{"new": 1}\n' and [p.name for p in tmp_path.iterdir()] == ["stats.json"]
