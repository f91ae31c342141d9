"""Fine-tuning faults: numerical faults (NaN/inf loss or gradient skipped and counted, N in a row
stop the run, non-finite weights never saved) and crash safety (per-epoch checkpoints, bitwise resume,
checksum fallback, fingerprint mismatch)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

import twilbert.finetune.train as train_mod
from tests.finetune.test_finetune_e2e import CPU, LABELS, make_task, tiny_model_config, tok_path, write_task  # noqa: F401
from twilbert.finetune.checkpoint import EpochCheckpoints
from twilbert.finetune.config import FinetuningConfig
from twilbert.finetune.train import Trainer, finetune_task
from twilbert.train.checkpoint import CheckpointError
from twilbert.train.config import RunConfig
from twilbert.train.loop import TrainingDivergedError

CATS = {lab: i for i, lab in enumerate(LABELS)}
# 36 train examples / batch 8 = 5 updates per epoch
FT = FinetuningConfig(epochs=4, batch_size=8, max_len=12, path_load_weights="random", lr=1e-2, dropout=0.2, warmup_steps=2)


class Interrupt(Exception):
    """Stands for a kill: raised from inside the run."""


@pytest.fixture
def task(tmp_path):
    write_task(tmp_path / "task")
    return make_task(tmp_path / "task", categories=CATS)


def run(tmp_path, tok_path, task, ft=FT, sub="run", **kw):
    return finetune_task("t", task, ft, tokenizer_path=tok_path, rules=None, model_out=tmp_path / sub / "model",
                         report_out=tmp_path / sub / "reports", model_config=tiny_model_config(tok_path), impl=CPU,
                         progress=False, checkpoint_dir=tmp_path / sub / "ckpt", **kw)


class LossHook:
    """Wraps the task loss: ``plan[i]`` changes the i-th micro-batch loss (0-based, over the run):
    'nan' -> NaN loss, 'inf' -> +inf added (the gradient stays finite), 'nangrad' -> finite loss with a
    NaN gradient, 'kill' -> Interrupt."""

    def __init__(self, monkeypatch, plan: dict[int, str]):
        self.plan, self.calls = plan, 0
        real = train_mod.build_loss

        def build(name, task_type, weights=None):
            fn = real(name, task_type, weights)

            def hooked(out, labels):
                i, self.calls = self.calls, self.calls + 1
                what = self.plan.get(i)
                if what == "kill":
                    raise Interrupt(f"killed at micro-batch {i}")
                if what == "nangrad":
                    out = _NanGrad.apply(out)
                loss = fn(out, labels)
                if what == "nan":
                    loss = loss * float("nan")
                elif what == "inf":
                    loss = loss + float("inf")
                return loss

            return hooked

        monkeypatch.setattr(train_mod, "build_loss", build)


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def adam_steps(ckpt_dir) -> int:
    """Optimizer steps actually taken, from the last checkpoint's optimizer state."""
    last = sorted(ckpt_dir.glob("epoch-*"))[-1]
    state = torch.load(last / "trainer_state.pt", weights_only=True)
    return int(next(iter(state["optimizer"]["state"].values()))["step"])


# --------------------------------------------------------------------------------------------------
# numerical faults


def test_nan_and_inf_loss_and_nan_gradient_are_skipped_and_counted(tmp_path, tok_path, task, monkeypatch):
    LossHook(monkeypatch, {1: "nan", 4: "inf", 7: "nangrad", 12: "nan"})
    res = run(tmp_path, tok_path, task, clear_checkpoints=False)
    assert res["skipped_updates"] == 4
    assert json.loads((tmp_path / "run" / "reports" / "metrics.json").read_text())["skipped_updates"] == 4
    assert adam_steps(tmp_path / "run" / "ckpt") == 4 * 5 - 4  # no optimizer step for a skipped update
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())
    assert all(np.isfinite(h) for h in [res["dev"]["f1_macro"], res["test"]["f1_macro"]])


def test_inf_loss_with_finite_gradient_is_still_skipped(tmp_path, tok_path, task, monkeypatch):
    # the gradient check alone would take this step: the loss check must catch it
    LossHook(monkeypatch, {0: "inf", 1: "inf"})
    res = run(tmp_path, tok_path, task, ft=replace(FT, epochs=1), clear_checkpoints=False)
    assert res["skipped_updates"] == 2 and adam_steps(tmp_path / "run" / "ckpt") == 3


