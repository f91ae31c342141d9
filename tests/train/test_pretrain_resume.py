"""Checkpoints and resumption: bit-identical resume on CPU, fallback past a corrupt checkpoint,
fresh start on a changed run config, initial weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_pretrain_fixtures import build_inputs, cpu_impl, tiny_model, tiny_training
from twilbert.model.twilbert import TWilBERT
from twilbert.train.checkpoint import MODEL_FILE, ConfigMismatchError, load_checkpoint
from twilbert.train.pretrain import list_checkpoints, load_initial_weights, pretrain

# dropout on, so the resumed run also needs the RNG state; accumulation 2, so the cursor is not the step
MODEL = dict(output_dropout=0.1, attention_dropout=0.1)
TRAINING = dict(epochs=2, accum_iters=2, checkpoint_every=3)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("resume"))


def run(inputs, out_dir: Path, model=None, **kw):
    training = {**TRAINING, **kw.pop("training", {})}
    return pretrain(
        model_cfg=tiny_model(inputs["vocab_size"], **{**MODEL, **(model or {})}),
        training=tiny_training(**training),
        impl=cpu_impl(),
        shards_dir=inputs["shards"],
        tokenizer_path=inputs["tokenizer"],
        out_dir=out_dir,
        progress=False,
        **kw,
    )


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
    kept = list_checkpoints(out / "checkpoints")
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
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == "step-00000005"
    second = run(inputs, tmp_path)
    assert "resuming from" in capsys.readouterr().err
    assert second["resumed_from_step"] == 5 and second["steps"] == reference["summary"]["steps"]
    assert_identical(weights(tmp_path / "final"), weights(reference["out"] / "final"))
    assert second["tokens_real"] == reference["summary"]["tokens_real"]


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(reference, inputs, tmp_path, capsys):
    run(inputs, tmp_path, training={"checkpoint_every": 1}, stop_after_steps=4)  # checkpoint_every: not in the fingerprint
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert newest.name == "step-00000004"
    data = bytearray((newest / MODEL_FILE).read_bytes())
    data[-10:] = b"\x00" * 10
    (newest / MODEL_FILE).write_bytes(bytes(data))
    summary = run(inputs, tmp_path, training={"checkpoint_every": 1})
    err = capsys.readouterr().err
    assert "step-00000004 is unusable" in err and "falling back" in err
    assert summary["resumed_from_step"] == 3
    assert_identical(weights(tmp_path / "final"), weights(reference["out"] / "final"))


def test_changed_run_config_starts_fresh_and_moves_old_checkpoints_aside(inputs, tmp_path, capsys):
    run(inputs, tmp_path, stop_after_steps=2)
    summary = run(inputs, tmp_path, training={"lr": 1e-3}, stop_after_steps=1)
    err = capsys.readouterr().err
    assert "training.lr: 0.003 -> 0.001" in err and "starting fresh" in err
    assert summary["resumed_from_step"] == 0 and summary["steps"] == 1
    stale = [p for p in tmp_path.iterdir() if p.name.startswith("checkpoints-stale-")]
    assert len(stale) == 1 and [p.name for p in list_checkpoints(stale[0])] == ["step-00000002"]


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
