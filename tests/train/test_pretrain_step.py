"""One optimizer step: accumulation == one big batch (checked against a plain PyTorch step), the NaN guard
(run.max_bad_steps), MFU over real tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.train.test_pretrain_fixtures import build_inputs, cpu_impl, tiny_model, tiny_run, tiny_training
from tests.train.loss_oracle import pretraining_loss
from twilbert.model.twilbert import TWilBERT
from twilbert.train.checkpoint import MODEL_FILE
from twilbert.train.optim import build_optimizer, clip_grad_norm, param_groups
from twilbert.config import ConfigError
from twilbert.train.loop import TrainingDivergedError
from twilbert.train.pretrain import Pretrainer
from twilbert.train.run_store import list_checkpoints, list_runs
from twilbert.train.schedules import build_schedule


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("step"))


def make_trainer(inputs, out_dir, model_cfg=None, run=None, **training) -> Pretrainer:
    return Pretrainer(
        model_cfg=model_cfg or tiny_model(inputs["vocab_size"]),
        training=tiny_training(**training),
        impl=cpu_impl(),
        run=tiny_run(**(run or {})),
        shards_dir=inputs["shards"],
        tokenizer_path=inputs["tokenizer"],
        out_dir=out_dir,
        progress=False,
    ).setup()


def rows(batch: dict, sl: slice) -> dict:
    """Rows ``sl`` of a masked batch, same T (so every row sees exactly the same input)."""
    out = {k: (v[sl] if torch.is_tensor(v) else v) for k, v in batch.items()}
    out["n_real"] = int(out["attention_mask"].sum())
    out["n_padded"] = out["input_ids"].numel()
    out["n_targets"] = int((out["mlm_labels"] != -100).sum())
    out["n_rop"] = int((out["rop_labels"] != -100).sum())
    return out


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_accumulation_equals_one_big_batch_and_a_plain_pytorch_step(inputs, tmp_path):
    big_trainer = make_trainer(inputs, tmp_path / "big")
    idx = np.arange(12)  # rows of mixed lengths and labels (pairs and MLM-only tweets)
    big = big_trainer.batches[(0, 0, idx)]
    split = [rows(big, slice(0, 3)), rows(big, slice(3, 12))]  # uneven halves
    assert split[0]["n_targets"] * 3 != split[1]["n_targets"]  # per-micro-batch means would be wrong here

    # reference: a plain PyTorch step on the whole batch with the mean losses of the objective
    tr = tiny_training()
    cfg = tiny_model(inputs["vocab_size"])
    torch.manual_seed(tr.seed)
    ref = TWilBERT(cfg)
    opt = build_optimizer(tr.optimizer, param_groups(ref, tr.weight_decay), lr=tr.lr, betas=tr.betas, eps=tr.eps)
    sched = build_schedule(tr.schedule, opt, warmup_steps=tr.warmup_steps, total_steps=big_trainer.total_steps)
    out = ref(big["input_ids"], big["token_type_ids"], big["attention_mask"], big["mlm_labels"])
    parts = pretraining_loss(out, None, big["rop_labels"], cfg)
    parts.total.backward()
    clip_grad_norm(ref.parameters(), tr.clip_grad_norm)
    opt.step()
    sched.step()

    assert big_trainer.train_step([big])
    acc_trainer = make_trainer(inputs, tmp_path / "acc")
    assert acc_trainer.train_step(split)
    want = params(ref)
    for name, got in params(big_trainer.raw_model).items():
        torch.testing.assert_close(got, want[name], rtol=1e-5, atol=1e-6, msg=name)
    for name, got in params(acc_trainer.raw_model).items():
        torch.testing.assert_close(got, want[name], rtol=1e-5, atol=1e-6, msg=name)

    # the logged losses are the objective's mean losses of the step
    logged = acc_trainer._flush_log()
    assert logged["mlm_loss"] == pytest.approx(parts.mlm.detach().item(), rel=1e-5)
    assert logged["rop_loss"] == pytest.approx(parts.rop.detach().item(), rel=1e-5)
    assert logged["loss"] == pytest.approx(parts.total.detach().item(), rel=1e-5)
    assert acc_trainer.state.sequences == 12 and acc_trainer.state.tokens_real == big["n_real"]


def test_non_finite_steps_are_skipped_then_training_stops(inputs, tmp_path):
    trainer = make_trainer(inputs, tmp_path / "nan", run={"checkpoint_every": 1})
    poison = {"on": False}

    def hook(module, args, output):  # an inf activation -> NaN loss and gradients
        return output * float("inf") if poison["on"] else output

    trainer.raw_model.embeddings.register_forward_hook(hook)
    batch = trainer.batches[(0, 0, np.arange(8))]
    before = params(trainer.raw_model)
    poison["on"] = True
    assert trainer.train_step([batch]) is False
    assert trainer.state.skipped_steps == 1 and trainer.state.step == 1
    for name, value in params(trainer.raw_model).items():
        assert torch.equal(value, before[name]), name  # the optimizer did not touch the weights
    assert not trainer.optimizer.state  # nor its own state
    assert all(p.grad is None for p in trainer.raw_model.parameters())

    poison["on"] = False
    assert trainer.train_step([batch]) is True
    assert trainer.state.consecutive_bad == 0
    assert any(not torch.equal(v, before[k]) for k, v in params(trainer.raw_model).items())

    # always poisoned: stops after run.max_bad_steps consecutive skipped steps, never saving NaN weights
    from safetensors.torch import load_file

    for max_bad in (3, 7):
        stuck = make_trainer(inputs, tmp_path / f"stuck{max_bad}", run={"checkpoint_every": 1, "max_bad_steps": max_bad})
        stuck.raw_model.embeddings.register_forward_hook(lambda m, a, out: out * float("inf"))
        with pytest.raises(TrainingDivergedError, match=f"{max_bad} consecutive.*run.max_bad_steps={max_bad}"):
            stuck.run()
        assert stuck.state.skipped_steps == max_bad
        saved = [c for r in list_runs(tmp_path / f"stuck{max_bad}" / "checkpoints") for c in list_checkpoints(r)]
        assert len(saved) == 2  # checkpoint_every=1, the last two kept: checkpoints were written...
        for ckpt in saved:  # ...and none holds NaN weights
            assert all(torch.isfinite(t).all() for t in load_file(ckpt / MODEL_FILE).values())
        assert not (tmp_path / f"stuck{max_bad}" / "final").exists()
    with pytest.raises(ConfigError, match="max_bad_steps"):
        tiny_run(max_bad_steps=0)


def test_mfu_counts_real_tokens_at_their_own_lengths(inputs, tmp_path):
    """`mfu` (logged on CUDA) is nanoGPT's formula over the real tokens: recomputed here from the
    batch's attention mask, and it is smaller than the same formula over padded positions."""
    trainer = make_trainer(inputs, tmp_path / "mfu")
    trainer.report_mfu = True  # as on a GPU; the numbers only need the counts
    idx = np.argsort(trainer.batches.dataset.lengths)[::7][:8]  # rows of very different lengths: much padding
    batch = trainer.batches[(0, 0, idx)]
    assert trainer.train_step([batch])
    logged = trainer._flush_log()
    dt = batch["n_real"] / logged["tokens_per_s"]  # the interval's wall time, as the trainer measured it

    lengths = batch["attention_mask"].sum(1).double()  # (B,) real tokens per row
    n_real, B, T = float(lengths.sum()), *batch["input_ids"].shape
    model, peak = trainer.raw_model, trainer.peak_flops
    assert n_real < B * T  # there is padding
    per_token = model.estimate_flops_per_token(float((lengths**2).sum()) / n_real, mlm_fraction=batch["n_targets"] / n_real)
    assert logged["mfu"] == pytest.approx(per_token * n_real / dt / peak, rel=1e-9)
    per_position = model.estimate_flops_per_token(T, mlm_fraction=batch["n_targets"] / (B * T))
    assert logged["mfu_padded"] == pytest.approx(per_position * B * T / dt / peak, rel=1e-9)
    assert logged["mfu"] < logged["mfu_padded"]
    # the attention term really is per token at its own length: not the same as the mean length
    assert per_token != pytest.approx(model.estimate_flops_per_token(n_real / B, mlm_fraction=batch["n_targets"] / n_real), rel=1e-6)