def test_n_bad_updates_in_a_row_stop_with_a_clear_error_and_save_nothing(tmp_path, tok_path, task, monkeypatch):
    bookkeeping = RunConfig(max_bad_steps=3)
    LossHook(monkeypatch, {6: "nan", 7: "nangrad", 8: "inf"})  # epoch 2, updates 2-4
    with pytest.raises(TrainingDivergedError, match=r"tasks\.t: 3 optimizer updates in a row had a non-finite loss or gradient.*run\.max_bad_steps \(3\)"):
        run(tmp_path, tok_path, task, run=bookkeeping)
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "reports").exists()
    assert [p.name for p in (tmp_path / "run" / "ckpt").glob("epoch-*")] == ["epoch-0001"]  # the good epoch only


def test_bad_updates_not_in_a_row_do_not_stop(tmp_path, tok_path, task, monkeypatch):
    LossHook(monkeypatch, {6: "nan", 7: "nan", 9: "nan", 10: "nan"})  # 2 bad, 1 good, 2 bad
    assert run(tmp_path, tok_path, task, run=RunConfig(max_bad_steps=3))["skipped_updates"] == 4


def test_non_finite_weights_are_never_saved(tmp_path, tok_path, task, monkeypatch):
    original = Trainer.train_epoch

    def poison(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        with torch.no_grad():
            self.model.head.weight[0, 0] = float("inf")
        return out

    monkeypatch.setattr(Trainer, "train_epoch", poison)
    with pytest.raises(CheckpointError, match="refusing to save non-finite weights after epoch 1"):
        run(tmp_path, tok_path, task)
    assert not list((tmp_path / "run" / "ckpt").glob("*epoch-*")) and not (tmp_path / "run" / "model").exists()


def test_max_bad_steps_is_validated():
    from twilbert.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="max_bad_steps: must be >= 1"):
        from_dict(RunConfig, {"max_bad_steps": 0}, "run")


# --------------------------------------------------------------------------------------------------
# crash safety


def outputs(sub_dir) -> dict[str, bytes]:
    """Everything a run writes that must not depend on an interruption (run_info.json excluded:
    wall times)."""
    from safetensors.torch import load_file

    out = {f: (sub_dir / "reports" / f).read_bytes() for f in ("metrics.json", "history.csv", "predictions.tsv", "class_report.json", "confusion.csv")}
    out["config.json"] = (sub_dir / "model" / "config.json").read_bytes()
    out["weights"] = {k: v for k, v in load_file(str(sub_dir / "model" / "model.safetensors")).items()}
    return out


def same_outputs(a, b) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k == "weights":
            assert a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k]), "weights differ"
        else:
            assert a[k] == b[k], k


@pytest.fixture
def reference(tmp_path, tok_path, task):
    logged = []
    run(tmp_path, tok_path, task, sub="ref", log_fn=lambda m, e: logged.append((e, m)))
    assert not list((tmp_path / "ref" / "ckpt").iterdir())  # cleared on success, the directory kept
    return outputs(tmp_path / "ref"), logged


