"""Equivalences the model must honour: shared == unshared with equal weights, SDPA == eager,
padding never changes real-token outputs (nor PKM batch-norm statistics)."""

from __future__ import annotations

import copy

import pytest
import torch

from twilbert.model import PAD_ID, MaskedBatchNorm1d, ModelConfig, PKMConfig, TWilBERT

V = 40


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=V, max_positions=24, embedding_size=32, hidden_size=32, n_encoders=3, n_heads=4)
    base.update(kw)
    return ModelConfig(**base)


PKM = PKMConfig(k_dim=8, memory_size=8, n_heads=2, knn=3, in_layers=(1,), batch_norm=True)


def padded_batch(B=4, T=10, extra=0, seed=0):
    """Rows of different real lengths, right-padded; ``extra`` more pad columns appended."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    lengths = torch.tensor([T, T - 3, 5, 2])[:B]
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
    ids = ids.masked_fill(~mask, PAD_ID)
    types = (torch.arange(T)[None, :] >= (lengths[:, None] // 2)).long() * mask
    if extra:
        ids = torch.cat([ids, torch.full((B, extra), PAD_ID)], 1)
        types = torch.cat([types, torch.zeros(B, extra, dtype=torch.long)], 1)
        mask = torch.cat([mask, torch.zeros(B, extra, dtype=torch.bool)], 1)
    return ids, types, mask


def test_shared_equals_unshared_with_identical_weights():
    cfg_shared = tiny(cross_sharing=True, pkm=True, pkm_params=PKM, n_encoders=4)
    shared = TWilBERT(cfg_shared).eval()
    unshared = TWilBERT(tiny(pkm=True, pkm_params=PKM, n_encoders=4)).eval()
    plan = shared.encoder.layer_plan
    assert plan == (0, 1, 0, 0)
    sd = shared.state_dict()
    new = {}
    for k in unshared.state_dict():
        if k.startswith("encoder.blocks."):
            i, rest = k[len("encoder.blocks.") :].split(".", 1)
            new[k] = sd[f"encoder.blocks.{plan[int(i)]}.{rest}"]
        else:
            new[k] = sd[k]
    unshared.load_state_dict(new)
    ids, types, mask = padded_batch()
    a, b = shared(ids, types, mask), unshared(ids, types, mask)
    torch.testing.assert_close(a.hidden, b.hidden, rtol=0, atol=0)
    torch.testing.assert_close(a.rop_logits, b.rop_logits, rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_sdpa_equals_eager_with_padding(norm):
    cfg = tiny(norm=norm, attention_size=6, pkm=True, pkm_params=PKM)
    sdpa = TWilBERT(cfg, attention="sdpa").eval()
    eager = TWilBERT(cfg, attention="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    ids, types, mask = padded_batch()
    a, b = sdpa.encode(ids, types, mask), eager.encode(ids, types, mask)
    torch.testing.assert_close(a[mask], b[mask], rtol=0, atol=1e-5)
    # gradients agree too
    sdpa.train(), eager.train()
    for m in (sdpa, eager):
        m.encode(ids, types, mask)[mask].square().mean().backward()
    for (n, p), q in zip(sdpa.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=n)


CONFIGS = {
    "post": tiny(),
    "pre_factorised_shared": tiny(norm="pre", factorize_embeddings=True, embedding_size=16, cross_sharing=True),
    "pkm_bn": tiny(pkm=True, pkm_params=PKM),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_padding_does_not_change_real_tokens(name, mode):
    """Appending pad columns changes nothing for real tokens. In train mode (dropout 0) this also shows
    that PKM batch-norm statistics ignore padding, since its normalisation uses batch statistics."""
    model = TWilBERT(CONFIGS[name])
    model.train(mode == "train")
    ids, types, mask = padded_batch()
    ids2, types2, mask2 = padded_batch(extra=5)
    labels = torch.full_like(ids, -100)
    labels[mask] = ids[mask]  # every real token a target
    labels2 = torch.cat([labels, torch.full((4, 5), -100)], 1)
    a = model(ids, types, mask, labels)
    b = model(ids2, types2, mask2, labels2)
    torch.testing.assert_close(a.hidden[mask], b.hidden[:, :10][mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(a.mlm_logits, b.mlm_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.rop_logits, b.rop_logits, rtol=0, atol=1e-5)
    # and the pad token ids themselves do not matter
    c = model(ids2.masked_fill(~mask2, 17), types2, mask2, labels2)
    torch.testing.assert_close(b.hidden[mask2], c.hidden[mask2], rtol=0, atol=1e-5)


def test_pkm_batchnorm_running_stats_ignore_padding():
    model = TWilBERT(tiny(pkm=True, pkm_params=PKM)).train()
    twin = copy.deepcopy(model)
    model(*padded_batch())
    twin(*padded_batch(extra=7))
    bn, bn2 = model.encoder.blocks[1].ffn.query_norm, twin.encoder.blocks[1].ffn.query_norm
    assert bn.num_batches_tracked.item() == 1
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    torch.testing.assert_close(bn.running_mean, bn2.running_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(bn.running_var, bn2.running_var, rtol=0, atol=1e-6)


def test_masked_batchnorm_equals_batchnorm_on_real_rows():
    """Independent reference: nn.BatchNorm1d applied to x[mask] only."""
    torch.manual_seed(0)
    x = torch.randn(30, 6) * 3 + 1
    mask = torch.rand(30) < 0.6
    x[~mask] = 1e4  # garbage in padded rows must not leak
    x[~mask, 0] = float("nan")
    ours, ref = MaskedBatchNorm1d(6), torch.nn.BatchNorm1d(6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2), ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    for _ in range(3):
        torch.testing.assert_close(ours(x, mask)[mask], ref(x[mask]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked == ref.num_batches_tracked == 3
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x, mask), ref(x), equal_nan=True)  # eval: running statistics, row-wise


def test_all_padding_row_is_finite_and_backend_independent():
    """A row with no real token (e.g. an empty sample) must not poison the batch with NaN."""
    cfg = tiny(pkm=True, pkm_params=PKM)
    sdpa = TWilBERT(cfg, attention="sdpa").eval()
    eager = TWilBERT(cfg, attention="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    ids, types, mask = padded_batch()
    mask[3] = False
    a, b = sdpa.encode(ids, types, mask), eager.encode(ids, types, mask)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [
        {},  # post-LN
        {"norm": "pre"},
        {"cross_sharing": True},
        {"pkm": True, "pkm_params": PKMConfig(k_dim=8, memory_size=8, n_heads=2, knn=3, in_layers=(2,), batch_norm=True)},
    ],
    ids=["post", "pre", "shared", "pkm-last"],
)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_first_only_equals_the_first_row_of_the_full_encoder(kw, attention):
    """``first_only`` (what a [CLS] classifier runs) is the full encoder's first row, with and without
    padding, in eval mode; a PKM last layer in training mode runs in full (its batch-norm statistics
    span every real token), so there too the rows are equal and the running statistics move alike."""
    torch.manual_seed(0)
    model = TWilBERT(tiny(**kw), attention=attention).eval()
    ids, types, mask = padded_batch()
    for m in (mask, None):
        full = model.encode(ids, types, m)  # (B, T, H)
        first = model.encode(ids, types, m, first_only=True)  # (B, 1, H)
        assert first.shape == (ids.shape[0], 1, full.shape[-1])
        torch.testing.assert_close(first, full[:, :1], rtol=1e-5, atol=1e-6)
    if kw.get("pkm"):
        a, b = copy.deepcopy(model).train(), copy.deepcopy(model).train()
        torch.manual_seed(1)
        full = a.encode(ids, types, mask)
        torch.manual_seed(1)
        first = b.encode(ids, types, mask, first_only=True)
        torch.testing.assert_close(first, full[:, :1], rtol=1e-5, atol=1e-6)
        bn_a, bn_b = (next(mod for mod in x.modules() if isinstance(mod, MaskedBatchNorm1d)) for x in (a, b))
        torch.testing.assert_close(bn_b.running_mean, bn_a.running_mean, rtol=0, atol=0)


def test_first_only_gradients_equal_the_full_encoder_at_cls():
    """Training a [CLS] head through ``first_only`` gives the same gradients as the full last layer
    (the positions it skips never reach the loss). Dropout off so both see the same function."""
    torch.manual_seed(0)
    cfg = tiny(input_dropout=0.0, output_dropout=0.0)
    a = TWilBERT(cfg).train()
    b = copy.deepcopy(a)
    ids, types, mask = padded_batch()
    a.encode(ids, types, mask)[:, 0].square().sum().backward()
    b.encode(ids, types, mask, first_only=True)[:, 0].square().sum().backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is None:
            assert pb.grad is None or not pb.grad.any(), name
            continue
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6, msg=name)
