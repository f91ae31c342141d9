"""A model's size from its config alone: upper bounds on the size keys and the parameter count.

Why without building it: ``model.vocab_size: 1000000000000`` or ``n_encoders: 100000`` would try to
allocate terabytes inside ``TWilBERT(cfg)``; checked here, a bad params file or a crafted model
``config.json`` is refused in one line naming the keys, before torch allocates anything.
``parameter_count`` mirrors the modules of ``embeddings.py``, ``encoder.py``, ``pkm.py`` and
``heads.py`` (tested against ``sum(p.numel())`` of built models); edit it with them.
``machine_memory_bytes`` is the RAM both the params check and model-directory loading compare against.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twilbert.model.config import ModelConfig

# Upper bounds (and the lower bounds the config already checks) on the ``model:`` keys that size
# tensors, far above any BERT-like encoder (BERT-large: H 1024, L 24, 16 heads, 30k pieces) and far
# below what overflows an index or allocates terabytes for one table.
MODEL_BOUNDS: dict[str, tuple[int, int]] = {
    "vocab_size": (6, 2**20),
    "max_positions": (3, 2**16),
    "embedding_size": (1, 2**14),
    "hidden_size": (1, 2**14),
    "n_encoders": (1, 256),
    "n_heads": (1, 256),
    "attention_size": (1, 2**14),
    "pkm_params.memory_size": (1, 4096),  # memory_size**2 value slots: 16.8M at 4096
    "pkm_params.k_dim": (2, 2**14),
    "pkm_params.n_heads": (1, 64),
    "pkm_params.value_size": (1, 2**14),
    "masked_lm.max_span": (1, 1024),  # span-length tables have max_span entries
    "rop.n_hidden": (0, 64),
    "rop.hidden_size": (1, 2**14),
}

# Training memory per parameter in fp32: the weight, its gradient and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def parameter_count(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of ``TWilBERT(cfg)`` by part: ``embeddings``, ``encoder``, ``pkm`` (memory layers),
    ``heads`` (MLM and ROP). ``cfg`` must be resolved (``vocab_size`` and ``max_positions`` set)."""
    V, P, E, H = cfg.vocab_size, cfg.max_positions, cfg.embedding_size, cfg.hidden_size
    if V is None or P is None:
        raise ValueError("parameter_count needs a resolved config (vocab_size and max_positions set)")
    layer_norm = 2  # weight and bias per feature

    embeddings = (V + P + 2) * E + (layer_norm * E if cfg.embedding_layer_norm else 0)
    embeddings += E * H + H if cfg.factorize_embeddings else 0

    width = cfg.n_heads * cfg.head_dim  # A * d_k
    attention = H * 3 * width + width * H + ((3 * width + H) if cfg.attention_bias else 0)
    block_common = attention + 2 * layer_norm * H  # + the FFN or the memory
    ffn = H * 4 * H + 4 * H + 4 * H * H + H
    n_pkm = len(cfg.pkm_layers)
    n_plain = cfg.n_encoders - n_pkm
    n_plain_blocks = min(n_plain, 1) if cfg.cross_sharing else n_plain  # one shared block serves them all
    encoder = n_plain_blocks * (block_common + ffn) + (layer_norm * H if cfg.norm == "pre" else 0)

    pkm = 0
    if n_pkm:
        p = cfg.pkm_params
        value_size = (p.value_size or E) if p.factorize_embeddings else H
        queries = p.n_heads * p.k_dim
        memory = H * queries + queries + (2 * queries if p.batch_norm else 0)  # query Linear (+ BatchNorm)
        memory += p.n_heads * p.memory_size * p.k_dim  # keys: (heads, 2, memory_size, k_dim / 2)
        memory += p.memory_size**2 * value_size  # values
        memory += value_size * H + H if p.factorize_embeddings else 0
        pkm = n_pkm * (block_common + memory)

    decoder_width = E if (cfg.tie_mlm_decoder and cfg.factorize_embeddings) else H
    if cfg.mlm_transform:
        heads = H * decoder_width + decoder_width + layer_norm * decoder_width
    else:
        heads = H * decoder_width + decoder_width if decoder_width != H else 0
    heads += (0 if cfg.tie_mlm_decoder else decoder_width * V) + V  # decoder weight (unless tied), bias
    if cfg.rop.use_rop:
        rop_width = H
        for _ in range(cfg.rop.n_hidden):
            heads += rop_width * cfg.rop.hidden_size + cfg.rop.hidden_size + layer_norm * cfg.rop.hidden_size
            rop_width = cfg.rop.hidden_size
        heads += rop_width * 2 + 2
    return {"embeddings": embeddings, "encoder": encoder, "pkm": pkm, "heads": heads}


def training_memory_bytes(cfg: ModelConfig) -> int:
    """Bytes the parameters alone take in fp32 training (weights, gradients, Adam state); activations
    and the data come on top, so this is a lower bound of what pre-training needs."""
    return TRAINING_BYTES_PER_PARAMETER * sum(parameter_count(cfg).values())


def machine_memory_bytes() -> int | None:
    """Physical RAM, or the cgroup (container) limit when lower; None when unknown."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        ram = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = ""
    if limit.isdigit():
        ram = min(ram, int(limit)) if ram else int(limit)
    return ram
