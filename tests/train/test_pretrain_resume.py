"""Checkpoints and resumption: bit-identical resume on CPU, fallback past a corrupt checkpoint,
per-config checkpoint directories (a changed config starts fresh without touching the old one's
checkpoints, or errors listing the keys), explicit resume_from, a checkpoint at the end of a step
budget, initial weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_pretrain_fixtures import build_inputs, cpu_impl, tiny_model, tiny_run, tiny_training
from twilbert.model.twilbert import TWilBERT
from twilbert.train.checkpoint import MODEL_FILE, ConfigMismatchError, load_checkpoint
from twilbert.train.initial_weights import load_initial_weights
from twilbert.train.pretrain import TrainerHooks, pretrain
from twilbert.train.run_store import KEEP_RUNS, RunConfigMismatchError, list_checkpoints, list_runs

# dropout on, so the resumed run also needs the RNG state; accumulation 2, so the cursor is not the step
MODEL = dict(output_dropout=0.1, attention_dropout=0.1)
TRAINING = dict(epochs=2, accum_iters=2)
RUN = dict(checkpoint_every=3)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("resume"))


def run(inputs, out_dir: Path, model=None, training=None, run=None, **kw):
    return pretrain(
        model_cfg=tiny_model(inputs["vocab_size"], **{**MODEL, **(model or {})}),
        training=tiny_training(**{**TRAINING, **(training or {})}),
        impl=cpu_impl(),
        run=tiny_run(**{**RUN, **(run or {})}),
        shards_dir=inputs["shards"],
        tokenizer_path=inputs["tokenizer"],
        out_dir=out_dir,
        progress=False,
        **kw,
    )


def ckpts(out_dir: Path) -> list[Path]:
    """The step checkpoints of the one run config under ``out_dir``."""
    runs = list_runs(out_dir / "checkpoints")
    assert len(runs) == 1, runs
    return list_checkpoints(runs[0])


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / MODEL_FILE)


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """An uninterrupted run: 2 epochs, accumulation 2, dropout."""
    out = tmp_path_factory.mktemp("uninterrupted")
    logged = []
    summary = run(inputs, out, log_fn=lambda m, s: logged.append((s, m)))
    return {"out": out, "summary": summary, "logged": logged}


def test_uninterrupted_run_writes_final_summary_and_logs(reference, inputs):
    out, summary, logged = reference["out"], reference["summary"], reference["logged"]
    steps_per_epoch = summary["steps_per_epoch"]
    assert summary["steps"] == 2 * steps_per_epoch and summary["epochs"] == 2.0 and not summary["stopped"]
    assert json.loads((out / "summary.json").read_text()) == summary
    meta = json.loads((out / "final" / "pretrain.json").read_text())
    assert meta["tokenizer_sha256"] == summary["tokenizer_sha256"] and meta["step"] == summary["steps"]
    # final/ loads into a model built from its own config.json
    model = TWilBERT(tiny_model(inputs["vocab_size"], **MODEL))
    load_checkpoint(out / "final", model)
    # the last two checkpoints are kept; the last one is the end of epoch 2
    kept = ckpts(out)
    assert [p.name for p in kept][-1] == f"step-{summary['steps']:08d}" and len(kept) == 2
    # one logged row per step, with every metric; tokens add up to the summary
    assert [s for s, _ in logged] == list(range(1, summary["steps"] + 1))
    keys = {"loss", "mlm_loss", "rop_loss", "lr", "mlm_accuracy", "rop_accuracy", "grad_norm", "tokens_per_s", "padded_tokens_per_s", "epoch"}
    assert all(keys <= m.keys() for _, m in logged)
    assert logged[-1][1]["loss"] < logged[0][1]["loss"]  # it learns something
    assert summary["tokens_real"] < summary["tokens_padded"]


def test_resume_mid_epoch_is_bit_identical(reference, inputs, tmp_path, capsys):
    first = run(inputs, tmp_path, stop_after_steps=5)  # mid-epoch 1, not at a checkpoint_every multiple
    assert first["stopped"] and first["steps"] == 5 and not (tmp_path / "final").exists()
    assert ckpts(tmp_path)[-1].name == "step-00000005"
    second = run(inputs, tmp_path)
    assert "resuming from" in capsys.readouterr().err
    assert second["resumed_from_step"] == 5 and second["steps"] == reference["summary"]["steps"]
    assert_identical(weights(tmp_path / "final"), weights(reference["out"] / "final"))
    assert second["tokens_real"] == reference["summary"]["tokens_real"]


class Crash(Exception):
    """Stands for a kill: raised from a trainer hook."""


def test_a_crash_inside_a_checkpoint_write_through_the_hook_resumes_bit_identically(reference, inputs, tmp_path, capsys):
    """The hook sees each checkpoint file once its temp file is complete and before the rename: a crash
    there (the 2nd save, step 6, while writing the weights) leaves a torn checkpoint the rerun skips."""
    seen = []

    def on_write(path):
        seen.append(path.name)
        if seen.count(MODEL_FILE) == 2 and path.name == MODEL_FILE:
            raise Crash(str(path))

    with pytest.raises(Crash, match="step-00000006"):
        run(inputs, tmp_path, hooks=TrainerHooks(on_checkpoint_write=on_write, after_step=lambda step: None))
    assert seen[:4] == [MODEL_FILE, "config.json", "trainer_state.pt", "checksums.json"]  # the whole first save
    torn = ckpts(tmp_path)[-1]
    assert torn.name == "step-00000006" and not (torn / MODEL_FILE).exists()
    summary = run(inputs, tmp_path)
    assert "step-00000006 is unusable" in capsys.readouterr().err and summary["resumed_from_step"] == 3
    assert_identical(weights(tmp_path / "final"), weights(reference["out"] / "final"))


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(reference, inputs, tmp_path, capsys):
    run(inputs, tmp_path, run={"checkpoint_every": 1}, stop_after_steps=4)  # checkpoint_every: not in the fingerprint
    newest = ckpts(tmp_path)[-1]
    assert newest.name == "step-00000004"
    data = bytearray((newest / MODEL_FILE).read_bytes())
    data[-10:] = b"\x00" * 10
    (newest / MODEL_FILE).write_bytes(bytes(data))
    summary = run(inputs, tmp_path, run={"checkpoint_every": 1})
    err = capsys.readouterr().err
    assert "step-00000004 is unusable" in err and "falling back" in err
    assert summary["resumed_from_step"] == 3
    assert_identical(weights(tmp_path / "final"), weights(reference["out"] / "final"))


def test_changed_run_config_starts_fresh_and_keeps_the_old_checkpoints(reference, inputs, tmp_path, capsys):
    """What `dvc exp run -S ...` does: the stage reruns because params changed. The new config trains
    from scratch in its own directory; the old config's checkpoints are untouched, and going back to
    the old params resumes the old run (here: to the reference's weights)."""
    run(inputs, tmp_path, stop_after_steps=2)
    old_run = list_runs(tmp_path / "checkpoints")[0]
    summary = run(inputs, tmp_path, training={"lr": 1e-3}, stop_after_steps=1)
    err = capsys.readouterr().err
    assert "training.lr: 0.003 -> 0.001" in err and "starting fresh" in err
    assert summary["resumed_from_step"] == 0 and summary["steps"] == 1
    runs = list_runs(tmp_path / "checkpoints")
    assert len(runs) == 2 and old_run in runs
    assert [p.name for p in list_checkpoints(old_run)] == ["step-00000002"]
    assert not [p for p in tmp_path.iterdir() if p.name != "checkpoints" and p.name.startswith("checkpoints")]  # nothing moved aside
    assert json.loads((old_run / "run.json").read_text())["run_config"]["training"]["lr"] == 0.003
    back = run(inputs, tmp_path)
    assert back["resumed_from_step"] == 2
    assert_identical(weights(tmp_path / "final"), weights(reference["out"] / "final"))


def test_on_config_change_error_lists_the_differing_keys(inputs, tmp_path):
    run(inputs, tmp_path, stop_after_steps=1)
    with pytest.raises(RunConfigMismatchError) as err:
        run(inputs, tmp_path, model={"n_encoders": 3}, training={"lr": 1e-3}, run={"on_config_change": "error"}, stop_after_steps=1)
    message = str(err.value)
    assert "model.n_encoders: checkpoint 2, params 3" in message and "training.lr: checkpoint 0.003, params 0.001" in message
    assert err.value.differences and {k for k, _, _ in err.value.differences} == {"model.n_encoders", "training.lr"}
    assert len(list_runs(tmp_path / "checkpoints")) == 1  # nothing written for the refused config
    # the same config resumes fine in error mode (on_config_change is not part of the run config)
    again = run(inputs, tmp_path, run={"on_config_change": "error"}, stop_after_steps=1)
    assert again["resumed_from_step"] == 1


def test_resume_from_an_explicit_checkpoint(reference, inputs, tmp_path):
    run(inputs, tmp_path / "elsewhere", stop_after_steps=5)
    source = ckpts(tmp_path / "elsewhere")[-1]
    summary = run(inputs, tmp_path / "here", run={"resume_from": str(source)})
    assert summary["resumed_from_step"] == 5
    assert_identical(weights(tmp_path / "here" / "final"), weights(reference["out"] / "final"))
    # a directory of checkpoints works too; a newer checkpoint of the same config in out_dir wins
    summary = run(inputs, tmp_path / "here", run={"resume_from": str(source.parent)})
    assert summary["resumed_from_step"] == reference["summary"]["steps"]
    # another run config: an error naming every differing key, before anything is trained
    with pytest.raises(RunConfigMismatchError, match=r"training.lr: checkpoint 0.003, params 0.001") as err:
        run(inputs, tmp_path / "third", training={"lr": 1e-3}, run={"resume_from": str(source)})
    assert "resume_from must name a checkpoint of the same run config" in str(err.value)
    assert not (tmp_path / "third" / "final").exists()


def test_old_run_configs_are_pruned_to_the_newest(inputs, tmp_path):
    for lr in [1e-3, 2e-3, 4e-3, 5e-3][: KEEP_RUNS + 1]:
        run(inputs, tmp_path, training={"lr": lr}, stop_after_steps=1)
    kept = {json.loads((r / "run.json").read_text())["run_config"]["training"]["lr"] for r in list_runs(tmp_path / "checkpoints")}
    assert kept == {2e-3, 4e-3, 5e-3}


@pytest.mark.parametrize("max_steps", [3, 1])
def test_a_step_budget_always_ends_with_a_checkpoint(inputs, tmp_path, max_steps):
    """The budget ends before an epoch end and before checkpoint_every: there is still a checkpoint
    (the bug: none, and DVC failed with "output 'models/pretrain/checkpoints' does not exist")."""
    summary = run(inputs, tmp_path, training={"max_steps": max_steps}, run={"checkpoint_every": 0})
    assert summary["steps"] == max_steps and max_steps < summary["steps_per_epoch"]
    assert ckpts(tmp_path)[-1].name == f"step-{max_steps:08d}"
    again = run(inputs, tmp_path, training={"max_steps": max_steps}, run={"checkpoint_every": 0})
    assert again["resumed_from_step"] == max_steps and again["steps"] == max_steps  # nothing trained twice


def test_initial_weights(reference, inputs, tmp_path):
    final = reference["out"] / "final"
    # architecture-compatible: masking and dropout may differ
    model = TWilBERT(tiny_model(inputs["vocab_size"], masked_lm={"budget": 0.2}))
    load_initial_weights(model, final, tiny_model(inputs["vocab_size"], masked_lm={"budget": 0.2}))
    assert_identical(dict(model.state_dict()), weights(final))
    # not compatible: every differing architecture key is named
    wider = tiny_model(inputs["vocab_size"], n_encoders=3, attention_bias=False)
    with pytest.raises(ConfigMismatchError, match="n_encoders") as err:
        load_initial_weights(TWilBERT(wider), final, wider)
    assert "attention_bias" in str(err.value)

    # pretrain starts from them: one step at a negligible lr stays next to them, far from a fresh init
    summary = run(
        inputs,
        tmp_path,
        training={"path_initial_weights": str(final), "max_steps": 1, "schedule": "constant", "lr": 1e-9, "warmup_steps": 0},
    )
    assert summary["steps"] == 1
    got, want = weights(tmp_path / "final"), weights(final)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)
    fresh = TWilBERT(tiny_model(inputs["vocab_size"], **MODEL)).state_dict()
    assert any((got[k] - fresh[k]).abs().max() > 1e-3 for k in want)


