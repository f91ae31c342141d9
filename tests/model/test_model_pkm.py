"""Product-key memory: the product-key search equals brute force over all memory_size**2 slots, and the
sparse embedding_bag read equals a dense softmax-weighted sum."""

from __future__ import annotations

import pytest
import torch

from twilbert.model import PKMConfig, ProductKeyMemory


def brute_force(q: torch.Tensor, keys: torch.Tensor, knn: int):
    """Score every slot (i, j) as q1.k1[i] + q2.k2[j] over the full M x M grid, take the top knn."""
    half = q.shape[-1] // 2
    M = keys.shape[2]
    s1 = torch.einsum("nhd,hmd->nhm", q[..., :half], keys[:, 0])  # (N, h, M)
    s2 = torch.einsum("nhd,hmd->nhm", q[..., half:], keys[:, 1])  # (N, h, M)
    full = (s1[..., :, None] + s2[..., None, :]).reshape(*s1.shape[:2], M * M)  # (N, h, M*M), slot i*M + j
    return full.topk(knn, dim=-1)


@pytest.mark.parametrize("memory_size,knn", [(12, 5), (7, 7), (16, 1)])
def test_topk_equals_brute_force(memory_size, knn):
    torch.manual_seed(memory_size)
    pkm = ProductKeyMemory(16, PKMConfig(k_dim=10, memory_size=memory_size, n_heads=3, knn=knn), value_size=16)
    q = torch.randn(50, 3, 10, dtype=torch.float64)
    pkm.double()
    scores, idx = pkm.get_indices(q)
    ref_scores, ref_idx = brute_force(q, pkm.keys, knn)
    torch.testing.assert_close(scores, ref_scores)
    assert torch.equal(idx, ref_idx)


def test_sparse_read_equals_dense_sum():
    torch.manual_seed(1)
    cfg = PKMConfig(k_dim=8, memory_size=9, n_heads=2, knn=4, batch_norm=False)
    pkm = ProductKeyMemory(12, cfg, value_size=12).eval()
    x = torch.randn(2, 5, 12)
    out = pkm(x)  # (2, 5, 12)
    q = pkm.query(x).view(10, 2, 8)
    s, i = brute_force(q, pkm.keys, 4)  # (10, 2, 4)
    dense_w = torch.zeros(10, 2, 81).scatter(-1, i, torch.softmax(s, -1))  # weights over every slot
    expected = (dense_w.sum(1) @ pkm.values.weight).view(2, 5, 12)  # heads summed
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_factorised_values_and_gradients():
    cfg = PKMConfig(k_dim=8, memory_size=5, n_heads=2, knn=2, factorize_embeddings=True, value_size=4)
    pkm = ProductKeyMemory(12, cfg, value_size=4)
    assert pkm.values.weight.shape == (25, 4)
    x = torch.randn(3, 4, 12)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out = pkm(x, mask)
    assert out.shape == (3, 4, 12)
    out.square().sum().backward()
    for name, p in pkm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # only the rows read receive gradient (sparse access), at most 3*4 tokens * 2 heads * 2 knn
    touched = (pkm.values.weight.grad.abs().sum(1) > 0).sum().item()
    assert 1 <= touched <= 48
