"""A tiny model memorises one batch: the whole forward/backward path learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from twilbert.model import MASK_ID, ModelConfig, PKMConfig, TWilBERT


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"norm": "pre", "cross_sharing": True, "pkm": True,
         "pkm_params": PKMConfig(k_dim=16, memory_size=8, n_heads=2, knn=4, in_layers=(1,))},
    ],
    ids=["plain", "preln_shared_pkm"],
)
def test_overfits_one_batch(extra):
    torch.manual_seed(0)
    V, B, T = 30, 8, 12
    cfg = ModelConfig(vocab_size=V, max_positions=T, embedding_size=32, hidden_size=32, n_encoders=2, n_heads=4, **extra)
    model = TWilBERT(cfg)
    ids = torch.randint(5, V, (B, T))
    ids[:, 0] = 2  # [CLS]
    target = torch.rand(B, T) < 0.3
    target[:, 0] = False
    target[:, 1] = True  # at least one target per row
    labels = torch.where(target, ids, torch.full_like(ids, -100))
    inputs = ids.masked_fill(target, MASK_ID)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:3, -2:] = False  # some padding
    labels[~mask] = -100
    rop = torch.randint(0, 2, (B,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        out = model(inputs, None, mask, labels)
        loss = F.cross_entropy(out.mlm_logits, out.mlm_targets) + F.cross_entropy(out.rop_logits, rop)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(inputs, None, mask, labels)
    mlm_acc = (out.mlm_logits.argmax(-1) == out.mlm_targets).float().mean().item()
    rop_acc = (out.rop_logits.argmax(-1) == rop).float().mean().item()
    assert mlm_acc == 1.0, mlm_acc
    assert rop_acc == 1.0, rop_acc
