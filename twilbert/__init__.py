"""TWilBERT: BERT-like models for Spanish Twitter (pre-training, fine-tuning, prediction).

``import twilbert`` stays light: torch and the model code load on the first ``twilbert.load(...)``.

>>> import twilbert
>>> model = twilbert.load("models/finetune/sentiment")      # doctest: +SKIP
>>> model.predict(["qué buen día jajaja"])                   # doctest: +SKIP
[{'label': 'P', 'probabilities': {'N': 0.03, 'NEU': 0.11, 'P': 0.86}}]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twilbert.inference import Predictor


def load(path: str | Path, **kwargs: Any) -> "Predictor":
    """Load a fine-tuned model directory or a pre-trained checkpoint: see :func:`twilbert.inference.load`."""
    from twilbert.inference import load as _load

    return _load(path, **kwargs)


__all__ = ["load"]
