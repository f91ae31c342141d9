"""``precision="int8"`` (twilbert/quantize.py): the encoder's linears become dynamic int8 modules,
probabilities stay within ``INT8_PROB_TOL`` of fp32 (the [CLS]-only last layer included), embeddings
keep their direction, the CLI takes ``--precision int8``, and a device without the engine is refused
in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.finetune.test_finetune_e2e import LABELS
from tests.inference.test_predict import TEXTS, error_line, json_lines, models, reference, run_cli  # noqa: F401
from twilbert.finetune.model import probabilities
from twilbert.inference import InputError, Predictor
from twilbert.quantize import INT8_PROB_TOL, int8_problem, is_int8, quantize_int8, quantized_names


def test_int8_replaces_the_encoder_linears_and_stays_within_tolerance(models):
    import twilbert

    fp32 = twilbert.load(models["single"])
    int8 = twilbert.load(models["single"], precision="int8")
    assert quantized_names(int8.encoder) == []  # every encoder-block linear is int8 now ...
    assert sum(is_int8(m) for m in int8.encoder.modules()) == len(quantized_names(fp32.encoder)) > 0
    assert isinstance(int8.classifier.head, torch.nn.Linear)  # ... the head stays fp32
    texts = TEXTS * 3
    got, want = int8.outputs(texts, batch_size=4), fp32.outputs(texts, batch_size=4)
    assert got.dtype == np.float32
    p_got = probabilities(torch.from_numpy(got), "single_label").numpy()
    p_want = probabilities(torch.from_numpy(want), "single_label").numpy()
    np.testing.assert_allclose(p_got, p_want, atol=INT8_PROB_TOL)
    assert np.abs(p_got - p_want).max() > 0  # it is really another computation
    for pooling in ("cls", "mean"):  # cls: the last layer's first_only path with an int8 qkv
        emb, emb32 = int8.embed(texts, pooling=pooling, batch_size=5), fp32.embed(texts, pooling=pooling, batch_size=5)
        cos = (emb * emb32).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(emb32, axis=1))
        assert cos.min() > 0.98, (pooling, cos)


def test_int8_first_only_equals_the_full_last_layer(models):
    """With an int8 qkv the last layer computes every query and keeps the first: the same [CLS] vector,
    up to the activation scale (dynamic quantisation takes it from the rows a linear sees: T or 1)."""
    import twilbert

    enc = twilbert.load(models["single"], precision="int8").encoder
    ids = torch.randint(5, enc.config.vocab_size, (3, 9))
    with torch.inference_mode():
        full = enc.encode(ids, torch.zeros_like(ids), None)[:, :1]  # (3, 1, H)
        first = enc.encode(ids, torch.zeros_like(ids), None, first_only=True)  # (3, 1, H)
    torch.testing.assert_close(first, full, atol=5e-3, rtol=0)


def test_quantize_is_idempotent_and_refuses_a_model_without_encoder_linears(models):
    import twilbert

    p = twilbert.load(models["single"], precision="int8")
    n = sum(is_int8(m) for m in p.encoder.modules())
    quantize_int8(p.encoder)
    Predictor(encoder=p.encoder, tokenizer=p.tokenizer, rules=p.rules, max_len=p.max_len, precision="int8")
    assert sum(is_int8(m) for m in p.encoder.modules()) == n
    with pytest.raises(ValueError, match="no encoder linears"):
        quantize_int8(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_int8_cli_and_refusals(models, monkeypatch):
    result = run_cli("predict", "--model", str(models["single"]), "--precision", "int8", stdin="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.output
    rows = json_lines(result.stdout)
    np.testing.assert_allclose([[r["probabilities"][lab] for lab in LABELS] for r in rows], reference(models["single"], TEXTS),
                               atol=INT8_PROB_TOL)
    assert "CPU only" in int8_problem(torch.device("meta"))
    assert int8_problem(torch.device("cpu")) is None
    import twilbert.quantize

    monkeypatch.setattr(twilbert.quantize, "int8_problem", lambda device: "precision int8: no quantized CPU engine")
    assert "no quantized CPU engine" in error_line(run_cli("predict", "--model", str(models["single"]), "--precision", "int8", stdin="hola\n"))
    import twilbert as tw

    with pytest.raises(InputError, match="no quantized CPU engine"):
        tw.load(models["single"], precision="int8")


def test_activation_range_follows_the_cpu(models, monkeypatch):
    """8-bit activations only where AVX512-VNNI sums into 32 bits; they are closer to fp32 than 7-bit ones."""
    import twilbert
    import twilbert.quantize as q
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    fp32 = twilbert.load(models["single"])
    want = fp32.outputs(TEXTS * 3, batch_size=4)
    err, kinds = {}, {}
    for vnni in (False, True):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda vnni=vnni: {"avx512_vnni": vnni})
        assert q.full_range() is vnni
        p = twilbert.load(models["single"], precision="int8")
        kinds[vnni] = {type(m) for m in p.encoder.modules() if q.is_int8(m)}
        err[vnni] = np.abs(p.outputs(TEXTS * 3, batch_size=4) - want).mean()
    assert kinds[False] == {DynamicLinear}  # torch's own module: 7-bit activations
    assert kinds[True] == {q._full_range_linear()} and q._full_range_linear() is not DynamicLinear
    monkeypatch.undo()
    if not q.full_range():
        pytest.skip("the accuracy comparison needs a CPU with AVX512-VNNI (8 bits could saturate on AVX2)")
    assert 0 < err[True] < err[False], err
