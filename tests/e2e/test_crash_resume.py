"""Crash safety of pre-training: `kill -9` at several moments, rerun, identical final weights.

The `pretrain` stage command runs as a subprocess on a tiny generated corpus (CPU, fp32, one thread,
dropout on, accumulation 2: deterministic, and resumption needs the RNG, the data cursor and the
optimizer state). One output directory goes through a chain of crashes, each rerun resuming from
what the previous one left:

1. SIGKILL right after optimizer step 4 (mid-epoch, between checkpoints);
2. SIGKILL while ``model.safetensors`` of a checkpoint is being written (a torn checkpoint: temp file,
   no checksums): the next run falls back to the previous checkpoint;
3. SIGKILL while ``trainer_state.pt`` is being written (weights and config written, no checksums);
4. SIGKILL from outside at a random step (the random moment of the issue);
5. SIGKILL while ``final/`` is being written;
6. a plain rerun, which must finish with ``final/model.safetensors`` bitwise equal to an uninterrupted run.

The faults 1-3 and 5 use ``TWILBERT_FAULT``, which the test-only entry point ``tests/e2e/fault_entry.py``
turns into the trainer's hooks (``TrainerHooks``).
``test_dvc_repro_after_a_kill`` does one crash through ``dvc repro`` itself, in a temporary git copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from tests.e2e.fault_entry import FAULT_ENV
from tests.train.test_pretrain_fixtures import build_inputs, write_params
from twilbert.train.checkpoint import CHECKSUMS_FILE, MODEL_FILE, TRAINER_FILE
from twilbert.train.run_store import list_checkpoints, list_runs, newest_usable

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TRAINING = {"epochs": 2, "accum_iters": 2}  # 10 steps per epoch
RUN = {"checkpoint_every": 3, "log_every": 1}
MODEL = {"output_dropout": 0.1}
KILLED = -signal.SIGKILL


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage_args(inputs: dict, params: Path, out: Path, reports: Path) -> list[str]:
    return ["pretrain", "--params", str(params), "--shards-dir", str(inputs["shards"]), "--vocab-model", str(inputs["tokenizer"]),
            "--out-dir", str(out), "--reports-dir", str(reports)]


def _env(fault: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["TWILBERT_TRACKING"] = "0"
    if fault:
        env[FAULT_ENV] = fault
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny inputs, params, and the final weights of an uninterrupted run (the stage, in-process)."""
    root = tmp_path_factory.mktemp("crash")
    inputs = build_inputs(root / "inputs")
    params = write_params(root / "params.yaml", inputs["vocab_size"], training=TRAINING, run=RUN, model=MODEL)
    ref = root / "reference"
    result = CliRunner().invoke(app, stage_args(inputs, params, ref, root / "reference-reports"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["steps_per_epoch"] == 10 and summary["resumed_from_step"] == 0
    return {"root": root, "inputs": inputs, "params": params, "sha": sha256(ref / "final" / MODEL_FILE), "summary": summary}


class Stage:
    """The stage command in a subprocess, on one output directory."""

    def __init__(self, setup: dict, name: str) -> None:
        self.out, self.reports = setup["root"] / name, setup["root"] / f"{name}-reports"
        self.cmd = [sys.executable, "-m", "tests.e2e.fault_entry", *stage_args(setup["inputs"], setup["params"], self.out, self.reports)]

    def run(self, fault: str | None = None) -> tuple[int, str]:
        proc = subprocess.run(self.cmd, cwd=REPO, env=_env(fault), capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stderr

    def run_and_kill_at_step(self, step: int) -> tuple[int, str]:
        """SIGKILL from outside as soon as the curves file (rewritten on every run, one row per step)
        shows ``step``: the process is somewhere in the following step(s), maybe mid-checkpoint."""
        err_path = self.out.parent / "killed.err"
        curves = self.reports / "curves.csv"
        with open(err_path, "w") as err:
            proc = subprocess.Popen(self.cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                rows = curves.read_text().splitlines()[1:] if curves.is_file() else []
                if rows and int(rows[-1].split(",")[0]) >= step:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.002)
            proc.wait(timeout=60)
        return proc.returncode, err_path.read_text()

    def checkpoints(self) -> list[Path]:
        runs = list_runs(self.out / "checkpoints")
        assert len(runs) == 1, runs
        return list_checkpoints(runs[0])

    def newest_usable_step(self) -> int:
        found = newest_usable(list_runs(self.out / "checkpoints")[0], quiet=True)
        return int(found[0].name.split("-")[1]) if found else 0


def checkpoint_steps(after: int, total: int = 20, every: int = 3, per_epoch: int = 10) -> list[int]:
    return [s for s in range(after + 1, total + 1) if s % every == 0 or s % per_epoch == 0 or s == total]


def test_kill_at_several_moments_then_rerun_gives_identical_weights(setup):
    stage = Stage(setup, "chain")
    final = stage.out / "final"

    # 1. mid-epoch, after step 4: the newest checkpoint is step 3
    rc, err = stage.run(fault="kill_after_step:4")
    assert rc == KILLED, err[-2000:]
    assert [c.name for c in stage.checkpoints()] == ["step-00000003"] and not final.exists()

    # 2. resumes from 3; its 2nd save (step 9) dies while writing the weights
    rc, err = stage.run(fault="kill_during_save:2")
    assert rc == KILLED and "resuming from" in err and "step-00000003" in err, err[-2000:]
    torn = stage.checkpoints()[-1]
    assert torn.name == "step-00000009" and not (torn / CHECKSUMS_FILE).exists() and not (torn / MODEL_FILE).exists()
    assert any(p.name.startswith(f".{MODEL_FILE}.") for p in torn.iterdir())  # the complete, unrenamed temp file

    # 3. step 9 is unusable: falls back to 6; its 1st save (step 9 again) dies while writing trainer_state.pt
    rc, err = stage.run(fault=f"kill_during_save:1:{TRAINER_FILE}")
    assert rc == KILLED and "step-00000009 is unusable" in err and "falling back" in err, err[-2000:]
    assert "step-00000006 (step 6" in err
    assert (torn / MODEL_FILE).exists() and not (torn / CHECKSUMS_FILE).exists()

    # 4. from outside, at a random step after the resume point
    start = stage.newest_usable_step()
    assert start == 6
    target = random.Random().randint(start + 1, start + 4)
    rc, err = stage.run_and_kill_at_step(target)
    assert rc == KILLED, f"the run ended before the kill at step {target}: {err[-2000:]}"
    assert not final.exists()

    # 5. the process that finishes training dies while writing final/ (its last save)
    start = stage.newest_usable_step()
    n_saves = len(checkpoint_steps(start)) + 1
    rc, err = stage.run(fault=f"kill_during_save:{n_saves}")
    assert rc == KILLED and "while writing" in err and str(final) in err, err[-2000:]
    assert not (final / CHECKSUMS_FILE).exists()
    assert stage.checkpoints()[-1].name == "step-00000020"  # the budget's checkpoint was written first

    # 6. a plain rerun finishes (nothing left to train) and matches the uninterrupted run bit for bit
    rc, err = stage.run()
    assert rc == 0, err[-3000:]
    summary = json.loads((stage.out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 20 and summary["steps"] == 20
    assert summary["tokens_real"] == setup["summary"]["tokens_real"]
    assert sha256(final / MODEL_FILE) == setup["sha"]
    metrics = json.loads((stage.reports / "metrics.json").read_text())
    assert metrics["loss"] == setup["summary"]["loss"]  # the curves/metrics of the whole run survived too


def _git_copy(dst: Path, env: dict) -> None:
    """The repository's tracked and untracked-not-ignored files, committed in a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for f in files:
        if (REPO / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, env=env, check=True, capture_output=True)


@pytest.mark.slow
def test_dvc_repro_after_a_kill(setup, tmp_path):
    """`kill -9` during `dvc repro`, then `dvc repro` again: the run resumes and finishes identically.
    Only the pretrain stage runs (``-s``); its inputs are the tiny shards, put where the pairs and vocab
    stages would have written them, and params.yaml is the shipped one with the tiny settings."""
    env = {**_env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("DVC_EXP_NAME", None)
    proj = tmp_path / "proj"
    proj.mkdir()
    _git_copy(proj, env)
    shutil.copytree(setup["inputs"]["shards"], proj / "data/pairs")
    (proj / "models/vocab").mkdir(parents=True, exist_ok=True)
    shutil.copy2(setup["inputs"]["tokenizer"], proj / "models/vocab/spm.model")
    shipped = yaml.safe_load((proj / "params.yaml").read_text())
    tiny = yaml.safe_load(setup["params"].read_text())
    for section in ("model", "training", "representation", "impl", "tracking"):
        shipped[section] = tiny[section]
    # The shipped tasks must fit the tiny encoder's positions (checked when params load).
    shipped["finetuning"]["max_len"] = tiny["representation"]["max_len"]  # a pair: 2 * max_len + 3 positions
    (proj / "params.yaml").write_text(yaml.safe_dump(shipped, sort_keys=False))
    dvc_yaml = (proj / "dvc.yaml").read_text()  # the stage through the test-only entry point (the fault hook)
    (proj / "dvc.yaml").write_text(dvc_yaml.replace("python -m pipeline.cli pretrain", "python -m tests.e2e.fault_entry pretrain"))

    dvc = [str(BIN / "dvc"), "repro", "-s", "pretrain"]
    proc = subprocess.run(dvc, cwd=proj, env={**env, FAULT_ENV: "kill_after_step:7"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert f"{FAULT_ENV}: SIGKILL after step 7" in proc.stderr + proc.stdout
    proc = subprocess.run(dvc, cwd=proj, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((proj / "models/pretrain/summary.json").read_text())
    assert summary["resumed_from_step"] == 6 and summary["steps"] == 20
    assert sha256(proj / "models/pretrain/final" / MODEL_FILE) == setup["sha"]
