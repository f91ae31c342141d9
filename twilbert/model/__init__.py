"""The TWilBERT model: config, building blocks, heads and presets.

Names are loaded on first use (PEP 562), so ``import twilbert.model.config`` or
``from twilbert.model import ModelConfig`` does not import the torch modules. The special-token ids
live in :mod:`twilbert.tokens` (re-exported here).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SOURCES: dict[str, tuple[str, ...]] = {
    "twilbert.model.attention": ("ATTENTION_BACKENDS", "SelfAttention", "get_attention_backend"),
    "twilbert.model.config": ("MaskedLMConfig", "MaskProbs", "ModelConfig", "PKMConfig", "ROPConfig"),
    "twilbert.model.embeddings": ("Embeddings",),
    "twilbert.model.encoder": ("Encoder", "EncoderBlock", "FeedForward"),
    "twilbert.model.heads": ("MLMHead", "ROPHead"),
    "twilbert.model.pkm": ("MaskedBatchNorm1d", "ProductKeyMemory"),
    "twilbert.model.presets": ("ORIGINAL_SIZES", "PRESETS", "preset_config"),
    "twilbert.model.twilbert": ("PretrainOutput", "TWilBERT"),
    "twilbert.tokens": (
        "CLS_ID", "IGNORE_INDEX", "MASK_ID", "N_SPECIAL", "PAD_ID", "SEP_ID", "SPECIAL_TOKENS", "UNK_ID",
    ),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from twilbert.model.attention import ATTENTION_BACKENDS, SelfAttention, get_attention_backend
    from twilbert.model.config import MaskedLMConfig, MaskProbs, ModelConfig, PKMConfig, ROPConfig
    from twilbert.model.embeddings import Embeddings
    from twilbert.model.encoder import Encoder, EncoderBlock, FeedForward
    from twilbert.model.heads import MLMHead, ROPHead
    from twilbert.model.pkm import MaskedBatchNorm1d, ProductKeyMemory
    from twilbert.model.presets import ORIGINAL_SIZES, PRESETS, preset_config
    from twilbert.model.twilbert import PretrainOutput, TWilBERT
    from twilbert.tokens import CLS_ID, IGNORE_INDEX, MASK_ID, N_SPECIAL, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID
