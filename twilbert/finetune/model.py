"""Sequence classifier: a TWilBERT encoder, a pooling ("collapse") step, dropout and one Linear head.

Where it departs from the original ``finetune_ffn`` (each deliberate; rows in docs/deviations.md):
* ``avg`` and ``max`` pool over real tokens only: padding never enters, and ``use_special_tokens:
  false`` also leaves out [CLS]/[SEP] (the original documented that key and never read it;
  docs/deviations.md#pooling-real-tokens);
* ``eval()`` turns every dropout off, the encoder's included (docs/deviations.md#dropout-off-at-eval);
* ``freeze_encoder`` (``finetune_all: false``) really freezes: encoder parameters get no gradient and
  the encoder stays in eval mode (no dropout, PKM batch-norm statistics fixed), so only the head trains
  (docs/deviations.md#finetune-all);
* the head is initialised TruncatedNormal(0, initializer_range) (the original passed init_range as
  the *mean*; docs/deviations.md#head-init).

A fine-tuned model directory (:func:`save_finetuned`) holds ``model.safetensors`` (encoder without its
pre-training heads, plus the classifier head), ``config.json`` and ``spm.model``; it is usable alone.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import HF_TOKENIZER_FILE, SPM_FILE, tokenizer_file
from twilbert.tokens import CLS_ID, SEP_ID
from twilbert.train.checkpoint import CheckpointError, load_checkpoint, model_config, read_config, read_pretrain_meta, save_checkpoint
from twilbert.utils import sha256_file as _sha256

CollapseMode = Literal["cls", "avg", "max", "concat"]
COLLAPSE_MODES = ("cls", "avg", "max", "concat")
FORMAT = "twilbert-finetuned/1"


def pool(
    hidden: torch.Tensor,  # (B, T, H)
    input_ids: torch.Tensor,  # (B, T)
    attention_mask: torch.Tensor | None,  # (B, T) bool, True = real token; None = no padding
    mode: str,
    use_special_tokens: bool = True,
) -> torch.Tensor:
    """Collapse token states to one vector per sequence: (B, H), or (B, 3H) for ``concat`` = [cls; avg; max].

    ``avg``/``max`` use the real tokens (and, with ``use_special_tokens=False``, not [CLS]/[SEP]). A row
    with no such token (an empty text without special tokens) pools to zeros instead of NaN/-inf.
    """
    if mode not in COLLAPSE_MODES:
        raise ValueError(f"unknown collapse mode {mode!r}; known: {COLLAPSE_MODES}")
    cls = hidden[:, 0]  # (B, H)
    if mode == "cls":
        return cls
    keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask  # (B, T)
    if not use_special_tokens:
        keep = keep & (input_ids != CLS_ID) & (input_ids != SEP_ID)
    count = keep.sum(1, keepdim=True)  # (B, 1)
    m = keep.unsqueeze(-1)  # (B, T, 1)
    avg = (hidden * m).sum(1) / count.clamp(min=1).to(hidden.dtype)  # (B, H)
    mx = hidden.masked_fill(~m, float("-inf")).amax(1)  # (B, H)
    mx = torch.where(count > 0, mx, torch.zeros_like(mx))  # (B, H)
    if mode == "avg":
        return avg
    if mode == "max":
        return mx
    return torch.cat([cls, avg, mx], dim=-1)  # (B, 3H)


class SequenceClassifier(nn.Module):
    """``encoder.encode`` -> pool -> dropout -> Linear(n_outputs). Outputs logits (or the value, for
    regression); softmax / sigmoid belong to the loss and to prediction."""

    def __init__(
        self,
        encoder: TWilBERT,
        n_outputs: int,
        collapse_mode: str = "avg",
        use_special_tokens: bool = True,
        dropout: float = 0.1,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        if collapse_mode not in COLLAPSE_MODES:
            raise ValueError(f"unknown collapse mode {collapse_mode!r}; known: {COLLAPSE_MODES}")
        self.encoder = encoder
        self.collapse_mode = collapse_mode
        self.use_special_tokens = use_special_tokens
        self.frozen = freeze_encoder
        H = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(H * (3 if collapse_mode == "concat" else 1), n_outputs)
        std = encoder.config.initializer_range
        nn.init.trunc_normal_(self.head.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.head.bias)
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    @property
    def head_config(self) -> dict[str, Any]:
        return {
            "n_outputs": self.head.out_features,
            "collapse_mode": self.collapse_mode,
            "use_special_tokens": self.use_special_tokens,
            "dropout": self.dropout.p,
        }

    def train(self, mode: bool = True) -> "SequenceClassifier":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # a frozen encoder never drops out
        return self

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T) bool
    ) -> torch.Tensor:
        # A [CLS] head reads one position: the last layer computes only that one (TWilBERT.encode).
        first_only = self.collapse_mode == "cls"
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            hidden = self.encoder.encode(input_ids, token_type_ids, attention_mask, first_only=first_only)  # (B, T or 1, H)
        pooled = pool(hidden, input_ids, attention_mask, self.collapse_mode, self.use_special_tokens)  # (B, H')
        return self.head(self.dropout(pooled))  # (B, n_outputs)


# --------------------------------------------------------------------------------------------------
# encoders from checkpoints


def model_config_from_dict(stored: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """A ModelConfig from a checkpoint's config: either ``{"model": {...}, ...}`` (the pretrain stage's
    layout) or the model config dict itself, checked as strictly as params (types, ranges, memory)."""
    return model_config(stored, where)


def resolve_pretrained_dir(path: str | Path) -> Path:
    """A checkpoint directory: ``path`` itself, or ``path/final`` (the pretrain stage's output dir)."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
        return path / "final"
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: no config.json (nor final/config.json); not a pre-trained model directory")
    return path


def pretrained_tokenizer_sha256(path: str | Path) -> str | None:
    """The sha256 of the vocabulary the encoder was pre-trained with, when the checkpoint records it."""
    return read_pretrain_meta(resolve_pretrained_dir(path)).get("tokenizer_sha256")


def load_encoder(pretrained_dir: str | Path, attention: str = "sdpa") -> TWilBERT:
    """Build a TWilBERT from a pre-training checkpoint directory (or the pretrain output dir holding
    ``final/``) and load its weights (checksums verified; the pre-training heads are loaded too and
    simply not used for fine-tuning)."""
    directory = resolve_pretrained_dir(pretrained_dir)
    cfg = model_config_from_dict(read_config(directory), str(directory / "config.json"))
    model = TWilBERT(cfg, attention=attention)
    load_checkpoint(directory, model)
    return model


# --------------------------------------------------------------------------------------------------
# fine-tuned model directories


class _Exported(nn.Module):
    """The parameters a fine-tuned model needs, under the classifier's own names: the pre-training
    heads (an MLM decoder is vocab x H) are left out."""

    def __init__(self, clf: SequenceClassifier) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.embeddings = clf.encoder.embeddings
        self.encoder.encoder = clf.encoder.encoder
        self.head = clf.head


def save_finetuned(model_dir: str | Path, model: SequenceClassifier, tokenizer_path: str | Path, info: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (atomic, checksummed) and a copy of the
    tokenizer (``spm.model``, or an imported checkpoint's ``tokenizer.json``; its sha256 in
    config.json). ``info``: task-level entries (labels, task_type, max_len, normalize, ...) stored
    beside the model and head configs."""
    from twilbert.config import to_dict

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_path = tokenizer_file(tokenizer_path)
    spm_out = model_dir / (HF_TOKENIZER_FILE if tokenizer_path.suffix == ".json" else SPM_FILE)
    if tokenizer_path.resolve() != spm_out.resolve():
        shutil.copyfile(tokenizer_path, spm_out)
    config = {
        "format": FORMAT,
        "model": to_dict(model.encoder.config),
        "head": model.head_config,
        "tokenizer": {"file": spm_out.name, "sha256": _sha256(spm_out)},
        **info,
    }
    save_checkpoint(model_dir, _Exported(model), config, rng=False)
    return model_dir


@dataclass
class FinetunedModel:
    model: SequenceClassifier
    config: dict[str, Any]  # the stored config.json
    tokenizer_path: Path

    @property
    def labels(self) -> list[str]:
        return [k for k, _ in sorted(self.config.get("labels", {}).items(), key=lambda kv: kv[1])]


def load_finetuned(model_dir: str | Path, attention: str = "sdpa") -> FinetunedModel:
    """Rebuild a classifier saved by :func:`save_finetuned` (weights and spm.model verified), in eval mode."""
    from twilbert.finetune.model_dir import read_finetuned_config

    model_dir = Path(model_dir)
    config = read_finetuned_config(model_dir)
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{model_dir / 'config.json'}: not a fine-tuned TWilBERT model (format {config.get('format')!r})")
    spm_path = model_dir / config["tokenizer"]["file"]
    if not spm_path.is_file():
        raise CheckpointError(f"{spm_path}: missing")
    if _sha256(spm_path) != config["tokenizer"]["sha256"]:
        raise CheckpointError(f"{spm_path}: sha256 does not match config.json; file corrupted or replaced")
    head = config["head"]
    encoder = TWilBERT(model_config_from_dict(config), attention=attention)
    model = SequenceClassifier(
        encoder,
        head["n_outputs"],
        collapse_mode=head["collapse_mode"],
        use_special_tokens=head["use_special_tokens"],
        dropout=head["dropout"],
    )
    load_checkpoint(model_dir, _Exported(model))
    model.eval()
    return FinetunedModel(model=model, config=config, tokenizer_path=spm_path)


def probabilities(outputs: torch.Tensor, task_type: str) -> torch.Tensor:
    """Model outputs -> what the task type reads: softmax (single-label), sigmoid (multi-label) or the
    value itself (regression, (N,))."""
    from twilbert.finetune.task_types import get_task_type

    return get_task_type(task_type).probabilities(outputs)


__all__ = [
    "COLLAPSE_MODES",
    "FinetunedModel",
    "SequenceClassifier",
    "load_encoder",
    "pretrained_tokenizer_sha256",
    "resolve_pretrained_dir",
    "load_finetuned",
    "model_config_from_dict",
    "pool",
    "probabilities",
    "save_finetuned",
]
