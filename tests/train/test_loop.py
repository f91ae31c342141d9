"""The shared update loop: normalisation by the update's counts (accumulation == one big batch), the
non-finite guard (skip, count, one error type after max_bad_steps), named statistics reduced by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from twilbert.config import ConfigError
from twilbert.train.loop import StepCounters, TrainingDivergedError, UpdateLoop, reduce_sums
from twilbert.train.objectives import Objective, Sums


@dataclass
class SqStats(Sums):
    loss_sum: Any
    rows: Any
    denominator = "rows"


class SquaredError(Objective):
    """Σ (y - ŷ)² over the rows of a micro-batch, normalised by the update's row count."""

    name = "sq"
    stats_type = SqStats

    def count(self, mb: dict) -> int:
        return mb["x"].shape[0]

    def loss(self, out: torch.Tensor, mb: dict) -> tuple[torch.Tensor, SqStats]:
        err = ((out.squeeze(-1) - mb["y"]) ** 2).sum()  # (,)
        return err, SqStats(err.detach(), torch.tensor(mb["y"].shape[0]))


def setup(seed: int = 0, max_bad_steps: int = 3, weight: float = 1.0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    obj = SquaredError(weight)
    loop = UpdateLoop(objectives=[obj], forward=lambda mb: (model(mb["x"]), mb), optimizer=opt, scheduler=sched,
                      params=list(model.parameters()), clip=None, max_bad_steps=max_bad_steps,
                      diverged_message=lambda c: f"{c.consecutive_bad} bad in a row at {c.step}", device=torch.device("cpu"))
    return model, loop


def data(n: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 3, generator=g), "y": torch.randn(n, generator=g)}


def rows(mb: dict, sl: slice) -> dict:
    return {k: v[sl] for k, v in mb.items()}


def test_uneven_micro_batches_equal_one_big_batch_of_the_mean_loss():
    big = data(10)
    m1, loop1 = setup()
    m2, loop2 = setup()
    loop1.step([big], StepCounters())
    result = loop2.step([rows(big, slice(0, 2)), rows(big, slice(2, 10))], StepCounters())  # 2 + 8 rows
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # and both equal a plain step on the mean loss
    m3, _ = setup()
    ((m3(big["x"]).squeeze(-1) - big["y"]) ** 2).mean().backward()
    with torch.no_grad():
        for p in m3.parameters():
            p -= 0.1 * p.grad
    for a, b in zip(m1.parameters(), m3.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not result.skipped and float(result.sums["sq"].rows) == 10 and result.lr == pytest.approx(0.1)


def test_a_non_finite_update_is_skipped_and_counted_then_the_run_stops():
    model, loop = setup(max_bad_steps=2)
    before = [p.detach().clone() for p in model.parameters()]
    bad = data(4)
    bad["y"] = bad["y"] * float("nan")
    counters = StepCounters()
    assert loop.step([bad], counters).skipped
    assert counters == StepCounters(step=1, skipped_steps=1, consecutive_bad=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # optimizer untouched
    assert all(p.grad is None for p in model.parameters())  # gradients dropped
    assert not loop.step([data(4)], counters).skipped and counters.consecutive_bad == 0
    loop.step([bad], counters)
    with pytest.raises(TrainingDivergedError, match="2 bad in a row at 4"):
        loop.step([bad], counters)
    assert issubclass(TrainingDivergedError, ConfigError)  # the CLI prints its one line


def test_reduce_sums_gives_named_host_floats_and_the_extra_vector():
    sums = {"sq": SqStats(torch.tensor(3.0), torch.tensor(2))}
    out, rest = reduce_sums(sums, torch.tensor([1.0, 2.0]), device=torch.device("cpu"))
    assert out["sq"] == SqStats(3.0, 2.0) and rest == [1.0, 2.0]
    assert out["sq"].mean_loss() == 1.5
