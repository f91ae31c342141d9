"""Product-key memory: the product-key search equals brute force over all memory_size**2 slots, and the
sparse embedding_bag read equals a dense softmax-weighted sum, gradients reach exactly the value rows
the top-k names, and no intermediate of the forward has memory_size**2 entries per token."""

from __future__ import annotations

import pytest
import torch
from torch.utils._pytree import tree_flatten
from torch.utils._python_dispatch import TorchDispatchMode

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
    calls = []
    get_indices = pkm.get_indices
    pkm.get_indices = lambda q: calls.append(get_indices(q)) or calls[-1]  # record the top-k the forward used
    out = pkm(x, mask)
    (_, indices), = calls  # (12, heads, knn)
    assert out.shape == (3, 4, 12)
    out.square().sum().backward()
    for name, p in pkm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # only the rows read receive gradient (sparse access): exactly the rows the top-k indices name
    touched = set(torch.nonzero(pkm.values.weight.grad.abs().sum(1) > 0).squeeze(1).tolist())
    assert touched == set(indices.unique().tolist())
    assert len(touched) < 25  # not every slot: 12 tokens x 2 heads x 2 neighbours, with repeats


class LargestIntermediate(TorchDispatchMode):
    """Records the largest tensor any ATen op returns inside the ``with`` block (a view included)."""

    def __init__(self):
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.op = t.numel(), func
        return out


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_forward_never_scores_all_memory_slots(device):
    """The largest intermediate of a PKM forward is the sub-key score table (N, heads, memory_size),
    never anything of memory_size**2 slots per token. On the meta device (shapes only) memory_size
    2**16 is used: dense scores for these 64 tokens would be 64 * 2 * 2**32 floats = 2 TiB."""
    memory_size = 512 if device == "cpu" else 2**16
    cfg = PKMConfig(k_dim=16, memory_size=memory_size, n_heads=2, knn=8, factorize_embeddings=True, value_size=2)
    with torch.device(device):
        pkm = ProductKeyMemory(24, cfg, value_size=2)
        x = torch.randn(4, 16, 24)
        mask = torch.ones(4, 16, dtype=torch.bool)
    N = 4 * 16
    with LargestIntermediate() as largest:
        out = pkm(x, mask)
    assert out.shape == (4, 16, 24)
    # sub-key scores, knn x knn candidates, queries, outputs: a factor >= memory_size below dense scoring
    legit = max(N * cfg.n_heads * memory_size, N * cfg.n_heads * cfg.knn**2, N * cfg.n_heads * cfg.k_dim, N * 24)
    assert legit * memory_size <= N * cfg.n_heads * memory_size**2
    assert largest.numel <= legit, (largest.op, largest.numel)
