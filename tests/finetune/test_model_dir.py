"""Fine-tuned model directories and epoch checkpoints under generated faults.

* every file of a fine-tuned model directory (listed, not named here): truncation, random bytes,
  non-UTF-8, valid JSON of the wrong type, deletion -> ``twilbert.load`` raises a one-line
  CheckpointError and ``twilbert predict`` exits 2 with one ``error:`` line, never a traceback;
* a crafted ``config.json`` (checksums recomputed): label maps that do not cover the head, a
  ``max_len`` past the position table, sizes out of range -> one line from ``read_finetuned_config``;
* every file of the newest epoch checkpoint, each fault -> resume falls back to the previous epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from tests.inference.test_predict import build_models
from tests.train.test_checkpoint_faults import FAULTS, apply, faults_for
from twilbert.finetune.checkpoint import EpochCheckpoints
from twilbert.finetune.epochs import check_resume_state
from twilbert.finetune.model_dir import finetuned_config, read_finetuned_config
from twilbert.train.checkpoint import CHECKSUMS_FILE, CONFIG_FILE, CheckpointError
from twilbert.utils import sha256_file


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp() / "inference-models")  # shared with tests/inference


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def predict(model_dir: Path):
    return CliRunner().invoke(app, ["predict", "-m", str(model_dir)], input="hola\n")


def assert_error_exit(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------
# a fine-tuned model directory


def test_the_models_validate(models):
    for kind in ("single", "pair", "multi", "reg"):
        read_finetuned_config(models[kind])


def test_every_fault_in_every_model_file_is_one_line(models, tmp_path):
    from twilbert.inference import load

    names = sorted(p.name for p in models["single"].iterdir())
    assert {CONFIG_FILE, CHECKSUMS_FILE} <= set(names) and len(names) >= 4
    for i, (name, fault) in enumerate((n, f) for n in names for f in faults_for(models["single"] / n)):
        directory = tmp_path / f"case-{i}"
        shutil.copytree(models["single"], directory)
        apply(directory / name, fault, seed=i)
        with pytest.raises(CheckpointError) as info:
            load(directory)
        assert str(directory) in one_line(info.value), (name, fault)
        line = assert_error_exit(predict(directory))
        assert str(directory) in line, (name, fault, line)


def craft(models, tmp_path: Path, edit, kind: str = "single") -> Path:
    """A copy of a model whose config.json is edited and re-checksummed (only validation can refuse it)."""
    directory = tmp_path / "crafted"
    shutil.copytree(models[kind], directory)
    path = directory / CONFIG_FILE
    config = json.loads(path.read_text())
    new = edit(config)
    path.write_text(json.dumps(new if isinstance(new, list) else config))  # an edit may return a replacement (a list)
    sums = json.loads((directory / CHECKSUMS_FILE).read_text())
    sums[CONFIG_FILE] = sha256_file(path)
    (directory / CHECKSUMS_FILE).write_text(json.dumps(sums))
    return directory


def _set_label(c, label, index):
    c["labels"][label] = index


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda c: _set_label(c, next(iter(c["labels"])), 7), "is not an output of the head (0..2)"),
        (lambda c: _set_label(c, next(iter(c["labels"])), -1), "is not an output of the head"),
        (lambda c: _set_label(c, next(iter(c["labels"])), True), "is not an output of the head"),
        (lambda c: c.update(labels=dict.fromkeys(c["labels"], 0)), "labels: index 0 is given to more than one label"),
        (lambda c: c["labels"].pop(next(iter(c["labels"]))), "labels: 2 label(s) for a head of 3 outputs"),
        (lambda c: c.pop("labels"), "labels: required key is missing"),
        (lambda c: c.update(labels=["N", "P"]), "labels: expected a JSON object, got array"),
        (lambda c: c.update(max_len=10**9), "max_len: 1000000000 tokens per segment need 1000000002 positions"),
        (lambda c: c.update(max_len=1e9), "max_len: expected an integer, got number"),
        (lambda c: c.update(max_len=0), "max_len: 0 tokens"),
        (lambda c: c["model"].update(vocab_size=10**12), "model.vocab_size: must be in"),
        (lambda c: c["head"].update(n_outputs=10**12), "head.n_outputs: must be in [1, 65536]"),
        (lambda c: c["head"].update(collapse_mode="sum"), "head.collapse_mode: expected one of"),
        (lambda c: c["head"].pop("dropout"), "head.dropout: required key is missing"),
        (lambda c: c.update(task_type="ranking"), "task_type: expected one of"),
        (lambda c: c["tokenizer"].update(file="../../etc/passwd"), "tokenizer.file: expected a file name"),
        (lambda c: c.update(tokenizer="spm.model"), "tokenizer: expected a JSON object"),
        (lambda c: [c], "expected a JSON object, got array"),
    ],
)
def test_a_crafted_config_is_refused_in_one_line(models, tmp_path, edit, fragment):
    directory = craft(models, tmp_path, edit)
    with pytest.raises(CheckpointError) as info:
        read_finetuned_config(directory)
    message = one_line(info.value)
    assert message.startswith(f"{directory / CONFIG_FILE}: ") and fragment in message, message


def test_regression_and_pair_label_rules(models, tmp_path):
    with pytest.raises(CheckpointError, match="a regression model has no labels, got 1"):
        read_finetuned_config(craft(models, tmp_path / "r", lambda c: c.update(labels={"x": 0}), kind="reg"))
    pair = json.loads((models["pair"] / CONFIG_FILE).read_text())
    positions = pair["model"]["max_positions"]
    ok = (positions - 3) // 2
    finetuned_config({**pair, "max_len": ok})
    with pytest.raises(CheckpointError, match=f"expected 1..{ok}"):
        finetuned_config({**pair, "max_len": ok + 1})


def test_config_not_utf8_or_a_list_is_one_line_at_load(models, tmp_path):
    """The defect as found (with the checksums made to match): a traceback from inside the loader."""
    from twilbert.inference import load

    for i, raw in enumerate([b"\xff\xfe{}", b"[1, 2]", b'{"format": "twilbert-finetuned/1"']):
        directory = tmp_path / f"m{i}"
        shutil.copytree(models["single"], directory)
        (directory / CONFIG_FILE).write_bytes(raw)
        sums = json.loads((directory / CHECKSUMS_FILE).read_text())
        sums[CONFIG_FILE] = sha256_file(directory / CONFIG_FILE)
        (directory / CHECKSUMS_FILE).write_text(json.dumps(sums))
        with pytest.raises(CheckpointError, match=f"^{directory / CONFIG_FILE}: "):
            load(directory)
        assert_error_exit(predict(directory))


# --------------------------------------------------------------------------------------------------
# epoch checkpoints of a fine-tuning run


def _objects():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), np.random.default_rng(0)


STATE = {"tracker": [0.5, 1, 0], "counters": {"updates": 1, "skipped": 0, "consecutive_bad": 0, "tokens": 9, "seconds": 0.1},
         "best_dev": {"f1": float("nan")}, "history": [], "logged": [], "stopped": False}


def _two_epochs(root: Path) -> None:
    store = EpochCheckpoints(root, {"k": 1}, say=lambda m: None, state_schema=check_resume_state)
    model, opt, sched, rng = _objects()
    store.save(1, model, opt, sched, rng, None, STATE)
    store.save(2, model, opt, sched, rng, {k: v.clone() for k, v in model.state_dict().items()}, STATE)


def test_every_fault_in_every_epoch_checkpoint_file_falls_back(tmp_path):
    _two_epochs(tmp_path / "ref")
    newest = tmp_path / "ref" / "epoch-0002"
    names = sorted(p.name for p in newest.iterdir())
    assert len(names) >= 5  # best weights included
    cases = [(n, f) for n in names for f in faults_for(newest / n)]
    for i, (name, fault) in enumerate(cases):
        root = tmp_path / f"case-{i}"
        shutil.copytree(tmp_path / "ref", root)
        apply(root / "epoch-0002" / name, fault, seed=i)
        said = []
        resumed = EpochCheckpoints(root, {"k": 1}, say=said.append, state_schema=check_resume_state).resume(*_objects())
        assert resumed is not None and resumed.directory.name == "epoch-0001", (name, fault, said)
        assert "epoch-0002 is unusable" in said[0] and "\n" not in said[0], (name, fault, said)


@pytest.mark.parametrize("broken", [{"tracker": [1]}, {"counters": {"updates": 1}}, {"stopped": "no"}, {"history": None}])
def test_a_state_json_resume_cannot_use_falls_back(tmp_path, broken):
    """state.json re-checksummed, so only its schema can tell (a traceback in EpochLoop.resume before)."""
    _two_epochs(tmp_path)
    state_path = tmp_path / "epoch-0002" / "state.json"
    state_path.write_text(json.dumps({**json.loads(state_path.read_text()), **broken}))
    sums = json.loads((tmp_path / "epoch-0002" / CHECKSUMS_FILE).read_text())
    sums["state.json"] = sha256_file(state_path)
    (tmp_path / "epoch-0002" / CHECKSUMS_FILE).write_text(json.dumps(sums))
    said = []
    resumed = EpochCheckpoints(tmp_path, {"k": 1}, say=said.append, state_schema=check_resume_state).resume(*_objects())
    assert resumed.directory.name == "epoch-0001" and "state.json" in said[0]


def test_fault_names_cover_the_issue():
    assert set(FAULTS) == {"truncate", "random_bytes", "not_utf8", "wrong_json_type", "delete"}
