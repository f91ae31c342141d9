"""Pipeline presets: the original TWilBERT-Base / -Large pre-training recipes as params overrides.

A preset is a flat ``{"dotted.key": value}`` mapping over params.yaml, applied either by DVC
(``dvc exp run $(twilbert preset twilbert-base)`` passes ``-S key=value`` for each entry) or written
into params.yaml (``twilbert preset twilbert-base --write``). The model part comes from
:mod:`twilbert.model.presets`; the recipe part is the original's
``configs/pretrain/config_{base,large}.json``: batch 64 x accumulation 32 = 2048 sequences per update,
Adam (0.9, 0.98, 1e-6), Noam with 8,000 (base) or 10,000 (large) warm-up steps, 30 epochs, segments up
to 40 tokens, a 30k BPE vocabulary.

The original's Noam used the formula's own peak (~4e-4); ``training.lr`` multiplies the Noam formula
here, so the preset sets it to 1.0 to reproduce that peak exactly (docs/deviations.md#noam-scale).
"""

from __future__ import annotations

from typing import Any

from twilbert.config import flatten
from twilbert.model.presets import PRESETS as MODEL_PRESETS

_RECIPE_COMMON: dict[str, Any] = {
    "vocab.model_type": "bpe",
    "vocab.vocab_size": 30000,
    "representation.max_len": 40,
    # Fine-tuning segments must fit the 2 * 40 + 3 positions (a text pair: two segments of <= 40).
    "finetuning.max_len": 40,
    "training.batch_size": 64,
    "training.accum_iters": 32,
    "training.optimizer": "adam",
    "training.betas": [0.9, 0.98],
    "training.eps": 1e-6,
    "training.weight_decay": 0.0,
    "training.schedule": "noam",
    "training.lr": 1.0,
    "training.epochs": 30,
    "run.checkpoint_every": 1000,  # bookkeeping, not recipe: a sample-sized interval would write thousands
}

PIPELINE_PRESETS: dict[str, dict[str, Any]] = {
    "twilbert-base": {**_RECIPE_COMMON, "training.warmup_steps": 8000},
    "twilbert-large": {**_RECIPE_COMMON, "training.warmup_steps": 10000},
}


def preset_overrides(name: str) -> dict[str, Any]:
    """All params overrides of a preset, model included, as dotted keys."""
    if name not in PIPELINE_PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PIPELINE_PRESETS))}")
    out = {f"model.{k}": v for k, v in flatten(MODEL_PRESETS[name]).items()}
    out.update(PIPELINE_PRESETS[name])
    return out


def _yaml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), separators=(",", ":"))  # no spaces: survives $(...) word splitting
    if v is None:
        return "null"
    return str(v)


def dvc_set_args(name: str) -> list[str]:
    """``["-S", "model.n_encoders=6", ...]`` for ``dvc exp run``."""
    args: list[str] = []
    for k, v in preset_overrides(name).items():
        args += ["-S", f"{k}={_yaml_value(v)}"]
    return args


def _drop_old_places(data, key: str) -> None:
    """Remove the keys that ``MOVED_KEYS`` says moved to ``key`` (both places set is an error on load)."""
    from pipeline.params import MOVED_KEYS

    for old, new in MOVED_KEYS.items():
        section, _, leaf = old.partition(".")
        if new == key and isinstance(data.get(section), dict) and leaf in data[section]:
            del data[section][leaf]


def write_preset(name: str, params_path) -> None:
    """Apply a preset to params.yaml in place, keeping comments (ruamel.yaml, shipped with DVC).

    The result is validated (``load_params``, input files included) *before* params.yaml is replaced,
    so a preset that does not fit the file (e.g. a task too long for the preset's positions) leaves
    it untouched and raises ConfigError naming params.yaml and the key."""
    import os
    import tempfile
    from pathlib import Path

    from ruamel.yaml import YAML

    from twilbert.config import ConfigError

    from pipeline.params import load_params

    params_path = Path(params_path)
    if not params_path.is_file():
        raise ConfigError(f"{params_path}: no such params file")
    yaml = YAML()
    yaml.preserve_quotes = True
    # ruamel writes None as an empty value ("resume_from:"); keep params.yaml's explicit nulls.
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = yaml.load(params_path.read_text(encoding="utf-8"))
    for key, value in preset_overrides(name).items():
        _drop_old_places(data, key)  # an old-layout file: the preset's value at the new place replaces it
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    # Validated as a sibling file, so relative input paths resolve as they will in params.yaml.
    fd, tmp = tempfile.mkstemp(prefix=".preset-", suffix=".yaml", dir=params_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.dump(data, f)
        try:
            load_params(tmp)
        except ConfigError as exc:
            raise ConfigError(f"{params_path}: preset {name} not written: {str(exc).removeprefix(f'{tmp}: ')}") from None
        os.replace(tmp, params_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
