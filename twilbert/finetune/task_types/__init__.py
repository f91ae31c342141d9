"""Task types (``tasks.<name>.type``), by name: :data:`TASK_TYPES`, :func:`get_task_type`.

Every module of this package is imported here, so a new type registers itself by existing
(:mod:`twilbert.finetune.task_types.base` says what it implements).
"""

from __future__ import annotations

import importlib
import pkgutil

from twilbert.finetune.task_types.base import TASK_TYPES, ClassificationType, TaskType, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def get_task_type(name: str) -> TaskType:
    """The registered type ``name`` (a ValueError naming the known ones otherwise)."""
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; known: {sorted(TASK_TYPES)}") from None


__all__ = ["TASK_TYPES", "ClassificationType", "TaskType", "get_task_type", "register"]
