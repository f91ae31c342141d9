"""Training objectives, one module each, registered by name in :data:`OBJECTIVES` (see ``base``)."""

from __future__ import annotations

from typing import Any

from twilbert.train.objectives.base import OBJECTIVES, Objective, Sums, register
from twilbert.train.objectives.mlm import MaskedLM, MLMStats
from twilbert.train.objectives.rop import ReplyOrder, ROPStats
from twilbert.train.objectives.task import TaskLoss, TaskLossStats


def pretraining_objectives(model_cfg: Any) -> list[Objective]:
    """The objectives ``model_cfg`` turns on, in registration order (MLM, then ROP when enabled)."""
    return [obj for cls in OBJECTIVES.values() if cls.pretraining and (obj := cls.from_model_config(model_cfg)) is not None]


def pretraining_metric_names() -> tuple[str, ...]:
    """Every metric a pre-training objective may log (a disabled one logs NaN: the columns stay put)."""
    return tuple(name for cls in OBJECTIVES.values() if cls.pretraining for name in cls.stats_type.metric_names())


__all__ = [
    "OBJECTIVES",
    "MLMStats",
    "MaskedLM",
    "Objective",
    "ROPStats",
    "ReplyOrder",
    "Sums",
    "TaskLoss",
    "TaskLossStats",
    "pretraining_metric_names",
    "pretraining_objectives",
    "register",
]
