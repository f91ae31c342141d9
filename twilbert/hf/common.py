"""What every part of the interop shares: its error, the lazy ``transformers`` import, the parity tolerance.

``transformers`` (and ``tokenizers``) are imported only when a conversion runs: the rest of the library
never needs them, and a missing install is a one-line :class:`HFInteropError`.
"""

from __future__ import annotations

from twilbert.config import ConfigError

HF_EXTRA = "pip install -e .[hf]"
PARITY_TOL = 1e-4  # max |difference| of hidden states accepted by the probe check (fp32, any size)


class HFInteropError(ConfigError):
    """A checkpoint that cannot be converted (the message lists every reason), or no transformers."""


def require_transformers():
    """The ``transformers`` module, or a one-line error naming the extra to install."""
    try:
        import transformers
    except ImportError:
        raise HFInteropError(f"Hugging Face interop needs the `transformers` package: {HF_EXTRA}") from None
    return transformers


def quiet_transformers():
    """``transformers`` with its load reports silenced (we report what was and was not converted)."""
    transformers = require_transformers()
    transformers.logging.set_verbosity_error()
    return transformers


def refuse(what: str, reasons: list[str]) -> None:
    """Raise one :class:`HFInteropError` listing every reason, if there is any."""
    if reasons:
        raise HFInteropError(f"{what}: " + "; ".join(reasons))