def _same_rows(a: list, b: list) -> bool:
    """Logged rows equal up to wall-clock figures (tokens/s differ between runs)."""
    clock = {"tokens_per_s", "padded_tokens_per_s"}
    strip = lambda rows: [(s, {k: v for k, v in m.items() if k not in clock}) for s, m in rows]  # noqa: E731
    return json.dumps(strip(a), sort_keys=True) == json.dumps(strip(b), sort_keys=True)


def test_resumed_run_replays_the_whole_history(reference, inputs, tmp_path):
    """Curves and final metrics of a resumed run are those of the whole run (the stage rewrites its
    curves file and opens a new MLflow run on every invocation)."""
    run(inputs, tmp_path, stop_after_steps=5)
    logged = []
    summary = run(inputs, tmp_path, log_fn=lambda m, s: logged.append((s, m)))
    assert _same_rows(logged, reference["logged"])
    for k in ("loss", "mlm_loss", "mlm_accuracy", "rop_accuracy"):
        assert summary[k] == reference["summary"][k]


def test_rerunning_a_finished_run_keeps_its_metrics(reference, inputs, tmp_path):
    """DVC reruns the stage when an upstream file is rewritten with the same content: the run resumes
    from its last checkpoint, trains nothing, and must still report the run's metrics."""
    run(inputs, tmp_path)
    logged = []
    again = run(inputs, tmp_path, log_fn=lambda m, s: logged.append((s, m)))
    assert again["steps"] == reference["summary"]["steps"] and again["loss"] == reference["summary"]["loss"]
    assert _same_rows(logged, reference["logged"])
    assert again["tokens_per_s"] and again["tokens_per_s"] > 0


