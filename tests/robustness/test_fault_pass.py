"""Fault-injection pass over the commands that write checkpoints or models (issue 20, "Done when"):
``pretrain``, ``finetune`` and ``import-hf``, run through the CLI on tiny inputs.

Faults are generated, not listed: every file of each input the command reads (pair shards and
tokenizer; a pre-trained checkpoint; task files; an HF directory) and of the outputs a rerun reads
back (checkpoints, model dirs) gets each damage that applies (truncated, random bytes, not UTF-8,
valid JSON of the wrong type, deleted); every key of the params sections the command reads gets
values no key accepts (NaN, a list, a 23-digit integer); and the output directory is put on a small
full filesystem (tmpfs, root only). Each run must end with exit code 0 (the fault was repaired or
fell back) or 2 with exactly one ``error:`` line, and never a traceback. Failures are collected
and reported together, so one run of this module lists every command/fault that still breaks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from tests.finetune.test_finetune_stages import write_project
from tests.robustness.test_disk_full import run_stage, tmpfs
from tests.train.test_pretrain_fixtures import build_inputs, write_params

REPO = Path(__file__).resolve().parents[2]
BAD_VALUES = (".nan", "[1]", "99999999999999999999999")  # YAML text: not finite / not a scalar / overflows
# Every fault of every file and key is hundreds of runs (an hour on 2 cores): by default each file
# and key gets one fault, drawn with a seed that changes per run (TWILBERT_FAULT_SEED to replay one);
# TWILBERT_FAULT_PASS=full runs them all.
FULL = os.environ.get("TWILBERT_FAULT_PASS") == "full"
SEED = int(os.environ.get("TWILBERT_FAULT_SEED") or np.random.SeedSequence().entropy % 2**32)


def sample(items: list, label: str) -> list:
    """All of ``items`` (full pass), else one, drawn from ``SEED`` and ``label``."""
    if FULL or len(items) <= 1:
        return items
    rng = np.random.default_rng([SEED, *label.encode()])
    return [items[int(rng.integers(len(items)))]]


# --------------------------------------------------------------------------------------------------
# faults


def file_faults(path: Path):
    """``(name, damage)`` pairs for one file; ``damage()`` rewrites (or deletes) it in place."""
    data = path.read_bytes()
    rng = np.random.default_rng(len(data))
    yield "truncated", lambda: path.write_bytes(data[: len(data) // 2])
    yield "random bytes", lambda: path.write_bytes(rng.integers(0, 256, max(len(data), 16), dtype=np.uint8).tobytes())
    yield "not UTF-8", lambda: path.write_bytes(b"\xff\xfe\xc3\x28" + data[4:])
    yield "deleted", path.unlink
    if path.suffix == ".json":
        for text in ("123", "[]", '"x"', "null", "{}"):
            yield f"JSON {text}", lambda text=text: path.write_text(text)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def params_faults(params: Path, sections: tuple[str, ...]):
    """``(key, value, text)``: params.yaml with one key of ``sections`` set to each bad value."""
    tree = yaml.safe_load(params.read_text())

    def leaves(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict) and v:
                yield from leaves(v, prefix + [k])
            else:
                yield prefix + [k]

    for section in sections:
        for key in leaves(tree.get(section) or {}, [section]):
            for value in sample(list(BAD_VALUES), ".".join(key)):
                copy = json.loads(json.dumps(tree))
                node = copy
                for k in key[:-1]:
                    node = node[k]
                node[key[-1]] = "@BAD@"
                yield ".".join(key), value, yaml.safe_dump(copy, sort_keys=False).replace("'@BAD@'", value)


# --------------------------------------------------------------------------------------------------
# running and judging


def outcome_problem(code: int, stderr: str, exception: BaseException | None = None) -> str | None:
    """None when the run ended as the issue asks (0, or 2 with one ``error:`` line), else what is wrong."""
    if exception is not None and not isinstance(exception, SystemExit):
        return f"{type(exception).__name__}: {str(exception)[:200]}"
    if "Traceback" in stderr:
        return "traceback: " + stderr.strip().splitlines()[-1][:200]
    if code not in (0, 2):
        return f"exit code {code}: {stderr.strip()[-200:]}"
    if code == 2:
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        if len(errors) != 1:
            return f"{len(errors)} error lines: {stderr.strip()[-300:]}"
    return None


def cli(args: list[str]) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stderr, result.exception


class Pass:
    """Collects the problems of many runs, to report them all at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.runs = 0

    def run(self, label: str, args: list[str]) -> int:
        code, stderr, exc = cli(args)
        self.runs += 1
        problem = outcome_problem(code, stderr, exc)
        if problem:
            self.problems.append(f"{label}: {problem}")
        return code

    def check(self) -> None:
        assert not self.problems, f"{len(self.problems)} of {self.runs} runs (TWILBERT_FAULT_SEED={SEED}):\n" + "\n".join(self.problems)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Good inputs and outputs of the three commands, built once: tiny shards, a pre-trained checkpoint
    and a fine-tuned model (by the commands themselves), a task, and an HF export."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TWILBERT_TRACKING", "off")
        yield build_world(tmp_path_factory.mktemp("fault-pass"))


