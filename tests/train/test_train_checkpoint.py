"""Checkpoint round trips, corruption detection and config-mismatch messages."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from twilbert.train.checkpoint import (
    CHECKSUMS_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    TRAINER_FILE,
    CheckpointError,
    ConfigMismatchError,
    load_checkpoint,
    load_trainer_state,
    read_config,
    save_checkpoint,
)
from twilbert.train.optim import build_optimizer, param_groups
from twilbert.train.schedules import build_schedule

CONFIG = {"model": {"hidden_size": 8, "n_encoders": 2, "pkm_params": {"in_layers": [0, 1]}}, "vocab": 20}


class TinyLM(nn.Module):
    """Stand-in for the model: tied embedding/decoder, a LayerNorm and a BatchNorm (with buffers)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.bn = nn.BatchNorm1d(8)
        self.decoder = nn.Linear(8, 20)
        self.decoder.weight = self.emb.weight

    def forward(self, ids):
        h = self.bn(self.norm(self.emb(ids)).transpose(1, 2)).transpose(1, 2)
        return self.decoder(h)


def make_trainer(seed: int = 0):
    torch.manual_seed(seed)
    model = TinyLM()
    opt = build_optimizer("adamw", param_groups(model, 0.01), lr=1e-2)
    sched = build_schedule("linear", opt, warmup_steps=2, total_steps=20)
    return model, opt, sched


def train_step(model, opt, sched, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (4, 6), generator=g)
    loss = nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def next_randoms():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    model, opt, sched = make_trainer()
    for step in range(3):
        train_step(model, opt, sched, seed=step)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    save_checkpoint(tmp_path / "ck", model, CONFIG, optimizer=opt, scheduler=sched, extra={"step": 3, "epoch": 0, "cursor": torch.tensor([5, 7])})
    expected_randoms = next_randoms()
    train_step(model, opt, sched, seed=3)
    expected_params = {k: v.clone() for k, v in model.state_dict().items()}
    expected_lr = opt.param_groups[0]["lr"]

    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # scramble the RNGs
    model2, opt2, sched2 = make_trainer(seed=1)
    stored = load_checkpoint(tmp_path / "ck", model2, expected_config=CONFIG)
    assert stored == CONFIG
    assert model2.decoder.weight is model2.emb.weight  # still tied after loading
    extra = load_trainer_state(tmp_path / "ck", opt2, sched2)
    assert extra["step"] == 3 and extra["epoch"] == 0 and torch.equal(extra["cursor"], torch.tensor([5, 7]))
    assert next_randoms() == expected_randoms
    train_step(model2, opt2, sched2, seed=3)
    assert opt2.param_groups[0]["lr"] == expected_lr
    for k, v in model2.state_dict().items():
        assert torch.equal(v, expected_params[k]), k


def test_weights_equal_after_load_and_files_are_plain(tmp_path):
    model, _, _ = make_trainer()
    save_checkpoint(tmp_path, model, CONFIG, rng=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MODEL_FILE, CONFIG_FILE, CHECKSUMS_FILE])  # no temp files left
    model2, _, _ = make_trainer(seed=5)
    load_checkpoint(tmp_path, model2)
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == CONFIG == read_config(tmp_path)
    from safetensors.torch import load_file  # readable by any safetensors reader, tied weight stored once

    tensors = load_file(tmp_path / MODEL_FILE)
    assert len({"emb.weight", "decoder.weight"} & tensors.keys()) == 1


@pytest.mark.parametrize("target", [MODEL_FILE, CONFIG_FILE, TRAINER_FILE])
def test_corrupted_file_raises(tmp_path, target):
    model, opt, sched = make_trainer()
    save_checkpoint(tmp_path, model, CONFIG, optimizer=opt, scheduler=sched)
    path = tmp_path / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        if target == TRAINER_FILE:
            load_trainer_state(tmp_path, opt, sched)
        else:
            load_checkpoint(tmp_path, make_trainer()[0])


def test_missing_checksums_means_incomplete(tmp_path):
    model, _, _ = make_trainer()
    save_checkpoint(tmp_path, model, CONFIG)
    (tmp_path / CHECKSUMS_FILE).unlink()
    with pytest.raises(CheckpointError, match="interrupted"):
        load_checkpoint(tmp_path, model)


def test_config_mismatch_lists_every_differing_key(tmp_path):
    model, _, _ = make_trainer()
    save_checkpoint(tmp_path, model, CONFIG)
    expected = {"model": {"hidden_size": 16, "n_encoders": 2, "pkm_params": {"in_layers": (0, 1)}, "pkm": True}, "vocab": 20}
    with pytest.raises(ConfigMismatchError) as info:
        load_checkpoint(tmp_path, model, expected_config=expected)
    message = str(info.value)
    assert "model.hidden_size: stored 8, expected 16" in message
    assert "model.pkm: stored '<missing>', expected True" in message
    assert "in_layers" not in message  # tuple vs list is not a difference
    assert {k for k, _, _ in info.value.differences} == {"model.hidden_size", "model.pkm"}


def test_shape_mismatch_and_missing_trainer_parts(tmp_path):
    model, opt, _ = make_trainer()
    save_checkpoint(tmp_path, model, CONFIG, rng=False)  # weights only: no trainer_state.pt
    assert not (tmp_path / TRAINER_FILE).exists()
    with pytest.raises(CheckpointError, match="not listed"):
        load_trainer_state(tmp_path, opt)

    other = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path, other)

    save_checkpoint(tmp_path, model, CONFIG, rng=True)  # rng only: asking for the optimizer fails
    with pytest.raises(CheckpointError, match="no optimizer"):
        load_trainer_state(tmp_path, opt)


