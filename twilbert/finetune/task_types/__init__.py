"""Task types (``tasks.<name>.type``), by name: :data:`TASK_TYPES`, :func:`get_task_type`.

Each type registers itself when its module is imported, below (:mod:`twilbert.finetune.task_types.base`
says what a type implements). The imports are explicit, not discovered, so that the code a run
depends on (its resume fingerprint, a DVC stage's deps) can be read off the import statements.
"""

from __future__ import annotations

from twilbert.finetune.task_types import multi_label, regression, single_label  # noqa: F401  (registration)
from twilbert.finetune.task_types.base import TASK_TYPES, ClassificationType, TaskType, register


def get_task_type(name: str) -> TaskType:
    """The registered type ``name`` (a ValueError naming the known ones otherwise)."""
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; known: {sorted(TASK_TYPES)}") from None


__all__ = ["TASK_TYPES", "ClassificationType", "TaskType", "get_task_type", "register"]
