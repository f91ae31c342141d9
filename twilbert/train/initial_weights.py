"""Initial weights for pre-training (``training.path_initial_weights``): continued pre-training from a
checkpoint of the same architecture and vocabulary."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from twilbert.config import ConfigError, to_dict
from twilbert.model.config import ModelConfig
from twilbert.train.checkpoint import ConfigMismatchError, config_differences, load_checkpoint, read_config, read_pretrain_meta

def training_only(key: str) -> bool:
    """A model key that says how weights are trained, not which weights exist or what they compute:
    masking (``masked_lm.*``), loss weights (``*loss_weight``), dropouts (``*dropout``) and the init
    range of fresh weights. A rule, not a list, so a new dropout or loss weight follows it."""
    leaf = key.rsplit(".", 1)[-1]
    return key.startswith("masked_lm.") or leaf.endswith(("dropout", "loss_weight")) or leaf == "initializer_range"


def architecture(tree: dict, prefix: str = "") -> dict:
    """The model config ``tree`` without its :func:`training_only` keys."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            if (sub := architecture(value, f"{dotted}.")) or not value:  # a section of training-only keys goes whole
                out[key] = sub
        elif not training_only(dotted):
            out[key] = value
    return out


def _check_vocabulary(directory: Path, tokenizer_sha256: str) -> None:
    meta = read_pretrain_meta(directory)
    if not meta:
        return
    recorded = meta.get("tokenizer_sha256")
    if recorded is not None and recorded != tokenizer_sha256:
        raise ConfigError(
            f"training.path_initial_weights: {directory} was trained with another vocabulary (tokenizer sha256 "
            f"{recorded[:12]}, the vocab stage's is {tokenizer_sha256[:12]}): set vocab.pretrained: {directory} and "
            "rerun the vocab stage (`dvc repro -f -s vocab` after re-importing: DVC does not track the checkpoint's files)"
        )
    if recorded is None and meta.get("imported_from"):
        raise ConfigError(
            f"training.path_initial_weights: {directory} was imported ({meta['imported_from']}) without a tokenizer, so "
            "which token each embedding row stands for is unknown: import a checkpoint that ships its tokenizer"
        )


def load_initial_weights(model: nn.Module, directory: str | Path, model_cfg: ModelConfig, tokenizer_sha256: str | None = None) -> None:
    """Load weights from a checkpoint directory (``final/`` or a ``step-*`` dir) into ``model``.

    The stored config must match ``model_cfg`` on its :func:`architecture`; masking, loss weights,
    dropouts and the init range may differ. Raises :class:`ConfigMismatchError` listing the differing keys.
    ``tokenizer_sha256``: the vocabulary training will use; when the checkpoint's ``pretrain.json``
    records another, that is an error -- same-sized vocabularies pass the shape checks, but every
    embedding row would then stand for a different token (an imported BERT under a freshly trained
    vocabulary).
    """
    directory = Path(directory)
    stored = read_config(directory)
    diffs = config_differences(architecture(stored), architecture(to_dict(model_cfg)))
    if diffs:
        raise ConfigMismatchError(directory, diffs)
    if tokenizer_sha256 is not None:
        _check_vocabulary(directory, tokenizer_sha256)
    load_checkpoint(directory, model)


__all__ = ["architecture", "load_initial_weights", "training_only"]
