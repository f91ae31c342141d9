"""Fine-tuning configs owned by the core: ``finetuning`` (defaults for every task) and ``tasks.<name>``.

Key names are the original's (``dataset`` and ``task`` sections flattened into one task entry). Unlike
the original, ``finetune_all`` and ``use_special_tokens`` are honoured, ``class_metric: 0`` is a real
choice and ``stance_f1`` names its classes (docs/deviations.md#finetune-all, #class-metric-zero,
#stance-f1). ``tasks.<name>.type`` names a task type (:mod:`twilbert.finetune.task_types`), which
validates the label and metric keys.

A task may override any ``finetuning`` key for itself (``tasks.<name>.finetuning: {lr: 1e-4}``); the
effective settings are :func:`effective_finetuning` (defaults, then the task's overrides, validated
together, errors naming ``tasks.<name>.finetuning.<key>``). The original had one config file per task
and run, so every key there was per task.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

from twilbert.config import ConfigError, _convert, check, from_dict, note_deprecated, to_dict

# `regression: true` / `multi_label: true` of older params files, read as `type` (TaskConfig.upgrade_keys)
LEGACY_TYPE_KEYS = ("regression", "multi_label")
LOSSES = (
    "cross_entropy",
    "bce",
    "mse",
    "macro_f1",
    "f1_macro",
    "micro_f1",
    "macro_precision",
    "macro_recall",
    "micro_precision",
    "micro_recall",
    "jaccard",
)
# The original's "soft metric" losses: batch-level metrics over probabilities.
SOFT_LOSSES = LOSSES[3:]


@dataclass(frozen=True, kw_only=True)
class FinetuningConfig:
    """Defaults for every task (the original's ``finetuning`` section)."""

    batch_size: int = 32
    epochs: int = 5
    patience: int = 0  # early stopping after N epochs without dev improvement; 0 = off
    max_len: int = 64  # tokens per segment
    finetune_all: bool = True  # false freezes the encoder (the original never read this key)
    collapse_mode: Literal["cls", "avg", "max", "concat"] = "avg"
    use_special_tokens: bool = True  # include [CLS]/[SEP] in avg/max pooling (the original ignored it)
    dropout: float = 0.1  # classifier-head dropout, off at evaluation
    loss: Literal[LOSSES] = "cross_entropy"  # type: ignore[valid-type]
    optimizer: Literal["adam", "adamw", "lamb"] = "adam"
    lr: float = 5e-5  # peak lr for linear/constant; a multiplier on the Noam formula for noam (as training.lr)
    weight_decay: float = 0.0
    schedule: Literal["noam", "linear", "constant"] = "linear"
    warmup_steps: int = 10
    accum_iters: int = 1
    clip_grad_norm: float = 1.0  # 0 = off
    seed: int = 1234
    # Several seeds: one model per seed (same data, same config); metrics.json holds mean and sd over
    # them, and the run with the best *dev* score becomes the task's model. null = one run with `seed`.
    seeds: tuple[int, ...] | None = None
    path_load_weights: str | None = None  # null = the pipeline's pre-trained model; "random" = no pre-training

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "accum_iters"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(self.patience >= 0, "patience", "must be >= 0")
        if self.seeds is not None:
            check(len(self.seeds) >= 1, "seeds", "must list at least one seed (null = the single `seed`)")
            check(len(set(self.seeds)) == len(self.seeds), "seeds", f"repeated seeds in {list(self.seeds)}")
        check(4 <= self.max_len <= 1024, "max_len", "must be in [4, 1024]")
        check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(self.schedule != "noam" or self.warmup_steps >= 1, "warmup_steps", "noam needs warmup_steps >= 1")
        check(self.path_load_weights is None or self.path_load_weights != "", "path_load_weights", "must not be empty (null = the pre-trained model)")


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """One downstream task (the original's ``dataset`` + ``task`` sections, flattened).

    Selection (:func:`twilbert.finetune.metrics.selection_score`): ``class_metric`` (one class's
    ``eval_metric``) wins over ``stance_f1`` (mean F1 over the named classes, used when eval_metric is
    f1), which wins over ``eval_metric`` + ``average_metric``. A regression task selects on pearson.
    """

    train_file: str
    dev_file: str
    test_file: str
    type: str = "single_label"  # single_label | multi_label | regression: a name in task_types.TASK_TYPES
    id_header: str = "ID"
    text_header: str = "TEXT"
    aux_header: str | None = None  # second text for text-pair tasks: [CLS] text [SEP] aux [SEP]
    class_header: str = "CLASS"
    delimiter: str = "\t"
    categories: dict[str, int] = field(default_factory=dict)  # label -> index; empty for regression
    class_weights: dict[str, float] | Literal["auto", "ones"] = "ones"
    # Single-label classes ordered by their indices (e.g. N=0 < NEU=1 < P=2): only then is a Pearson
    # correlation of class indices meaningful, so only then may eval_metric be pearson and does
    # metrics.json report it.
    ordinal: bool = False
    # Multi-label class fields: "names" = the labels present, e.g. "anger|joy" (empty = none);
    # "multi_hot" = one 0/1 per category in index order, e.g. "0|1|0".
    multi_label_format: Literal["names", "multi_hot"] = "names"
    label_separator: str = "|"  # multi-label: labels within the class field
    threshold: float = 0.5  # multi-label decision threshold on sigmoid probabilities
    eval_metric: Literal["f1", "accuracy", "precision", "recall", "pearson"] = "f1"
    average_metric: Literal["macro", "micro", "weighted", "none"] = "macro"
    class_metric: int | None = None  # select on one class's metric (0 works: the original ignored it)
    stance_f1: tuple[str, ...] = ()  # mean F1 over these labels, e.g. [AGAINST, FAVOR]
    # A dev row whose id is in train, or a test row whose id is in train or dev (leakage): "drop"
    # quarantines it (left out of that split, listed in reports/finetune/<task>/rejects.tsv, counted in
    # metrics.json "data", one warning on stderr); "error" refuses the task, naming the row. Default
    # drop: real splits have such rows (TASS 2020 has one id in train and test, with two labels).
    repeated_ids: Literal["drop", "error"] = "drop"
    max_chars: int = 5000  # a longer text (or aux text) is an error naming its line (as data.max_chars for corpora)
    finetuning: dict[str, Any] | None = None  # per-task overrides of the `finetuning` section

    def __post_init__(self) -> None:
        from twilbert.finetune.task_types import TASK_TYPES

        check(self.type in TASK_TYPES, "type", f"unknown task type {self.type!r}; known: {sorted(TASK_TYPES)}")
        check(len(self.delimiter) == 1 and len(self.delimiter.encode()) == 1, "delimiter", "must be one single-byte (ASCII) character")
        check(self.delimiter not in "\n\r", "delimiter", "must not be a line break")
        check(self.max_chars >= 1, "max_chars", "must be >= 1")
        check(self.label_separator != "", "label_separator", "must not be empty")
        self.kind.check_labels(self)
        if isinstance(self.class_weights, dict) or not isinstance(self.class_weights, str):
            unknown = set(self.class_weights) - set(self.categories)
            check(not unknown, "class_weights", f"labels not in categories: {sorted(unknown)}")
            check(all(w >= 0 for w in self.class_weights.values()), "class_weights", "weights must be >= 0")
        if self.class_metric is not None:
            check(0 <= self.class_metric < max(1, len(self.categories)), "class_metric", "not a category index")
            check(self.eval_metric in ("f1", "precision", "recall"), "class_metric", f"selects one class's f1/precision/recall, not {self.eval_metric}")
        unknown = set(self.stance_f1) - set(self.categories)
        check(not unknown, "stance_f1", f"labels not in categories: {sorted(unknown)}")
        check(0.0 < self.threshold < 1.0, "threshold", "must be in (0, 1)")
        self.kind.check_selection(self)
        if self.finetuning is not None:
            _check_overrides(self.finetuning, "finetuning")

    @classmethod
    def upgrade_keys(cls, data: dict[str, Any], key: str) -> dict[str, Any]:
        """Older params files: the booleans ``regression`` / ``multi_label`` become ``type`` (a note
        each, naming the replacement). ``from_dict`` calls this before it reads the keys."""
        old = {k: data.pop(k) for k in LEGACY_TYPE_KEYS if k in data}
        if not old:
            return data
        where = f"{key}." if key else ""
        for k, v in old.items():
            if not isinstance(v, bool):
                raise ConfigError(f"{where}{k}: expected true/false, got {type(v).__name__} {v!r}")
        if old.get("regression") and old.get("multi_label"):
            raise ConfigError(f"{where}multi_label: a regression task cannot be multi-label")
        implied = next((k for k, v in old.items() if v), "single_label")
        if "type" in data and data["type"] != implied:
            k = next(iter(old))
            raise ConfigError(f"{where}type: {data['type']!r} contradicts the deprecated {where}{k}: {str(old[k]).lower()}; remove {k}")
        data["type"] = implied
        for k in old:
            note_deprecated(f"{where}{k}", f"{where}type: {implied}")
        return data

    @property
    def kind(self):  # -> TaskType
        """The :class:`~twilbert.finetune.task_types.TaskType` named by ``type``."""
        from twilbert.finetune.task_types import get_task_type

        return get_task_type(self.type)

    @property
    def task_type(self) -> str:
        return self.type

    @property
    def labels(self) -> list[str]:
        """Category names in index order."""
        return [k for k, _ in sorted(self.categories.items(), key=lambda kv: kv[1])]

    @property
    def n_outputs(self) -> int:
        return self.kind.n_outputs(self)


def _check_overrides(overrides: Any, key: str) -> None:
    """Each override key must be a FinetuningConfig field of the right type (cross-field checks are
    done on the merged config by :func:`effective_finetuning`)."""
    hints = get_type_hints(FinetuningConfig)
    names = [f.name for f in dataclasses.fields(FinetuningConfig)]
    for k, v in overrides.items():
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"{key}.{k}: unknown key{hint}")
        _convert(v, hints[k], f"{key}.{k}")