def build_world(root: Path) -> dict:
    inputs = build_inputs(root / "inputs", n_pairs=40, n_tweets=10)
    params = write_params(root / "params.yaml", inputs["vocab_size"], training={"epochs": 1, "checkpoint_every": 2},
                          model={"n_encoders": 1, "hidden_size": 16, "embedding_size": 16, "rop": {"hidden_size": 8}})
    w = {"root": root, "inputs": inputs, "params": params, "pre": root / "pre"}
    assert cli(pretrain_args(w, w["pre"]))[0] == 0
    ft_params = write_project(root / "ft", inputs["tokenizer"], tracking=False, finetuning={"epochs": 1, "path_load_weights": str(w["pre"])})
    w["ft_params"] = ft_params
    code, err, exc = cli(finetune_args(w, root / "ft-out"))
    assert code == 0, (err, exc)
    from twilbert.hf import export_hf

    export_hf(w["pre"], root / "hf")
    w["hf"] = root / "hf"
    return w


def pretrain_args(w: dict, out: Path, params: Path | None = None, shards: Path | None = None, vocab: Path | None = None) -> list:
    return ["pretrain", "--params", params or w["params"], "--shards-dir", shards or w["inputs"]["shards"],
            "--vocab-model", vocab or w["inputs"]["tokenizer"], "--out-dir", out, "--reports-dir", out.parent / f"{out.name}-reports"]


def finetune_args(w: dict, out: Path, params: Path | None = None, vocab: Path | None = None) -> list:
    return ["finetune", "--params", params or w["ft_params"], "--task", "senti", "--vocab-model", vocab or w["inputs"]["tokenizer"],
            "--model-out", out / "model", "--report-out", out / "report", "--checkpoint-dir", out / "checkpoints"]


def each_damaged_copy(src: Path, dst: Path, files: list[Path] | None = None):
    """``(label, copy)`` for every fault of every file of ``src``, each in a fresh copy at ``dst``."""
    for f in files if files is not None else files_under(src):
        rel = f.relative_to(src)
        for name in sample([n for n, _ in file_faults(f)], str(rel)):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
            dict(file_faults(dst / rel))[name]()
            yield f"{rel} {name}", dst


