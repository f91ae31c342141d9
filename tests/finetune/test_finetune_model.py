"""Sequence classifier: pooling against manual computations with padding, freezing, dropout in eval,
encoder loading from a checkpoint in either config layout."""

from __future__ import annotations

import pytest
import torch

from twilbert.config import to_dict
from twilbert.finetune.model import SequenceClassifier, load_encoder, pool
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.tokens import CLS_ID, PAD_ID, SEP_ID
from twilbert.train.checkpoint import CheckpointError, save_checkpoint


def tiny_config(**kw) -> ModelConfig:
    base = dict(hidden_size=16, embedding_size=16, n_encoders=2, n_heads=2)
    return ModelConfig(**{**base, **kw}).resolved(vocab_size=50, max_len=12)


# two rows: [CLS] 7 8 9 [SEP] and [CLS] 5 [SEP] PAD PAD
IDS = torch.tensor([[CLS_ID, 7, 8, 9, SEP_ID], [CLS_ID, 5, SEP_ID, PAD_ID, PAD_ID]])
MASK = IDS != PAD_ID


def test_pool_modes_by_hand():
    h = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pool(h, IDS, MASK, "cls"), h[:, 0])
    avg = pool(h, IDS, MASK, "avg")
    torch.testing.assert_close(avg[0], h[0].mean(0))
    torch.testing.assert_close(avg[1], h[1, :3].mean(0))  # real tokens only (CLS 5 SEP)
    mx = pool(h, IDS, MASK, "max")
    torch.testing.assert_close(mx[1], h[1, :3].max(0).values)
    # use_special_tokens=False: only the text tokens
    avg_ns = pool(h, IDS, MASK, "avg", use_special_tokens=False)
    torch.testing.assert_close(avg_ns[0], h[0, 1:4].mean(0))
    torch.testing.assert_close(avg_ns[1], h[1, 1])
    mx_ns = pool(h, IDS, MASK, "max", use_special_tokens=False)
    torch.testing.assert_close(mx_ns[0], h[0, 1:4].max(0).values)
    cat = pool(h, IDS, MASK, "concat", use_special_tokens=False)
    torch.testing.assert_close(cat, torch.cat([h[:, 0], avg_ns, mx_ns], -1))
    # padding values never matter
    h2 = h.clone()
    h2[1, 3:] = 1e6
    for mode in ("avg", "max", "concat"):
        torch.testing.assert_close(pool(h2, IDS, MASK, mode), pool(h, IDS, MASK, mode))
    # a row with nothing to pool (an empty text without specials) gives zeros, not NaN/-inf
    empty = torch.tensor([[CLS_ID, SEP_ID, PAD_ID]])
    out = pool(torch.randn(1, 3, 4), empty, empty != PAD_ID, "concat", use_special_tokens=False)
    assert torch.isfinite(out).all() and torch.equal(out[0, 4:], torch.zeros(8))


def test_classifier_padding_invariant_and_concat_width():
    torch.manual_seed(0)
    clf = SequenceClassifier(TWilBERT(tiny_config()), 3, collapse_mode="concat", dropout=0.0).eval()
    assert clf.head.in_features == 3 * 16
    short = torch.tensor([[CLS_ID, 5, SEP_ID]])
    with torch.no_grad():
        alone = clf(short, None, None)
        padded = clf(IDS, None, MASK)
    torch.testing.assert_close(padded[1], alone[0], atol=1e-5, rtol=1e-5)


def test_head_init_truncated_normal_zero_mean():
    torch.manual_seed(0)
    clf = SequenceClassifier(TWilBERT(tiny_config(hidden_size=64, embedding_size=64)), 200, dropout=0.0)
    w = clf.head.weight.detach()
    assert w.abs().max() <= 2 * 0.02 + 1e-7  # cut at 2 std
    assert abs(float(w.mean())) < 0.002  # mean 0 (the original's head had mean 0.02)
    assert torch.equal(clf.head.bias, torch.zeros(200))


def _step(clf: SequenceClassifier) -> None:
    opt = torch.optim.SGD([p for p in clf.parameters() if p.requires_grad], lr=0.5)
    clf.train()
    out = clf(IDS, None, MASK)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    opt.step()


def test_frozen_encoder_does_not_change_and_head_does():
    torch.manual_seed(0)
    cfg = tiny_config(output_dropout=0.3, input_dropout=0.3)
    clf = SequenceClassifier(TWilBERT(cfg), 2, dropout=0.0, freeze_encoder=True)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    _step(clf)
    after = clf.state_dict()
    enc_keys = [k for k in before if k.startswith("encoder.")]
    assert enc_keys and all(torch.equal(before[k], after[k]) for k in enc_keys)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert all(not p.requires_grad for p in clf.encoder.parameters())
    # the frozen encoder stays in eval mode (no dropout) even when the classifier trains
    clf.train()
    assert clf.training and not clf.encoder.training
    assert not any(m.training for m in clf.encoder.modules())
    # and an unfrozen encoder does change
    clf2 = SequenceClassifier(TWilBERT(cfg), 2, dropout=0.0)
    enc_before = clf2.encoder.embeddings.token.weight.clone()
    _step(clf2)
    assert not torch.equal(enc_before, clf2.encoder.embeddings.token.weight)


def test_eval_turns_every_dropout_off():
    torch.manual_seed(0)
    cfg = tiny_config(output_dropout=0.5, input_dropout=0.5, attention_dropout=0.5)
    clf = SequenceClassifier(TWilBERT(cfg), 3, dropout=0.5)
    clf.train()
    with torch.no_grad():
        a, b = clf(IDS, None, MASK), clf(IDS, None, MASK)
    assert not torch.allclose(a, b)  # training: dropout on
    clf.eval()
    with torch.no_grad():
        a, b = clf(IDS, None, MASK), clf(IDS, None, MASK)
    assert torch.equal(a, b)


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_load_encoder_from_checkpoint_either_layout(tmp_path, layout):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = TWilBERT(cfg)
    config_dict = {"model": to_dict(cfg), "training": {"lr": 1.0}} if layout == "nested" else to_dict(cfg)
    save_checkpoint(tmp_path / "ckpt", model, config_dict, rng=False)
    loaded = load_encoder(tmp_path / "ckpt")
    assert loaded.config == cfg
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_load_encoder_accepts_the_pretrain_output_dir(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    save_checkpoint(tmp_path / "pretrain" / "final", TWilBERT(cfg), to_dict(cfg), rng=False)
    assert load_encoder(tmp_path / "pretrain").config == cfg  # resolves pretrain/final
    with pytest.raises(CheckpointError, match="not a pre-trained model directory"):
        load_encoder(tmp_path)