def test_changed_training_code_trains_afresh_unless_resumed_explicitly(reference, inputs, tmp_path, monkeypatch, capsys):
    """The stale-weights case: DVC reruns the stage because its code changed; the old code's finished
    checkpoint (same params) must not become final/. Naming it in resume_from continues it on purpose."""
    import twilbert.train.pretrain as pretrain_module

    out, strict = tmp_path / "out", tmp_path / "strict"
    shutil.copytree(reference["out"], out)
    shutil.copytree(reference["out"], strict)
    finished = ckpts(out)[-1]
    stored = json.loads((finished.parent / "run.json").read_text())["run_config"]
    assert stored["code_sha256"] == pretrain_module.training_code_sha256()  # the real hash of the real code
    monkeypatch.setattr(pretrain_module, "training_code_sha256", lambda: "f" * 64)  # an edit of the training code
    capsys.readouterr()
    summary = run(inputs, out, stop_after_steps=1)
    err = capsys.readouterr().err
    assert summary["resumed_from_step"] == 0 and summary["steps"] == 1  # trained, not the old final
    assert "code_sha256" in err and "starting fresh" in err
    assert finished.parent in list_runs(out / "checkpoints") and finished.is_dir()  # the old code's run is kept
    # on_config_change: error names the code as the only difference and how to continue the run
    with pytest.raises(RunConfigMismatchError, match="only the code differs.*resume_from") as refused:
        run(inputs, strict, run={"on_config_change": "error"}, stop_after_steps=1)
    assert [k for k, _, _ in refused.value.differences] == ["code_sha256"]
    # resume_from: a difference in code alone is reported, and the run continues (here: it had finished)
    explicit = run(inputs, tmp_path / "explicit", run={"resume_from": str(finished)})
    assert "written by other training code" in capsys.readouterr().err
    assert explicit["resumed_from_step"] == reference["summary"]["steps"]
    assert_identical(weights(tmp_path / "explicit" / "final"), weights(reference["out"] / "final"))
