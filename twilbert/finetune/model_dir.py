"""A fine-tuned model directory's ``config.json``, validated before anything is built from it.

Why: the directory is an input like params (it can be copied, edited, crafted), and its config
decides what gets allocated and what a prediction means. A checksum only proves the file is the one
the checksums list, not that it makes sense: a label map with an index past the head's outputs
reported the wrong probability, ``max_len: 1e9`` failed on the first long input, ``vocab_size: 1e12``
tried to allocate terabytes. Here each is a one-line :class:`CheckpointError` naming the file and key:

* ``model``: the encoder config, as strict as params (:func:`twilbert.train.checkpoint.model_config`);
* ``head``: ``n_outputs``, ``collapse_mode``, ``use_special_tokens``, ``dropout``;
* ``labels``: ``{label: index}`` covering the head exactly (a classifier: as many labels as outputs,
  each index in range, none twice; a type without classes, e.g. regression: no labels);
* ``max_len``: positive, and its longest input (``[CLS] a [SEP]``, or ``[CLS] a [SEP] b [SEP]`` with
  ``text_pair``) fits the encoder's position table;
* ``tokenizer``: a plain file name in the directory and its sha256.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twilbert.config import ConfigError
from twilbert.metadata import fields
from twilbert.train.checkpoint import CONFIG_FILE, CheckpointError, model_config, read_config

MAX_OUTPUTS = 2**16  # far above any label set; a head of 1e9 outputs would be gigabytes

_TOP = fields(
    required={"model": dict, "head": dict, "labels": dict, "task_type": str, "max_len": int, "tokenizer": dict},
    optional={"text_pair": bool, "threshold": (float, None), "normalize": (dict, None), "format": str},
)
_HEAD = fields(required={"n_outputs": int, "collapse_mode": str, "use_special_tokens": bool, "dropout": float})
_TOKENIZER = fields(required={"file": str, "sha256": str})


def _check(config: dict[str, Any], max_positions: int) -> None:
    from twilbert.finetune.model import COLLAPSE_MODES
    from twilbert.finetune.task_types import TASK_TYPES

    _TOP(config)
    head = config["head"]
    try:
        _HEAD(head)
    except ConfigError as exc:
        raise ConfigError(f"head.{exc}") from None
    n = head["n_outputs"]
    if not 1 <= n <= MAX_OUTPUTS:
        raise ConfigError(f"head.n_outputs: must be in [1, {MAX_OUTPUTS}], got {n}")
    if head["collapse_mode"] not in COLLAPSE_MODES:
        raise ConfigError(f"head.collapse_mode: expected one of {', '.join(COLLAPSE_MODES)}, got {head['collapse_mode']!r:.40}")
    if not 0 <= head["dropout"] < 1:
        raise ConfigError(f"head.dropout: must be in [0, 1), got {head['dropout']}")
    if config["task_type"] not in TASK_TYPES:
        raise ConfigError(f"task_type: expected one of {', '.join(sorted(TASK_TYPES))}, got {config['task_type']!r:.40}")
    _check_labels(config["labels"], n, TASK_TYPES[config["task_type"]])
    pair = bool(config.get("text_pair"))
    max_len = config["max_len"]
    need = 2 * max_len + 3 if pair else max_len + 2
    if max_len < 1 or need > max_positions:
        most = (max_positions - 3) // 2 if pair else max_positions - 2
        raise ConfigError(f"max_len: {max_len} tokens per segment need {need} positions, the encoder has {max_positions}; "
                          f"expected 1..{most}")
    tok = config["tokenizer"]
    try:
        _TOKENIZER(tok)
    except ConfigError as exc:
        raise ConfigError(f"tokenizer.{exc}") from None
    if not tok["file"] or os.path.basename(tok["file"]) != tok["file"] or tok["file"] in (".", ".."):
        raise ConfigError(f"tokenizer.file: expected a file name in the model directory, got {tok['file']!r:.60}")


def _check_labels(labels: dict[str, Any], n: int, kind: Any) -> None:
    from twilbert.finetune.task_types import ClassificationType

    if not isinstance(kind, ClassificationType):
        if labels:
            raise ConfigError(f"labels: a {kind.name} model has no labels, got {len(labels)}")
        return
    for label, index in labels.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
            raise ConfigError(f"labels.{label}: index {index!r:.20} is not an output of the head (0..{n - 1})")
    if len(set(labels.values())) != len(labels):
        twice = sorted({i for i in labels.values() if list(labels.values()).count(i) > 1})
        raise ConfigError(f"labels: index {twice[0]} is given to more than one label")
    if len(labels) != n:
        raise ConfigError(f"labels: {len(labels)} label(s) for a head of {n} outputs; every output needs one label")


def finetuned_config(config: dict[str, Any], where: str | os.PathLike = CONFIG_FILE) -> dict[str, Any]:
    """``config`` (a fine-tuned model's ``config.json``, decoded) if it is consistent, else a one-line
    :class:`CheckpointError` naming ``where`` and the key."""
    cfg = model_config(config, where)  # first: the head checks need the encoder's sizes
    try:
        _check(config, cfg.max_positions)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    return config


def read_finetuned_config(model_dir: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """A fine-tuned model directory's ``config.json``, checksum-verified and validated (see the module
    docstring). :func:`twilbert.finetune.model.load_finetuned` reads it through this."""
    model_dir = Path(model_dir)
    return finetuned_config(read_config(model_dir, verify=verify), model_dir / CONFIG_FILE)


__all__ = ["MAX_OUTPUTS", "finetuned_config", "read_finetuned_config"]
