"""Initial weights for pre-training (``training.path_initial_weights``): continued pre-training from a
checkpoint of the same architecture and vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from twilbert.config import ConfigError, to_dict
from twilbert.model.config import ModelConfig
from twilbert.train.checkpoint import ConfigMismatchError, config_differences, load_checkpoint, read_config, read_pretrain_meta

# Model keys that may differ between `path_initial_weights` and the model being trained: they change
# training, not the weights' structure (masking, loss weights, dropout, init of fresh weights).
NON_ARCHITECTURE_KEYS = (
    "masked_lm",
    "rop.loss_weight",
    "input_dropout",
    "output_dropout",
    "attention_dropout",
    "initializer_range",
    "pkm_params.input_dropout",
    "pkm_params.output_dropout",
)


def _drop_keys(tree: dict, dotted: tuple[str, ...]) -> dict:
    tree = json.loads(json.dumps(tree))
    for key in dotted:
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return tree


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

    The stored config must match ``model_cfg`` on every architecture key; masking, loss weights,
    dropouts and the init range may differ. Raises :class:`ConfigMismatchError` listing the differing keys.
    ``tokenizer_sha256``: the vocabulary training will use; when the checkpoint's ``pretrain.json``
    records another, that is an error -- same-sized vocabularies pass the shape checks, but every
    embedding row would then stand for a different token (an imported BERT under a freshly trained
    vocabulary).
    """
    directory = Path(directory)
    stored = read_config(directory)
    diffs = config_differences(_drop_keys(stored, NON_ARCHITECTURE_KEYS), _drop_keys(to_dict(model_cfg), NON_ARCHITECTURE_KEYS))
    if diffs:
        raise ConfigMismatchError(directory, diffs)
    if tokenizer_sha256 is not None:
        _check_vocabulary(directory, tokenizer_sha256)
    load_checkpoint(directory, model)


__all__ = ["NON_ARCHITECTURE_KEYS", "load_initial_weights"]
