"""``twilbert export-onnx`` (twilbert/onnx_export.py): ONNX Runtime reproduces ``twilbert predict``'s
probabilities on real (padded, length-mixed) batches, fp32 to float rounding and ``--int8`` within its
tolerance; every task type exports; an export off tolerance is refused and removed; no onnxruntime is
a one-line error. Skipped when onnxruntime is absent (the ``onnx`` extra)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.inference.test_predict import TEXTS, error_line, models, run_cli  # noqa: F401

ort = pytest.importorskip("onnxruntime")

from twilbert.finetune.inputs import collate  # noqa: E402
from twilbert.finetune.model import probabilities  # noqa: E402
from twilbert.onnx_export import FP32_TOL, INT8_TOL, run_session, session  # noqa: E402


def ort_probabilities(model_file, predictor, texts, aux=None) -> np.ndarray:
    """ONNX Runtime on one padded batch of every text (the mask always given), input order."""
    data = predictor.encode(texts, aux)
    b = collate(data, np.arange(len(data)))
    mask = b.attention_mask if b.attention_mask is not None else torch.ones_like(b.input_ids, dtype=torch.bool)
    out = run_session(session(model_file, threads=1), b.input_ids.numpy(), b.token_type_ids.numpy(), mask.long().numpy())
    order = np.empty_like(b.index)
    order[b.index] = np.arange(len(b.index))
    return out[order]


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "single"
    result = run_cli("export-onnx", "--model", str(models["single"]), "--out", str(out), "--int8")
    assert result.exit_code == 0, result.output
    assert "max |diff| of probabilities" in result.stdout and "int8 ->" in result.stdout
    return out


def test_export_reproduces_predict(models, exported):
    import twilbert

    info = json.loads((exported / "onnx_export.json").read_text())
    assert info["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    assert info["max_abs_diff_probabilities"]["fp32"] <= FP32_TOL
    p = twilbert.load(models["single"])
    texts = TEXTS * 2
    want = probabilities(torch.from_numpy(p.outputs(texts, batch_size=4)), "single_label").numpy()
    np.testing.assert_allclose(ort_probabilities(exported / "model.onnx", p, texts), want, atol=FP32_TOL)
    np.testing.assert_allclose(ort_probabilities(exported / "model.int8.onnx", p, texts), want, atol=INT8_TOL)
    assert [i.name for i in session(exported / "model.onnx").get_inputs()] == ["input_ids", "token_type_ids", "attention_mask"]


@pytest.mark.parametrize("kind", ["pair", "multi", "reg"])
def test_every_task_type_exports(models, kind, tmp_path):
    import twilbert

    from twilbert.onnx_export import export_onnx

    info = export_onnx(models[kind], tmp_path, int8=False)
    p = twilbert.load(models[kind])
    aux = ["objetivo"] * len(TEXTS) if kind == "pair" else None
    want = probabilities(torch.from_numpy(p.outputs(TEXTS, aux)), p.task_type).numpy()
    np.testing.assert_allclose(ort_probabilities(tmp_path / "model.onnx", p, TEXTS, aux), want, atol=FP32_TOL)
    assert info["text_pair"] == (kind == "pair") and info["task_type"] == p.task_type


def test_refusals(models, tmp_path, monkeypatch):
    import twilbert.onnx_export as ox

    monkeypatch.setattr(ox, "FP32_TOL", -1.0)
    line = error_line(run_cli("export-onnx", "--model", str(models["single"]), "--out", str(tmp_path / "bad")))
    assert "differ from ours" in line and "not written" in line
    assert not (tmp_path / "bad" / "model.onnx").exists()
    monkeypatch.setattr(ox, "require_ort", lambda: (_ for _ in ()).throw(ox.OnnxExportError(f"needs onnxruntime: {ox.ONNX_EXTRA}")))
    assert "pip install -e .[onnx]" in error_line(run_cli("export-onnx", "--model", str(models["single"]), "--out", str(tmp_path / "x")))