def effective_finetuning(defaults: FinetuningConfig, task: TaskConfig, name: str) -> FinetuningConfig:
    """The ``finetuning`` defaults with ``tasks.<name>.finetuning`` applied, validated as a whole.

    Errors name ``tasks.<name>.finetuning.<key>``; a loss that does not fit the task names the key it
    came from (``finetuning.loss`` or ``tasks.<name>.finetuning.loss``). Idempotent: applying it to
    its own result gives the same config.
    """
    overrides = dict(task.finetuning or {})
    prefix = f"tasks.{name}.finetuning"
    _check_overrides(overrides, prefix)
    merged = {**to_dict(defaults), **overrides}
    ft = from_dict(FinetuningConfig, merged, prefix=prefix) if overrides else defaults
    loss_key = f"{prefix}.loss" if "loss" in overrides else "finetuning.loss"
    check_loss_fits_task(ft.loss, task, loss_key, name)
    return ft


def check_loss_fits_task(loss: str, task: TaskConfig, key: str, name: str) -> None:
    """The loss must be one the task's type allows (:attr:`TaskType.losses`). Soft-metric losses are
    batch-level scalars: they take no class weights."""
    allowed = task.kind.losses
    if loss not in allowed:
        raise ConfigError(f"{key}: '{loss}' does not fit task '{name}' ({task.kind.title}); use one of {list(allowed)}")
    if loss in SOFT_LOSSES and task.class_weights != "ones":
        raise ConfigError(
            f"tasks.{name}.class_weights: the soft-metric loss '{loss}' ({key}) takes no class weights; "
            "set class_weights: ones or use cross_entropy/bce"
        )
