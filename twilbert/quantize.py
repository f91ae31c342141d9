"""``precision="int8"``: the encoder's matrix products as dynamic int8 linears (CPU inference only).

Why: on a CPU without native bf16 (AVX2 servers, most laptops) bf16 autocast is slower than fp32, and
ONNX Runtime's dynamic int8 is the peer users deploy (issue 26). The same recipe here: every linear of
the encoder blocks (fused Q/K/V, attention output, FFN in/out) keeps its weight as int8, one scale per
output row (per-channel), and quantises its input per call from that batch's own range (dynamic: no
calibration data). Embeddings, layer norms, softmax and the classifier head stay fp32.

The kernels are PyTorch's quantized engine (``torch.ao`` dynamic ``Linear``: FBGEMM/oneDNN on x86,
QNNPACK on ARM). Activations get the full 8 bits where the CPU has AVX512-VNNI (its ``vpdpbusd`` sums
into 32 bits), and 7 bits elsewhere (``reduce_range``, torch's default), so the AVX2 ``vpmaddubsw``
path cannot saturate its 16-bit sums. On a real task the full range halves the probability error and
flips a third as many labels (RESULTS.md#inference). ``torch.ao.quantization`` prints
deprecation notices in torch 2.13 (its successor is the separate ``torchao`` package); they are
silenced here, and ``int8_problem`` refuses cleanly once the engine is gone.

Cost in quality: probabilities within :data:`INT8_PROB_TOL` of fp32 on the tests' tiny models; labels
and macro-F1 on a real task: ``benchmarks/predict_throughput.py`` (RESULTS.md#inference).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

# Max |p_int8 - p_fp32| of class probabilities accepted by the tests (fp32 logits move by a few 1e-2
# on a 6-layer model; bf16 autocast is held to 3e-2 the same way).
INT8_PROB_TOL = 5e-2
# The linears quantised: the encoder blocks' matrix products (module names end with one of these).
QUANTIZED = ("attn.qkv", "attn.out", "ffn.fc_in", "ffn.fc_out")


def int8_problem(device: torch.device) -> str | None:
    """Why ``precision="int8"`` cannot run here, or None."""
    if device.type != "cpu":
        return f"precision int8 runs on the CPU only (dynamic int8 linears), not on {device.type}; use bf16 there"
    engines = [e for e in getattr(torch.backends.quantized, "supported_engines", []) if e != "none"]
    if not engines or not hasattr(torch.ao.quantization, "quantize_dynamic"):
        return f"precision int8: this torch build ({torch.__version__}) has no quantized CPU engine"
    return None


def full_range() -> bool:
    """True where 8-bit activations are safe: the CPU has AVX512-VNNI (see the module docstring)."""
    return bool(torch.cpu.get_capabilities().get("avx512_vnni", False))


@functools.cache
def _full_range_linear() -> type[nn.Module]:
    """torch.ao's dynamic ``Linear`` with 8-bit activations (its own ``forward`` fixes ``reduce_range=True``)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class FullRangeDynamicLinear(DynamicLinear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False).to(x.dtype)

        def _get_name(self) -> str:
            return "FullRangeDynamicQuantizedLinear"

    return FullRangeDynamicLinear


def quantized_names(model: nn.Module) -> list[str]:
    """Names of the linears :func:`quantize_int8` replaces."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(QUANTIZED)]


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace the encoder blocks' linears of ``model`` (in eval mode, on the CPU) by dynamic int8 ones,
    in place (a second call changes nothing); returns ``model``. Weights: int8, symmetric, one scale per
    output row; activations: 8 bits where :func:`full_range`, else 7."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = quantized_names(model)
    if not names and any(is_int8(m) for m in model.modules()):
        return model  # already quantised
    if not names:
        raise ValueError("quantize_int8: the model has no encoder linears to quantise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices (see the module docstring)
        mapping = {nn.Linear: _full_range_linear()} if full_range() else None
        return quantize_dynamic(model.eval(), {n: per_channel_dynamic_qconfig for n in names}, dtype=torch.qint8,
                                mapping=mapping, inplace=True)


def is_int8(module: nn.Module) -> bool:
    """True for a linear :func:`quantize_int8` made."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return isinstance(module, DynamicLinear)


__all__ = ["INT8_PROB_TOL", "QUANTIZED", "full_range", "int8_problem", "is_int8", "quantize_int8", "quantized_names"]
