"""Optimisers vs hand-written reference formulas (numpy, float64), weight-decay groups, clipping."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from twilbert.train.optim import DEFAULTS, Lamb, build_optimizer, clip_grad_norm, param_groups

STEPS = 5


def make_problem(seed: int = 0):
    """Three parameters (a matrix, a zero-initialised bias, a vector) and per-step gradients."""
    rng = np.random.default_rng(seed)
    init = [rng.normal(size=(4, 3)), np.zeros(3), rng.normal(size=5)]
    grads = [[rng.normal(size=p.shape) for p in init] for _ in range(STEPS)]
    return init, grads


def run_torch(name, init, grads, **kw):
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in init]
    opt = build_optimizer(name, params, **kw)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for p in params]


def ref_adam(init, grads, lr, betas, eps, decoupled_wd=0.0):
    """Kingma & Ba, Algorithm 1 (bias-corrected, eps outside the root); AdamW: Loshchilov & Hutter."""
    b1, b2 = betas
    ps = [p.copy() for p in init]
    ms = [np.zeros_like(p) for p in init]
    vs = [np.zeros_like(p) for p in init]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            ps[i] = ps[i] * (1 - lr * decoupled_wd)
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            m_hat, v_hat = ms[i] / (1 - b1**t), vs[i] / (1 - b2**t)
            ps[i] = ps[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return ps


def ref_lamb(init, grads, lr, betas, eps, wd):
    """You et al. 2019 with bias correction; trust ratio 1 when either norm is 0."""
    b1, b2 = betas
    ps = [p.copy() for p in init]
    ms = [np.zeros_like(p) for p in init]
    vs = [np.zeros_like(p) for p in init]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            u = (ms[i] / (1 - b1**t)) / (np.sqrt(vs[i] / (1 - b2**t)) + eps) + wd * ps[i]
            w_norm, u_norm = np.linalg.norm(ps[i]), np.linalg.norm(u)
            r = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            ps[i] = ps[i] - lr * r * u
    return ps


def test_adam_defaults_are_the_originals():
    assert DEFAULTS["adam"] == ((0.9, 0.98), 1e-6)
    opt = build_optimizer("adam", [nn.Parameter(torch.zeros(2))], lr=1e-4)
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6
    assert isinstance(build_optimizer("adamw", [nn.Parameter(torch.zeros(2))], lr=1e-4), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("sgd", [nn.Parameter(torch.zeros(2))], lr=1.0)


def test_adam_matches_reference():
    init, grads = make_problem(0)
    got = run_torch("adam", init, grads, lr=1e-2)
    for a, b in zip(got, ref_adam(init, grads, 1e-2, (0.9, 0.98), 1e-6)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_adamw_matches_reference():
    init, grads = make_problem(1)
    got = run_torch("adamw", init, grads, lr=1e-2, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1)
    for a, b in zip(got, ref_adam(init, grads, 1e-2, (0.8, 0.95), 1e-8, decoupled_wd=0.1)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_lamb_matches_reference_and_moves_every_parameter(wd):
    init, grads = make_problem(2)
    got = run_torch("lamb", init, grads, lr=0.05, weight_decay=wd)
    ref = ref_lamb(init, grads, 0.05, DEFAULTS["lamb"][0], DEFAULTS["lamb"][1], wd)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for before, after in zip(init, got):  # the original updated only the first parameter
        assert not np.allclose(before, after)
    assert np.abs(got[1]).min() > 0  # the zero-initialised bias moved (trust ratio 1, not 0)


def test_lamb_zero_gradient_is_a_no_op_without_nan():
    p = nn.Parameter(torch.ones(3))
    opt = Lamb([p], lr=0.1)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3))


def test_lamb_state_dict_round_trip_continues_identically():
    init, grads = make_problem(3)
    a = [torch.tensor(x, requires_grad=True) for x in init]
    opt_a = Lamb(a, lr=0.05)
    for g in grads[:3]:
        for p, x in zip(a, g):
            p.grad = torch.tensor(x)
        opt_a.step()
    b = [torch.tensor(p.detach().numpy().copy(), requires_grad=True) for p in a]
    opt_b = Lamb(b, lr=0.05)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if serialised: no shared tensors
    for opt, ps in ((opt_a, a), (opt_b, b)):
        for p, x in zip(ps, grads[3]):
            p.grad = torch.tensor(x)
        opt.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.decoder = nn.Linear(4, 10, bias=True)
        self.decoder.weight = self.emb.weight  # tied


def test_param_groups_exclude_biases_and_norms_and_dedupe_tied():
    model = Tiny()
    groups = param_groups(model, weight_decay=0.01)
    decay = {id(p) for p in groups[0]["params"]}
    plain = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(model.emb.weight), id(model.proj.weight)}
    assert plain == {id(p) for p in (model.proj.bias, model.norm.weight, model.norm.bias, model.bn.weight, model.bn.bias, model.decoder.bias)}
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay) + len(plain) == n_unique == sum(len(g["params"]) for g in groups)
    build_optimizer("adamw", groups, lr=1e-3)  # accepted as groups


def test_clip_grad_norm_returns_pre_clip_norm():
    params = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(1))]
    grads = [torch.tensor([3.0, 0.0, 0.0]), torch.tensor([[0.0, 4.0], [0.0, 0.0]]), None]
    for p, g in zip(params, grads):
        p.grad = g
    assert clip_grad_norm(params, None).item() == pytest.approx(5.0)
    assert params[0].grad[0].item() == 3.0  # not clipped
    assert clip_grad_norm(params, 1.0).item() == pytest.approx(5.0)
    total = torch.sqrt(sum((p.grad**2).sum() for p in params if p.grad is not None))
    assert total.item() == pytest.approx(1.0, rel=1e-5)


def is_update_step(micro_step: int, accum_iters: int) -> bool:
    """True after the last micro-batch of an accumulation window (``micro_step`` 0-based)."""
    return (micro_step + 1) % accum_iters == 0


def test_accumulated_micro_batches_equal_the_full_batch():
    """loss / accum per micro-batch, summed by backward(): the documented accumulation recipe."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    nn.functional.cross_entropy(model(x), y).backward()
    full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    accum, updates = 4, []
    for i, (xb, yb) in enumerate(zip(x.chunk(accum), y.chunk(accum))):
        (nn.functional.cross_entropy(model(xb), yb) / accum).backward()
        updates.append(is_update_step(i, accum))
    assert updates == [False, False, False, True]
    for a, b in zip(full, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b)