def run_with_damaged_tokenizer(p: Pass, world: dict, tmp_path: Path, args) -> None:
    """``args(world, out, vocab=...)`` run once per fault of the SentencePiece model."""
    spm = world["inputs"]["tokenizer"]
    for label, vocab in each_damaged_copy(spm.parent, tmp_path / "vocab", [spm]):
        p.run(f"vocab/{label}", args(world, tmp_path / "out", vocab=vocab / spm.name))
        shutil.rmtree(tmp_path / "out", ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# pretrain


def test_pretrain_with_damaged_inputs(world, tmp_path):
    p = Pass()
    src = world["inputs"]["shards"]
    for label, shards in each_damaged_copy(src, tmp_path / "shards"):
        p.run(f"shards/{label}", pretrain_args(world, tmp_path / "out", shards=shards))
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
    run_with_damaged_tokenizer(p, world, tmp_path, pretrain_args)
    p.check()


def test_pretrain_rerun_on_damaged_outputs(world, tmp_path):
    """A rerun reads its checkpoints back: damage in any of them falls back or is one line."""
    p = Pass()
    files = [f for f in files_under(world["pre"]) if "checkpoints" in f.parts or f.parent.name == "final"]
    for label, out in each_damaged_copy(world["pre"], tmp_path / "out", files):
        p.run(label, pretrain_args(world, out))
    p.check()


# --------------------------------------------------------------------------------------------------
# finetune


def test_finetune_with_a_damaged_pretrained_checkpoint(world, tmp_path):
    p = Pass()
    params = tmp_path / "params.yaml"
    for label, pre in each_damaged_copy(world["pre"], tmp_path / "pre", files_under(world["pre"] / "final")):
        params.write_text(world["ft_params"].read_text().replace(str(world["pre"]), str(pre)))
        # the task files are relative to the params file: keep the original's directory
        shutil.copy(params, world["ft_params"].parent / "params-damaged.yaml")
        p.run(f"pre/{label}", finetune_args(world, tmp_path / "out", params=world["ft_params"].parent / "params-damaged.yaml"))
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
    p.check()


def test_finetune_with_damaged_task_files_and_tokenizer(world, tmp_path):
    p = Pass()
    task_dir = world["ft_params"].parent
    saved = tmp_path / "saved"
    shutil.copytree(task_dir / "senti", saved)
    try:
        for f in files_under(saved):
            faults = dict(file_faults(task_dir / "senti" / f.name))
            for name in sample(list(faults), f.name):
                faults[name]()
                p.run(f"senti/{f.name} {name}", finetune_args(world, tmp_path / "out"))
                shutil.copy(f, task_dir / "senti" / f.name)
                shutil.rmtree(tmp_path / "out", ignore_errors=True)
    finally:
        shutil.rmtree(task_dir / "senti")
        shutil.copytree(saved, task_dir / "senti")
    run_with_damaged_tokenizer(p, world, tmp_path, finetune_args)
    p.check()


def test_finetune_rerun_on_damaged_outputs(world, tmp_path):
    """The fine-tuned model dir a rerun finds (and replaces): never a traceback."""
    p = Pass()
    good = world["root"] / "ft-out"
    for label, out in each_damaged_copy(good, tmp_path / "out", files_under(good / "model")):
        p.run(label, finetune_args(world, out))
    p.check()


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_bad_params(world, tmp_path, command):
    """Every key of the sections the command reads, set to values no key accepts."""
    p = Pass()
    source = world["params"] if command == "pretrain" else world["ft_params"]
    sections = ("model", "training", "representation", "impl") if command == "pretrain" else ("finetuning", "representation")
    bad = source.parent / "params-bad.yaml"  # beside the original: task files are relative to it
    for key, value, text in params_faults(source, sections):
        bad.write_text(text)
        out = tmp_path / "out"
        p.run(f"{key}: {value}", pretrain_args(world, out, params=bad) if command == "pretrain" else finetune_args(world, out, params=bad))
        shutil.rmtree(out, ignore_errors=True)
    p.check()


# --------------------------------------------------------------------------------------------------
# import-hf


def test_import_hf_with_a_damaged_hf_directory(world, tmp_path):
    p = Pass()
    for label, hf in each_damaged_copy(world["hf"], tmp_path / "hf"):
        p.run(label, ["import-hf", "--model", hf, "--out", tmp_path / "out"])
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
    p.check()


def test_import_hf_crafted_config_values(world, tmp_path):
    p = Pass()
    config = json.loads((world["hf"] / "config.json").read_text())
    sizes = [k for k, v in config.items() if isinstance(v, int) and not isinstance(v, bool)]
    for key in sizes:
        for value in sample([10**12, -1, 0, 1e400, "x", [1]], key):
            shutil.rmtree(tmp_path / "hf", ignore_errors=True)
            shutil.copytree(world["hf"], tmp_path / "hf")
            (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, key: value}).replace("Infinity", "1e400"))
            p.run(f"config.json {key}={value}", ["import-hf", "--model", tmp_path / "hf", "--out", tmp_path / "out"])
            shutil.rmtree(tmp_path / "out", ignore_errors=True)
    p.check()


# --------------------------------------------------------------------------------------------------
# full disk (a real small filesystem; root only)


@pytest.mark.parametrize("size", ["48k", "160k"])
def test_commands_on_a_full_disk(world, tmp_path, size):
    p = []
    with tmpfs(tmp_path / "mnt", size) as mnt:
        for name, args in (
            ("pretrain", pretrain_args(world, mnt / "pre")),
            ("finetune", finetune_args(world, mnt / "ft")),
            ("import-hf", ["import-hf", "--model", world["hf"], "--out", mnt / "hf"]),
        ):
            done = run_stage(*args)  # a separate process: its files and lock go with it, so the tmpfs unmounts
            code, stderr = done.returncode, done.stderr
            problem = outcome_problem(code, stderr)
            if problem is None and code == 2 and "no space left on device" not in stderr:
                problem = f"not reported as a full disk: {stderr.strip()[-200:]}"
            if problem:
                p.append(f"{name}: {problem}")
            for leftover in mnt.rglob("*.tmp"):
                p.append(f"{name}: temp file left: {leftover}")
            for child in mnt.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
    assert not p, "\n".join(p)
