"""``export-onnx -m models/finetune/<task> -o DIR [--int8]``: a fine-tuned classifier for ONNX Runtime.

For users who deploy on ONNX Runtime (issue 26): our own :class:`SequenceClassifier` traced by
``torch.onnx.export`` (the dynamo exporter, opset 18), so every collapse mode and task type exports,
not only the [CLS]-pooled ones transformers can express. ``DIR`` holds:

* ``model.onnx``: inputs ``input_ids``, ``token_type_ids``, ``attention_mask`` (int64, (batch, seq),
  1 = real token), outputs ``logits`` (batch, C) and ``probabilities`` (softmax / sigmoid / the value,
  as ``twilbert predict`` reports them);
* ``model.int8.onnx`` with ``--int8``: ONNX Runtime's dynamic quantisation (``quantize_dynamic``,
  QInt8 weights, per-channel), the recipe the issue measured;
* the tokenizer: ``tokenizer.json`` normalising raw tweets with the model's rules when ``transformers``
  is installed (the ``hf`` extra; :func:`twilbert.hf.tokenizer.save_hf_tokenizer`) and every rule has
  a ``tokenizers`` counterpart, else ``spm.model`` (``onnx_export.json`` says which, and why);
* ``onnx_export.json``: labels, task type, max_len, text_pair, and the verification below.

Each written model is run by ONNX Runtime on a probe batch (padding and pairs included) and its
probabilities compared with our fp32 ones; above :data:`FP32_TOL` (fp32) or :data:`INT8_TOL` (int8)
the export is refused. Needs the ``onnx`` extra (``pip install -e .[onnx]``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from twilbert.config import ConfigError

ONNX_EXTRA = "pip install -e .[onnx]"
OPSET = 18
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
OUTPUTS = ("logits", "probabilities")
FP32_TOL = 1e-4  # max |p_onnx - p_ours| of probabilities, fp32 (float rounding of another kernel order)
INT8_TOL = 0.1  # the same for the int8 model: random probe ids are harder on it than real tweets
INFO = "onnx_export.json"


class OnnxExportError(ConfigError):
    """A missing extra, or an exported model that does not reproduce ours."""


def require_ort():
    """The ``onnxruntime`` module, or a one-line error naming the extra."""
    try:
        import onnxruntime
    except ImportError:
        raise OnnxExportError(f"ONNX export needs onnxruntime, onnx and onnxscript: {ONNX_EXTRA}") from None
    return onnxruntime


@contextlib.contextmanager
def _quiet():
    """The exporter's and quantiser's chatter off (warnings, and log lines about torchvision ops)."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


class _Exported(nn.Module):
    """The classifier as ONNX users call it: an int64 mask in, logits and probabilities out."""

    def __init__(self, classifier: nn.Module, task_type: str):
        super().__init__()
        self.classifier, self.task_type = classifier, task_type

    def forward(self, input_ids, token_type_ids, attention_mask):  # 3 x (B, T) int64
        from twilbert.finetune.model import probabilities

        logits = self.classifier(input_ids, token_type_ids, attention_mask.bool())  # (B, C)
        return logits, probabilities(logits, self.task_type)  # (B, C), (B, C) or (B,)


def to_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, inputs=INPUTS, outputs=OUTPUTS) -> Path:
    """``module`` traced on ``example`` to ``path``, with a dynamic batch and sequence axis on every input."""
    require_ort()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module.eval(), example, dynamo=True, opset_version=OPSET, input_names=list(inputs), output_names=list(outputs),
            dynamic_shapes=tuple({0: batch, 1: seq} for _ in inputs), verbose=False,
        )
    program.save(str(path))
    return path


def quantize_int8(src: Path, dst: Path) -> Path:
    """ONNX Runtime's dynamic int8 (QInt8 weights, per channel) of ``src``."""
    require_ort()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():  # its advice to pre-process applies to static (calibrated) quantisation
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    return dst


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation on (``ORT_ENABLE_ALL``)."""
    ort = require_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(sess, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Probabilities (B, C) (or (B,)) of one batch of int64 arrays."""
    return sess.run(["probabilities"], {"input_ids": ids, "token_type_ids": types, "attention_mask": mask})[0]


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, int8: bool = False) -> dict[str, Any]:
    """Write ``out_dir`` (see the module docstring), verified against our fp32; returns its info."""
    from twilbert.finetune.model import load_finetuned, probabilities
    from twilbert.hf.probe import probe_batch

    require_ort()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    ft = load_finetuned(model_dir)
    clf, cfg = ft.model.eval(), ft.model.encoder.config
    task_type = ft.config.get("task_type", "single_label")
    ids, types, mask = probe_batch(cfg.vocab_size, cfg.max_positions)  # 3 x (3, T)
    with torch.inference_mode():
        want = probabilities(clf(ids, types, mask), task_type).numpy()  # (3, C) or (3,)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"fp32": to_onnx(_Exported(clf, task_type), (ids, types, mask.long()), out_dir / "model.onnx")}
    if int8:
        files["int8"] = quantize_int8(files["fp32"], out_dir / "model.int8.onnx")
    diffs = {}
    for kind, path in files.items():
        got = run_session(session(path), ids.numpy(), types.numpy(), mask.long().numpy())
        diffs[kind] = diff = float(np.abs(got - want).max())
        tol = INT8_TOL if kind == "int8" else FP32_TOL
        if not diff <= tol:
            path.unlink()
            raise OnnxExportError(f"{path}: ONNX Runtime's probabilities differ from ours by {diff:.3g} (> {tol:g}) on the probe batch; not written")
    tokenizer = _write_tokenizer(ft, out_dir, cfg)
    info = {
        "source": str(model_dir),
        "files": {k: p.name for k, p in files.items()},
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "opset": OPSET,
        "task_type": task_type,
        "labels": ft.labels,
        "threshold": ft.config.get("threshold"),
        "text_pair": bool(ft.config.get("text_pair")),
        "max_len": int(ft.config.get("max_len") or cfg.max_positions - 2),
        "collapse_mode": clf.collapse_mode,
        "tokenizer": tokenizer,
        "max_abs_diff_probabilities": diffs,
    }
    (out_dir / INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _write_tokenizer(ft, out_dir: Path, cfg) -> str:
    """tokenizer.json that normalises raw tweets (needs transformers), else a copy of spm.model."""
    import shutil

    from twilbert.text.tokenizer import SPM_FILE

    try:
        from twilbert.hf.normalizers import tweet_normalizer
        from twilbert.hf.tokenizer import save_hf_tokenizer

        rules = ft.config.get("normalize")
        max_len = int(ft.config.get("max_len") or cfg.max_positions - 2)
        save_hf_tokenizer(ft.tokenizer_path, out_dir, model_max_length=min(max_len + 2, cfg.max_positions),
                          type_rows=2, normalizer=tweet_normalizer(rules) if rules else None)
        return "tokenizer.json (normalises raw tweets)" if rules else "tokenizer.json"
    except (ConfigError, KeyError) as exc:  # no transformers, or a rule without a tokenizers normaliser
        shutil.copyfile(ft.tokenizer_path, out_dir / SPM_FILE)  # texts are then normalised by the caller
        why = f"rule {exc} has no tokenizers normaliser" if isinstance(exc, KeyError) else str(exc)
        return f"{SPM_FILE} (no tokenizer.json: {why})"


__all__ = ["FP32_TOL", "INT8_TOL", "OnnxExportError", "export_onnx", "quantize_int8", "require_ort", "run_session", "session", "to_onnx"]
