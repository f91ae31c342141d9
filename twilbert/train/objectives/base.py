"""What an objective is: one loss term, the count it is normalised by, and its named statistics.

The update loop (:mod:`twilbert.train.loop`) asks each objective for its count in every micro-batch
(known on the host before any forward pass), sums the counts over the step's micro-batches and ranks,
and back-propagates ``weight · loss_sum / count``. Statistics travel as a :class:`Sums` dataclass whose
fields are sums, so they add field by field and are read by name (``stats.correct / stats.targets``).

A new objective: a module in this package with an :class:`Objective` subclass decorated with
:func:`register`, a ``Sums`` subclass for its statistics, and its config; import it in ``__init__``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

OBJECTIVES: dict[str, type[Objective]] = {}  # name -> class, in registration (= loss summation) order


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: add an objective to :data:`OBJECTIVES` under ``cls.name``."""
    if cls.name in OBJECTIVES:
        raise ValueError(f"objective {cls.name!r} registered twice")
    OBJECTIVES[cls.name] = cls
    return cls


@dataclass
class Sums:
    """Statistics of one objective as sums (0-dim tensors on the device, or host floats once reduced).

    Subclasses name their fields; the first field is the summed loss and :attr:`denominator` names
    the count the mean loss divides by."""

    denominator: ClassVar[str]  # the field the mean loss and the rates divide by

    @classmethod
    def zeros(cls, device: torch.device | str) -> Sums:
        return cls(*[torch.zeros((), dtype=torch.float64, device=device) for _ in fields(cls)])

    def __add__(self, other: Sums) -> Sums:
        return type(self)(*[getattr(self, f.name) + getattr(other, f.name) for f in fields(self)])

    def values(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    @classmethod
    def from_values(cls, values: list[float]) -> Sums:
        return cls(*values)

    def rate(self, name: str) -> float:
        """``field / denominator`` as a host float; NaN when the denominator is 0."""
        n = float(getattr(self, self.denominator))
        return float(getattr(self, name)) / n if n else math.nan

    def mean_loss(self) -> float:
        return self.rate(fields(self)[0].name)

    def metrics(self) -> dict[str, float]:
        """The named metrics of these sums (host floats); subclasses name them."""
        return {}

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return ()


class Objective(ABC):
    """A loss term: ``count`` (host, per micro-batch), ``loss`` (summed over the micro-batch's rows)."""

    name: ClassVar[str]
    stats_type: ClassVar[type[Sums]]
    pretraining: ClassVar[bool] = False  # chosen by the model config (from_model_config) for pre-training

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    @classmethod
    def from_model_config(cls, cfg: Any) -> Objective | None:
        """This objective as ``cfg`` (a ModelConfig) asks for it, or None when it is off / not a
        pre-training objective."""
        return None

    @abstractmethod
    def count(self, micro_batch: Any) -> int:
        """How many rows of ``micro_batch`` (host side) the loss sums over: the denominator's share."""

    @abstractmethod
    def loss(self, out: Any, batch: Any) -> tuple[torch.Tensor, Sums]:
        """``(loss summed over the rows, graph-attached scalar; statistics of this micro-batch)``."""


__all__ = ["OBJECTIVES", "Objective", "Sums", "register"]