def test_static_targets_train_exactly_like_dynamic_targets(inputs, tmp_path, monkeypatch):
    """masked_lm.static_targets gives the MLM head a fixed row count per batch shape (filler rows
    labelled -100): the same masks, so the same losses, metrics and weights as the dynamic head."""
    from dataclasses import replace

    from twilbert.model.twilbert import TWilBERT

    seen: list = []
    forward = TWilBERT.forward

    def recording(self, *args, mlm_slots=None, **kw):
        out = forward(self, *args, mlm_slots=mlm_slots, **kw)
        if self.training:
            seen.append((mlm_slots, out.mlm_targets.shape[0], int((out.mlm_targets != -100).sum())))
        return out

    monkeypatch.setattr(TWilBERT, "forward", recording)
    base = tiny_model(inputs["vocab_size"])
    static = replace(base, masked_lm=replace(base.masked_lm, static_targets=True))
    summaries, weights, calls = [], [], []
    for name, cfg in (("dynamic", base), ("static", static)):
        seen.clear()
        trainer = make_trainer(inputs, tmp_path / name, model_cfg=cfg, max_steps=6)
        summaries.append(trainer.run())
        weights.append(params(trainer.raw_model))
        calls.append(list(seen))
    dynamic, static_calls = calls
    assert all(slots is None and rows == real for slots, rows, real in dynamic)
    assert all(slots is not None and rows == slots and real < rows for slots, rows, real in static_calls)
    assert [real for *_, real in dynamic] == [real for *_, real in static_calls]  # the same targets
    for k in ("loss", "mlm_loss", "mlm_accuracy"):
        assert summaries[0][k] == pytest.approx(summaries[1][k], rel=1e-5, abs=1e-6), k
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-4, atol=1e-5)


def test_without_a_terminal_status_lines_replace_the_bar(inputs, tmp_path, monkeypatch, capsys):
    """No TTY (nohup, CI): no progress bar, but a status line per interval, so a log shows progress."""
    import twilbert.progress as P

    monkeypatch.setattr(P, "STATUS_EVERY_S", 0.0)
    trainer = make_trainer(inputs, tmp_path / "plain", max_steps=4, run={"log_every": 2})
    trainer.progress = True
    trainer.run()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pretrain: step ")]
    assert [line.split()[2] for line in lines] == ["2/4", "4/4"]
    assert all("loss" in line and "real tokens/s" in line for line in lines)
