"""Named model presets: the two released TWilBERT architectures (``configs/pretrain/config_{base,large}.json``).

A preset is a plain dict over :class:`ModelConfig` fields (the ``model:`` section of params.yaml), so it
is validated exactly like a user's config. The presets reproduce the *original architecture*: post-LN,
no embedding LayerNorm, bias-free attention projections, untied MLM decoder without transform, no
factorisation, sharing or PKM, ROP with ``n_hidden=0``. Dropouts are 0 as in the pre-training configs.

``vocab_size`` and ``max_positions`` are left out: they are derived (tokenizer, ``representation.max_len``)
and filled in by :meth:`ModelConfig.resolved`. The original had a 30 002-token vocabulary (a 30 003-row
token table: docs/deviations.md#token-table-rows) and a 260-row position table (``2 * 128 + 4``,
docs/deviations.md#position-table); :data:`ORIGINAL_SIZES` holds those numbers for reproducing its
parameter counts (81 747 508 base, 131 334 196 large) minus the one unused token row (768 parameters).
As the pipeline builds them (``vocab.vocab_size`` 30 000, ``representation.max_len`` 40, so 83
positions) they have 139 778 fewer parameters than the original: 81 607 730 and 131 194 418 (the
unused row, 2 vocabulary entries x (768 + 768 + 1) and 177 position rows x 768;
``tests/model/test_model_build.py`` derives this).
"""

from __future__ import annotations

import copy
from typing import Any

from twilbert.config import from_dict, to_dict
from twilbert.model.config import ModelConfig

_ORIGINAL_COMMON: dict[str, Any] = {
    "factorize_embeddings": False,
    "cross_sharing": False,
    "embedding_size": 768,
    "hidden_size": 768,
    "attention_size": 64,
    "input_dropout": 0.0,
    "output_dropout": 0.0,
    "attention_dropout": 0.0,
    "attention_bias": False,
    "initializer_range": 0.02,
    "embedding_layer_norm": False,
    "norm": "post",
    "layer_norm_eps": 1e-12,
    "tie_mlm_decoder": False,
    "mlm_transform": False,
    "pkm": False,
    "masked_lm": {
        "type": "span",
        "max_span": 3,
        "span_distribution": "harmonic",
        "budget": 0.15,
        "probs": {"mask": 0.8, "random": 0.1, "keep": 0.1},
    },
    "rop": {"use_rop": True, "n_hidden": 0, "hidden_size": 512, "loss_weight": 1.0},
}

PRESETS: dict[str, dict[str, Any]] = {
    "twilbert-base": {**_ORIGINAL_COMMON, "n_encoders": 6, "n_heads": 6},
    "twilbert-large": {**_ORIGINAL_COMMON, "n_encoders": 12, "n_heads": 12},
}

# The original's derived sizes (vocab file of 30 002 lines; max_len 128 -> 2 * 128 + 4 positions).
ORIGINAL_SIZES: dict[str, int] = {"vocab_size": 30002, "max_positions": 260}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: nested dicts (``rop``, ``masked_lm``, ``pkm_params``) are merged key by key."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """``preset_config("twilbert-base", vocab_size=30002, max_positions=260, rop={"use_rop": False})``."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    overrides = {k: to_dict(v) for k, v in overrides.items()}  # accept dataclass values too
    return from_dict(ModelConfig, _merge(PRESETS[name], overrides), prefix="model")
