"""One optimizer step: accumulation == one big batch (checked against a plain PyTorch step), the NaN guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.train.test_pretrain_fixtures import build_inputs, cpu_impl, tiny_model, tiny_training
from twilbert.model.twilbert import TWilBERT
from twilbert.train.checkpoint import MODEL_FILE
from twilbert.train.objectives import pretraining_loss
from twilbert.train.optim import build_optimizer, clip_grad_norm, param_groups
from twilbert.train.pretrain import NonFiniteLossError, Pretrainer, list_checkpoints
from twilbert.train.schedules import build_schedule


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("step"))


def make_trainer(inputs, out_dir, model_cfg=None, **training) -> Pretrainer:
    return Pretrainer(
        model_cfg=model_cfg or tiny_model(inputs["vocab_size"]),
        training=tiny_training(**training),
        impl=cpu_impl(),
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
    trainer = make_trainer(inputs, tmp_path / "nan", checkpoint_every=1)
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

    # always poisoned: stops after max_bad_steps consecutive skipped steps, never saving NaN weights
    stuck = Pretrainer(
        model_cfg=tiny_model(inputs["vocab_size"]),
        training=tiny_training(checkpoint_every=1),
        impl=cpu_impl(),
        shards_dir=inputs["shards"],
        tokenizer_path=inputs["tokenizer"],
        out_dir=tmp_path / "stuck",
        progress=False,
        max_bad_steps=3,
    ).setup()
    stuck.raw_model.embeddings.register_forward_hook(lambda m, a, out: out * float("inf"))
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        stuck.run()
    assert stuck.state.skipped_steps == 3
    from safetensors.torch import load_file

    for ckpt in list_checkpoints(tmp_path / "stuck" / "checkpoints"):
        assert all(torch.isfinite(t).all() for t in load_file(ckpt / MODEL_FILE).values())
    assert not (tmp_path / "stuck" / "final").exists()
