"""Crash safety of fine-tuning: a real `kill -9` of the finetune stage, rerun, identical result.

The `finetune` stage command runs as a subprocess (CPU, one thread, dropout on, a random-init encoder
so no pre-training is needed) on the bundled sentiment task. One output directory goes through a
chain of crashes, each rerun resuming from what the previous one left:

1. SIGKILL from outside as soon as the first epoch checkpoint exists (the run is in epoch 2);
2. SIGKILL from outside the moment a checkpoint write starts (a ``.tmp-*`` directory appears: the
   write is torn), which the next run must ignore;
3. SIGKILL at a random moment;
4. a plain rerun, which must finish with weights and metrics equal to an uninterrupted run's.

(The in-process fault tests in tests/finetune/test_finetune_faults.py cover kills inside the model
save and corrupt checkpoints; this file checks the real signal on the real command.)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.finetune.test_finetune_data import make_tokenizer

REPO = Path(__file__).resolve().parents[2]
TASK = "sentiment"
KILLED = -signal.SIGKILL
pytestmark = pytest.mark.slow


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _params(root: Path) -> Path:
    """The repo's params.yaml, the sample task by absolute path, a random-init 1-layer encoder, 4 epochs."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    for split in ("train", "dev", "test"):
        for task in ("sentiment", "stance"):
            text = text.replace(f"data/sample/tasks/{task}/{split}.tsv", str(REPO / f"data/sample/tasks/{task}/{split}.tsv"))
    for a, b in (("data/sample/pairs.tsv", str(REPO / "data/sample/pairs.tsv")), ("data/sample/tweets.tsv", str(REPO / "data/sample/tweets.tsv")),
                 ("  n_encoders: 2\n", "  n_encoders: 1\n"), ("  epochs: 10\n", "  epochs: 4\n"), ("  num_threads: 0\n", "  num_threads: 1\n"),
                 ("  path_load_weights: null", "  path_load_weights: random")):
        assert a in text, a
        text = text.replace(a, b, 1)
    path = root / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class Stage:
    def __init__(self, root: Path, params: Path, spm: Path, name: str) -> None:
        self.model, self.reports, self.ckpt = root / name / "model", root / name / "reports", root / name / "ckpt"
        self.cmd = [sys.executable, "-m", "pipeline.cli", "finetune", "--task", TASK, "--params", str(params), "--vocab-model", str(spm),
                    "--model-out", str(self.model), "--report-out", str(self.reports), "--checkpoint-dir", str(self.ckpt)]
        self.env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}, "TWILBERT_TRACKING": "off"}

    def run(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=300)

    def run_and_kill_when(self, condition, what: str) -> int:
        """Start the command and SIGKILL it from outside as soon as ``condition()`` holds."""
        proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"never saw {what}"
            if condition():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        return proc.wait(timeout=60)

    def epochs_saved(self) -> list[str]:
        return sorted(p.name for p in self.ckpt.glob("**/epoch-*") if ".tmp-" not in str(p))

    def writing(self) -> bool:
        return any(self.ckpt.glob("**/.tmp-*"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftcrash")
    spm = make_tokenizer(root)
    params = _params(root)
    ref = Stage(root, params, spm, "reference")
    done = ref.run()
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "params": params, "spm": spm, "ref": ref}


def test_kill_at_several_moments_then_rerun_gives_identical_results(setup):
    ref: Stage = setup["ref"]
    stage = Stage(setup["root"], setup["params"], setup["spm"], "crashed")
    # 1. in epoch 2: the first epoch's checkpoint is complete
    rc = stage.run_and_kill_when(lambda: "epoch-0001" in stage.epochs_saved(), "epoch 1's checkpoint")
    assert rc == KILLED and not (stage.model / "model.safetensors").exists()
    # 2. the moment a checkpoint write starts (resumed from epoch 1, writing epoch 2's)
    rc = stage.run_and_kill_when(stage.writing, "a checkpoint write")
    assert rc == KILLED
    # 3. a random moment of the next run
    start, delay = time.monotonic(), random.Random(7).uniform(1.0, 4.0)
    rc = stage.run_and_kill_when(lambda: time.monotonic() - start > delay, "the random moment")
    assert rc in (KILLED, 0)  # 0: the run finished before the random moment
    # 4. finish (or, after a finished run, run again: the outputs must not change)
    done = stage.run()
    assert done.returncode == 0, done.stderr[-3000:]
    assert sha256(stage.model / "model.safetensors") == sha256(ref.model / "model.safetensors")
    mine, theirs = (json.loads((s.reports / "metrics.json").read_text()) for s in (stage, ref))
    assert mine["dev"] == theirs["dev"] and mine["test"] == theirs["test"] and mine["best_epoch"] == theirs["best_epoch"]
    assert (stage.reports / "predictions.tsv").read_bytes() == (ref.reports / "predictions.tsv").read_bytes()
    if rc == KILLED:
        assert "resum" in done.stderr.lower(), done.stderr[-2000:]
