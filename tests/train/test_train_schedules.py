"""LR schedules: the lr seen by optimizer update s (1-based) vs the formulas written out here."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from twilbert.train.schedules import build_schedule, noam_lr, noam_peak_lr


def lrs_seen(name: str, n_updates: int, base_lr: float = 1.0, **kw) -> list[float]:
    """lr of the first param group during updates 1..n (read before each optimizer.step())."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = build_schedule(name, opt, **kw)
    seen = []
    for _ in range(n_updates):
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        sched.step()
    return seen


def test_noam_peak_of_the_original_base_config():
    # the original's base config: H=768, warmup 8000 -> 4.03e-4; warmup 10000 -> 3.61e-4
    assert noam_lr(8000, hidden_size=768, warmup_steps=8000) == pytest.approx(768**-0.5 * 8000**-0.5)
    assert noam_peak_lr(768, 8000) == pytest.approx(4.03e-4, abs=5e-7)
    assert noam_peak_lr(768, 10000) == pytest.approx(3.61e-4, abs=5e-7)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_noam_schedule_formula_and_peak(scale):
    H, warmup = 64, 40
    seen = lrs_seen("noam", 200, base_lr=1e-3, hidden_size=H, warmup_steps=warmup, scale=scale)
    for s in (1, 2, 17, 40, 41, 100, 200):
        expected = scale * H**-0.5 * min(s**-0.5, s * warmup**-1.5)
        assert seen[s - 1] == pytest.approx(expected, rel=1e-12)
    assert max(seen) == pytest.approx(scale * (H * warmup) ** -0.5) == seen[warmup - 1]
    assert seen.index(max(seen)) == warmup - 1


def test_noam_ignores_group_base_lrs():
    p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0}, {"params": [q], "lr": 0.01}])
    build_schedule("noam", opt, hidden_size=16, warmup_steps=4)
    expected = 16**-0.5 * 4**-1.5
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([expected, expected])


def test_linear_endpoints():
    base, warmup, total = 0.5, 10, 50
    seen = lrs_seen("linear", 60, base_lr=base, warmup_steps=warmup, total_steps=total)
    assert seen[0] == pytest.approx(base / warmup)
    assert seen[warmup - 1] == pytest.approx(base)
    assert seen[30 - 1] == pytest.approx(base * (total - 30) / (total - warmup))
    assert seen[total - 1] == 0.0
    assert all(x == 0.0 for x in seen[total:])
    assert lrs_seen("linear", 3, base_lr=base, warmup_steps=0, total_steps=4) == pytest.approx([base * 3 / 4, base * 2 / 4, base / 4])


def test_constant_with_and_without_warmup():
    assert lrs_seen("constant", 4, base_lr=0.3) == pytest.approx([0.3] * 4)
    assert lrs_seen("constant", 6, base_lr=0.3, warmup_steps=4) == pytest.approx([0.075, 0.15, 0.225, 0.3, 0.3, 0.3])


def test_unknown_or_incomplete_schedules_raise():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        build_schedule("cosine", opt)
    with pytest.raises(ValueError, match="hidden_size"):
        build_schedule("noam", opt, warmup_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        build_schedule("linear", opt, warmup_steps=10)


@pytest.mark.parametrize("name", ["noam", "linear", "constant"])
def test_state_dict_resume_continues_the_same_lrs(name):
    kw = {"noam": dict(warmup_steps=5, hidden_size=32), "linear": dict(warmup_steps=5, total_steps=30), "constant": dict(warmup_steps=5)}[name]

    def make():
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.2)
        return p, opt, build_schedule(name, opt, **kw)

    p, opt, sched = make()
    reference = []
    for s in range(20):
        if s == 8:  # checkpoint after 8 updates, through a weights_only round trip
            buf = io.BytesIO()
            torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
        reference.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        sched.step()
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    p2, opt2, sched2 = make()
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    resumed = []
    for _ in range(12):
        resumed.append(opt2.param_groups[0]["lr"])
        p2.grad = torch.zeros(1)
        opt2.step()
        sched2.step()
    assert resumed == pytest.approx(reference[8:], rel=1e-12)