def test_trainer_state_loads_with_weights_only(tmp_path):
    model, opt, sched = make_trainer()
    train_step(model, opt, sched, seed=0)
    save_checkpoint(tmp_path, model, CONFIG, optimizer=opt, scheduler=sched)
    state = torch.load(tmp_path / TRAINER_FILE, weights_only=True)  # raises on any pickled object
    assert set(state) == {"optimizer", "scheduler", "rng", "extra"}


def test_scheduler_built_after_loading_the_optimizer_still_resumes_the_lr(tmp_path):
    model, opt, sched = make_trainer()
    for step in range(5):
        train_step(model, opt, sched, seed=step)
    save_checkpoint(tmp_path, model, CONFIG, optimizer=opt, scheduler=sched)
    model2 = TinyLM()
    load_checkpoint(tmp_path, model2)
    opt2 = build_optimizer("adamw", param_groups(model2, 0.01), lr=1e-2)
    load_trainer_state(tmp_path, opt2, restore_rng=False)
    sched2 = build_schedule("linear", opt2, warmup_steps=2, total_steps=20)  # resets the lr to lambda(0)
    load_trainer_state(tmp_path, None, sched2, restore_rng=False)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_files_are_not_private(tmp_path):
    model, _, _ = make_trainer()
    save_checkpoint(tmp_path, model, CONFIG)
    for name in (MODEL_FILE, CONFIG_FILE, TRAINER_FILE, CHECKSUMS_FILE):
        assert (tmp_path / name).stat().st_mode & 0o044, f"{name} is readable only by its owner"


# --------------------------------------------------------------------------------------------------
# the real model: tied decoder, shared layers, product-key memory, dropout (RNG), BatchNorm buffers


def real_config():
    from twilbert.model import ModelConfig, PKMConfig, ROPConfig

    return ModelConfig(
        vocab_size=60,
        max_positions=24,
        factorize_embeddings=True,
        embedding_size=16,
        hidden_size=32,
        n_encoders=3,
        n_heads=4,
        cross_sharing=True,  # layers 0 and 2 share one block
        tie_mlm_decoder=True,
        mlm_transform=True,
        input_dropout=0.1,  # dropout: the next step depends on the restored torch RNG
        output_dropout=0.1,
        pkm=True,
        pkm_params=PKMConfig(k_dim=8, memory_size=6, n_heads=2, knn=3, in_layers=(1,), batch_norm=True),
        rop=ROPConfig(n_hidden=1, hidden_size=16),
    )


def make_real_trainer(seed: int):
    from twilbert.model import TWilBERT

    torch.manual_seed(seed)
    model = TWilBERT(real_config())
    opt = build_optimizer("lamb", param_groups(model, 0.01), lr=1e-2)
    sched = build_schedule("noam", opt, warmup_steps=3, hidden_size=32, scale=10.0)
    return model, opt, sched


def real_step(model, opt, sched, seed: int) -> torch.Tensor:
    """One pre-training step on a fixed random batch (padding included, so the masked BatchNorm and
    the attention mask are exercised); returns the loss."""
    from twilbert.data.masking import mask_tokens, maskable_positions
    from twilbert.model import CLS_ID, PAD_ID, SEP_ID
    from tests.train.loss_oracle import pretraining_loss

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (6, 12), generator=g)
    ids[:, 0], ids[:, 5], ids[:, 11] = CLS_ID, SEP_ID, SEP_ID
    ids[3, 8:] = PAD_ID
    mask = ids != PAD_ID
    types = (torch.arange(12) > 5).long().expand(6, 12)
    masked, labels = mask_tokens(ids, maskable_positions(ids, mask), model.config.masked_lm, 60, generator=g)
    rop = torch.randint(0, 2, (6,), generator=g)
    model.train()
    out = model(masked, types, mask, labels)
    loss = pretraining_loss(out, None, rop, model.config).total
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.detach()


def test_round_trip_of_a_real_twilbert_is_exact(tmp_path):
    from twilbert.config import to_dict

    model, opt, sched = make_real_trainer(seed=0)
    assert model.encoder.layer_plan == (0, 1, 0) and model.mlm_head.decoder is None  # shared, tied
    for step in range(4):
        real_step(model, opt, sched, seed=step)
    config = to_dict(model.config)
    torch.manual_seed(77)  # the dropout stream the next step will use
    save_checkpoint(tmp_path / "ck", model, config, optimizer=opt, scheduler=sched, extra={"step": 4})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    expected_loss = real_step(model, opt, sched, seed=4)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    expected_opt = opt.state_dict()

    torch.manual_seed(999)  # scramble the RNG, and build from different initial weights
    model2, opt2, sched2 = make_real_trainer(seed=1)
    assert not torch.equal(model2.embeddings.token.weight, saved["embeddings.token.weight"])
    load_checkpoint(tmp_path / "ck", model2, expected_config=config)
    for k, v in model2.state_dict().items():  # weights and buffers (PKM BatchNorm running stats)
        assert torch.equal(v, saved[k]), k
        assert v.dtype == saved[k].dtype, k
    assert load_trainer_state(tmp_path / "ck", opt2, sched2) == {"step": 4}
    # the next step after reloading equals the next step without the round trip, bit for bit
    loss2 = real_step(model2, opt2, sched2, seed=4)
    assert torch.equal(loss2, expected_loss)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for pid, state in expected_opt["state"].items():
        for name, value in state.items():
            got = opt2.state_dict()["state"][pid][name]
            assert torch.equal(torch.as_tensor(got), torch.as_tensor(value)), (pid, name)
    from safetensors.torch import load_file  # the shared block and the tied table are stored once

    names = load_file(tmp_path / "ck" / MODEL_FILE).keys()
    assert not any("decoder" in n for n in names) and not any(n.startswith("encoder.blocks.2") for n in names)
