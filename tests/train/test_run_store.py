"""The run store: fingerprints of run configs, numbered checkpoint directories, choosing the checkpoint
to resume, pruning old run configs, moving a fine-tuning directory aside."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from twilbert.train import run_store as store
from twilbert.train.checkpoint import save_checkpoint


def test_fingerprint_ignores_key_order_and_sees_every_value():
    a = {"model": {"h": 32, "l": 2}, "lr": 1e-3}
    assert store.fingerprint(a) == store.fingerprint({"lr": 1e-3, "model": {"l": 2, "h": 32}})
    assert store.fingerprint(a) != store.fingerprint({**a, "lr": 2e-3})
    assert re.fullmatch(r"[0-9a-f]{64}", store.fingerprint(a))


def test_numbered_dirs_sort_by_number_not_name(tmp_path):
    for n in (10, 2, 1):
        (tmp_path / f"step-{n:08d}").mkdir()
    (tmp_path / "step-x").mkdir()
    (tmp_path / "epoch-0003").mkdir()
    assert [p.name for p in store.list_checkpoints(tmp_path)] == ["step-00000001", "step-00000002", "step-00000010"]
    assert [p.name for p in store.numbered_dirs(tmp_path, re.compile(r"^epoch-(\d{4,})$"))] == ["epoch-0003"]
    assert store.list_checkpoints(tmp_path / "absent") == []


def _checkpoint(run: Path, step: int, config: dict) -> None:
    fp = store.fingerprint(config)
    extra = {"fingerprint": fp, "run_config": json.dumps(config, sort_keys=True), "state": "{}"}
    save_checkpoint(run / f"step-{step:08d}", torch.nn.Linear(2, 2), {"x": 1}, extra=extra)
    store.write_run_file(run, fp, config)


def test_choose_resume_own_newest_usable_then_other_configs(tmp_path):
    mine, other = {"lr": 1}, {"lr": 2}
    assert store.choose_resume_checkpoint(tmp_path, mine) is None  # nothing at all
    _checkpoint(store.run_dir(tmp_path, store.fingerprint(other)), 4, other)
    messages = []
    assert store.choose_resume_checkpoint(tmp_path, mine, say=messages.append) is None
    assert "starting fresh, keeping it" in messages[-1] and "lr: 2 -> 1" in messages[-1]
    with pytest.raises(store.RunConfigMismatchError, match="on_config_change is 'error'"):
        store.choose_resume_checkpoint(tmp_path, mine, on_config_change="error")
    run = store.run_dir(tmp_path, store.fingerprint(mine))
    _checkpoint(run, 1, mine)
    _checkpoint(run, 2, mine)
    (run / "step-00000002" / "checksums.json").unlink()  # torn: falls back to step 1
    assert store.choose_resume_checkpoint(tmp_path, mine, say=messages.append) == run / "step-00000001"
    assert "step-00000002 is unusable" in messages[-1]


def test_resume_from_another_config_is_refused(tmp_path):
    other = {"lr": 2}
    src = tmp_path / "elsewhere"
    _checkpoint(src, 3, other)
    with pytest.raises(store.RunConfigMismatchError, match="lr: checkpoint 2, params 1"):
        store.choose_resume_checkpoint(tmp_path / "root", {"lr": 1}, resume_from=src)


def test_prune_runs_keeps_the_newest_and_the_current(tmp_path):
    runs = []
    for i in range(store.KEEP_RUNS + 2):
        r = tmp_path / f"{i:016x}"
        r.mkdir()
        runs.append(r)
        time.sleep(0.01)
    store.prune_runs(tmp_path, runs[0], say=lambda m: None)
    assert store.list_runs(tmp_path) == [runs[0], *runs[-(store.KEEP_RUNS - 1):]]


def test_move_aside_keeps_the_newest_stale_directories(tmp_path):
    root = tmp_path / "task"
    for i in range(4):
        root.mkdir()
        (root / "mark").write_text(str(i))
        store.move_aside(root, f"config {i}", keep_stale=2, say=lambda m: None)
    stale = sorted(tmp_path.glob("task-stale-*"))
    assert not root.exists() and [(p / "mark").read_text() for p in stale] == ["2", "3"]