@pytest.mark.parametrize(
    "kill_at",
    [
        "epoch:2",  # after epoch 1's checkpoint, before epoch 2
        "batch:12",  # mid-epoch 3 (its 3rd micro-batch)
        "save",  # after the last epoch, while the model is being saved
    ],
)
def test_interrupted_run_resumes_to_bitwise_identical_outputs(tmp_path, tok_path, task, monkeypatch, reference, kill_at, capsys):
    ref, ref_logged = reference
    with monkeypatch.context() as m:
        if kill_at.startswith("batch:"):
            LossHook(m, {int(kill_at.split(":")[1]): "kill"})
        elif kill_at.startswith("epoch:"):
            original, n = Trainer.train_epoch, int(kill_at.split(":")[1])
            calls = []

            def killing(self, *a, **k):
                calls.append(1)
                if len(calls) == n:
                    raise Interrupt("killed before an epoch")
                return original(self, *a, **k)

            m.setattr(Trainer, "train_epoch", killing)
        else:
            def killing_save(*a, **k):
                raise Interrupt("killed while saving the model")

            m.setattr(train_mod, "save_finetuned", killing_save)
        with pytest.raises(Interrupt):
            run(tmp_path, tok_path, task, sub="cut")
    done = {"epoch:2": 1, "batch:12": 2, "save": 4}[kill_at]
    assert sorted(p.name for p in (tmp_path / "cut" / "ckpt").glob("epoch-*")) == [f"epoch-{e:04d}" for e in range(max(1, done - 1), done + 1)]
    capsys.readouterr()

    logged = []
    calls = []
    original = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    res = run(tmp_path, tok_path, task, sub="cut", log_fn=lambda m, e: logged.append((e, m)))
    assert f"resuming from {tmp_path / 'cut' / 'ckpt' / f'epoch-{done:04d}'} (epoch {done} done)" in capsys.readouterr().err
    assert len(calls) == 4 - done and res["run_info"]["resumed_from_epoch"] == done
    same_outputs(outputs(tmp_path / "cut"), ref)
    assert logged == ref_logged  # the resumed run replays the epochs it did not redo
    assert not list((tmp_path / "cut" / "ckpt").iterdir())


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, tok_path, task, monkeypatch, reference, capsys):
    ref, _ = reference
    with monkeypatch.context() as m:
        LossHook(m, {15: "kill"})  # epoch 4, after epochs 1-3 were checkpointed (2 and 3 kept)
        with pytest.raises(Interrupt):
            run(tmp_path, tok_path, task, sub="cut")
    newest = tmp_path / "cut" / "ckpt" / "epoch-0003" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    capsys.readouterr()
    res = run(tmp_path, tok_path, task, sub="cut")
    err = capsys.readouterr().err
    assert re.search(r"epoch-0003 is unusable \(.*model\.safetensors: sha256 .* does not match checksums\.json .*\); falling back to the previous one", err)
    assert "epoch-0002 (epoch 2 done)" in err and res["run_info"]["resumed_from_epoch"] == 2
    same_outputs(outputs(tmp_path / "cut"), ref)


def test_an_interrupted_checkpoint_write_is_ignored(tmp_path, tok_path, task, monkeypatch, reference, capsys):
    ref, _ = reference
    with monkeypatch.context() as m:
        LossHook(m, {10: "kill"})  # start of epoch 3
        with pytest.raises(Interrupt):
            run(tmp_path, tok_path, task, sub="cut")
    ckpt = tmp_path / "cut" / "ckpt"
    # what a kill -9 in the middle of writing epoch 3 leaves: a temp directory with some files
    torn = ckpt / ".tmp-epoch-0003-0123abcd"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\x00" * 100)
    run(tmp_path, tok_path, task, sub="cut")
    assert "(epoch 2 done)" in capsys.readouterr().err
    same_outputs(outputs(tmp_path / "cut"), ref)
    assert not torn.exists()


def test_another_config_moves_the_checkpoints_aside_and_starts_afresh(tmp_path, tok_path, task, monkeypatch, capsys):
    with monkeypatch.context() as m:
        LossHook(m, {10: "kill"})
        with pytest.raises(Interrupt):
            run(tmp_path, tok_path, task, sub="cut")
    capsys.readouterr()
    other = replace(FT, lr=5e-3)
    res = run(tmp_path, tok_path, task, ft=other, sub="cut")
    err = capsys.readouterr().err
    assert re.search(r"belong to a different run \(finetuning\.lr: 0\.01 -> 0\.005\); moving them to .*ckpt-stale-\S+ and starting afresh", err)
    assert res["run_info"]["resumed_from_epoch"] is None
    stale = list((tmp_path / "cut").glob("ckpt-stale-*"))
    assert len(stale) == 1 and sorted(p.name for p in stale[0].glob("epoch-*")) == ["epoch-0001", "epoch-0002"]  # nothing lost
    fresh = run(tmp_path, tok_path, task, ft=other, sub="fresh")
    assert fresh["test"] == res["test"]


