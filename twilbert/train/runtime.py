"""Implementation knobs (``impl``) turned into runtime objects: device, threads, precision, compile, seeds.

These must change speed only. bf16 autocast and a compiled graph change float rounding, nothing else;
the recipe (data order, masks, optimiser) never depends on them.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

H100_BF16_PEAK_FLOPS = 989.4e12  # dense bf16 tensor-core peak of one H100 SXM


def set_num_threads(num_threads: int) -> None:
    """``impl.num_threads``: torch intra-op threads; 0 keeps torch's default (or OMP_NUM_THREADS)."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def resolve_device(device: str | torch.device, *, key: str = "impl.device", error: type[Exception] = ValueError) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given. Asking for CUDA without one
    raises ``error`` naming ``key`` (``impl.device`` for training, ``device`` for ``twilbert.load``)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise error(f"{key}: cuda requested but no CUDA device is available")
    return d


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``impl.precision``, or None for plain fp32.

    ``auto``: bf16 on a CUDA device that supports it, fp32 elsewhere (CPU bf16 matmuls are slower than
    fp32 on most CPUs without AMX). ``bf16``: bf16 autocast on any device (the CPU path is mainly for
    testing it). No fp16: it would need loss scaling, and every GPU worth training on has bf16.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"impl.precision is bf16 but {torch.cuda.get_device_name(device)} does not support bf16")
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    raise ValueError(f"unknown precision {precision!r}; known: auto, fp32, bf16")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def enable_tf32() -> None:
    """TF32 matmuls for whatever stays fp32 on Ampere+ (speed only; the recipe does not change)."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when enabled. The MLM head's boolean gather (data-dependent shape) is
    a graph break, so the encoder and the heads compile as separate graphs; T varies over a few
    bucket lengths (multiples of 8), which dynamo handles with dynamic shapes after one recompile."""
    if not enabled:
        return model
    import torch._dynamo

    # a few (B, T) shapes (partial batches, one T per bucket) must not exhaust the recompile budget
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # renamed in torch 2.6
    setattr(cfg, name, max(getattr(cfg, name), 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.compile(model)


def mix_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from ``seed`` and ``parts`` (e.g. a rank): independent streams per part."""
    import numpy as np

    hi, lo = np.random.SeedSequence([seed, *parts]).generate_state(2, np.uint32)
    return (int(hi) << 31) ^ int(lo)


__all__ = [
    "H100_BF16_PEAK_FLOPS",
    "autocast",
    "autocast_dtype",
    "enable_tf32",
    "maybe_compile",
    "resolve_device",
    "mix_seed",
    "set_num_threads",
]
