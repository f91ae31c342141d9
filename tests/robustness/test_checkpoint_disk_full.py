"""Checkpoint writers on a full disk (issue 20): ``OSError(ENOSPC)`` naming the file, never torch's
``RuntimeError ... unexpected pos`` nor safetensors' own error, and no temp file left behind.

Two ways: writers monkeypatched to fail as torch and safetensors do, and a real full filesystem (a
small tmpfs; skipped where mounting is not permitted).
"""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.robustness.test_disk_full import tmpfs
from twilbert.train.checkpoint import MODEL_FILE, TRAINER_FILE, save_checkpoint
from twilbert.utils import atomic_write, disk_full_as_oserror

TORCH_FULL = "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"
SAFETENSORS_FULL = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
Usage = namedtuple("Usage", "total used free")


def failing(message: str):
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError(message)

    return write


@pytest.mark.parametrize("free", [0, 1000])
def test_torch_unexpected_pos_on_a_full_disk_is_enospc(tmp_path, monkeypatch, free):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**6, 10**6 - free, free))
    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "trainer_state.pt", failing(TORCH_FULL))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "trainer_state.pt")
    assert "No space left on device" in str(info.value) and isinstance(info.value.__cause__, RuntimeError)
    assert list(tmp_path.iterdir()) == []


def test_an_errno_in_the_message_is_used_whatever_the_free_space(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**12, 0, 10**12))
    for message, code in ((SAFETENSORS_FULL, errno.ENOSPC), ("IoError(Os { code: 5, kind: Other })", errno.EIO), ("[Errno 122] quota", 122)):
        with pytest.raises(OSError) as info:
            atomic_write(tmp_path / MODEL_FILE, failing(message))
        assert info.value.errno == code and info.value.filename == str(tmp_path / MODEL_FILE)
    assert list(tmp_path.iterdir()) == []


def test_other_failures_keep_their_own_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**12, 0, 10**12))
    for exc in (RuntimeError(TORCH_FULL), ValueError("a bug"), OSError(errno.EACCES, "denied", "x")):
        with pytest.raises(type(exc)) as info, disk_full_as_oserror(tmp_path / "f"):
            raise exc
        assert info.value is exc


# --------------------------------------------------------------------------------------------------
# a real full filesystem


@pytest.mark.parametrize("big", ["weights", "trainer_state"])
def test_save_checkpoint_on_a_full_tmpfs(tmp_path, big):
    """safetensors (the weights) and torch.save (the trainer state) both end in ENOSPC naming the file."""
    model = nn.Linear(512, 512) if big == "weights" else nn.Linear(4, 4)  # 1 MiB of weights, or a few bytes
    extra = {"big": torch.zeros(256, 1024)} if big == "trainer_state" else None
    with tmpfs(tmp_path / "mnt", "128k") as mnt:
        with pytest.raises(OSError) as info:
            save_checkpoint(mnt / "ckpt", model, {"k": 1}, rng=False, extra=extra)
        name = MODEL_FILE if big == "weights" else TRAINER_FILE
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(mnt / "ckpt" / name), info.value
        assert not [p for p in (mnt / "ckpt").iterdir() if p.name.endswith(".tmp")]
        assert not (mnt / "ckpt" / "checksums.json").exists()  # the checkpoint stays incomplete, so it is never loaded