def test_edited_code_does_not_resume_the_old_code_s_checkpoints(tmp_path, tok_path, task, monkeypatch, capsys):
    """An edit of the fine-tuning code (why DVC reruns the stage) makes another run config: the
    interrupted run's checkpoints are moved aside, not continued under the new code."""
    with monkeypatch.context() as m:
        LossHook(m, {10: "kill"})
        with pytest.raises(Interrupt):
            run(tmp_path, tok_path, task, sub="cut")
    state = json.loads(next((tmp_path / "cut" / "ckpt").glob("epoch-*/state.json")).read_text())
    assert state["run_config"]["code_sha256"] == train_mod.finetune_code_sha256()  # the real code's hash
    capsys.readouterr()
    monkeypatch.setattr(train_mod, "finetune_code_sha256", lambda: "f" * 64)
    res = run(tmp_path, tok_path, task, sub="cut")
    assert re.search(r"belong to a different run \(code_sha256: '[0-9a-f]{64}' -> 'f{64}'\); moving them", capsys.readouterr().err)
    assert res["run_info"]["resumed_from_epoch"] is None
    assert len(list((tmp_path / "cut").glob("ckpt-stale-*"))) == 1


def test_changed_data_is_another_run(tmp_path, tok_path, task, capsys):
    import torch.nn as nn

    model = nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    rng = np.random.default_rng(0)
    cfg = {"data_sha256": {"train": "a" * 64, "dev": "b" * 64}, "finetuning": {"lr": 0.01}}
    EpochCheckpoints(tmp_path / "c", cfg).save(1, model, opt, sched, rng, None, {"x": 1})
    changed = {**cfg, "data_sha256": {"train": "c" * 64, "dev": "b" * 64}}
    assert EpochCheckpoints(tmp_path / "c", changed).resume(model, opt, sched, rng) is None
    assert "(data_sha256.train: 'aaaa" in capsys.readouterr().err


def test_checkpoint_files_are_safetensors_and_weights_only_state(tmp_path, tok_path, task, monkeypatch):
    with monkeypatch.context() as m:
        LossHook(m, {10: "kill"})
        with pytest.raises(Interrupt):
            run(tmp_path, tok_path, task, sub="cut")
    d = tmp_path / "cut" / "ckpt" / "epoch-0002"
    sums = json.loads((d / "checksums.json").read_text())
    assert set(sums) <= {"model.safetensors", "best.safetensors", "trainer_state.pt", "state.json"} and len(sums) >= 3
    state = torch.load(d / "trainer_state.pt", weights_only=True)  # no pickled code
    assert {"optimizer", "scheduler", "rng"} <= set(state) and {"torch", "numpy", "python", "generator"} <= set(state["rng"])
    st = json.loads((d / "state.json").read_text())
    assert st["epoch"] == 2 and len(st["history"]) == 2 and st["fingerprint"] and "run_config" in st
    assert st["run_config"]["finetuning"]["lr"] == 0.01 and set(st["run_config"]["data_sha256"]) == {"train", "dev", "test"}


def test_a_checkpoint_that_does_not_fit_the_code_is_moved_aside_untouched(tmp_path, capsys):
    import torch.nn as nn

    def objects(width):
        model = nn.Linear(width, 2)
        opt = torch.optim.Adam(model.parameters())
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), np.random.default_rng(0)

    EpochCheckpoints(tmp_path / "c", {"k": 1}).save(1, *objects(2)[:3], objects(2)[3], None, {})
    model, opt, sched, rng = objects(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert EpochCheckpoints(tmp_path / "c", {"k": 1}).resume(model, opt, sched, rng) is None
    assert re.search(r"epoch-0001 does not fit this code \(weights: other shapes for \['weight'\]\); moving them to .*c-stale-", capsys.readouterr().err)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.name for p in next(tmp_path.glob("c-stale-*")).iterdir()] == ["epoch-0001"]


def test_moved_aside_checkpoints_never_pile_up(tmp_path):
    """Each change of run config moves the old checkpoints aside; only the newest KEEP_STALE stay."""
    from twilbert.finetune.checkpoint import KEEP_STALE, EpochCheckpoints

    root = tmp_path / "task"
    for i in range(KEEP_STALE + 3):
        root.mkdir()
        (root / "epoch-0001").mkdir()
        (root / "epoch-0001" / "marker").write_text(str(i))
        EpochCheckpoints(root, {"lr": i}, say=lambda msg: None)._move_aside({"lr": -1}, reason=f"config {i} changed")
        assert not root.exists()
    left = sorted(tmp_path.glob("task-stale-*"))
    assert len(left) == KEEP_STALE
    assert sorted(int((p / "epoch-0001" / "marker").read_text()) for p in left) == list(range(3, KEEP_STALE + 3))
