"""Safe models (issue 20): a model directory is an input, so a damaged or crafted one is refused in one
line, and what predict/embed write is always finite, strict JSON.

Faults are generated over the parts of a model: every weight tensor made NaN/inf in turn, crafted
``config.json`` values (sizes, label maps, max_len) written back with matching checksums (so the
checksum passes and the content itself is what must be refused).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import twilbert
from tests.inference.test_predict import build_models, error_line, run_cli
from twilbert.config import to_dict
from twilbert.finetune.inputs import encode_texts
from twilbert.finetune.model import load_finetuned
from twilbert.inference import OutputError, jsonl_text
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import Tokenizer
from twilbert.train.checkpoint import CHECKSUMS_FILE, CONFIG_FILE, MODEL_FILE, CheckpointError, save_checkpoint
from twilbert.utils import sha256_file

LONG = " ".join(["ri to lu go ve fi cho lla gue rá té so ta ba en al es pa"] * 20)  # far past any position table


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp() / "inference-models")


@pytest.fixture(scope="module")
def pretrained(models, tmp_path_factory) -> Path:
    tok = Tokenizer.from_file(models["spm"])
    cfg = ModelConfig(hidden_size=24, embedding_size=8, factorize_embeddings=True, n_encoders=1, n_heads=3).resolved(vocab_size=tok.vocab_size, max_len=10)
    torch.manual_seed(2)
    out = tmp_path_factory.mktemp("safe-pretrain") / "final"
    save_checkpoint(out, TWilBERT(cfg), to_dict(cfg), rng=False)
    (out / "pretrain.json").write_text(json.dumps({"tokenizer_path": str(models["spm"]), "tokenizer_sha256": tok.sha256}))
    return out


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rechecksum(model_dir: Path) -> None:
    """checksums.json matching the files as they are now: the fault is in the content, not the sum."""
    path = model_dir / CHECKSUMS_FILE
    sums = json.loads(path.read_text())
    path.write_text(json.dumps({name: sha256_file(model_dir / name) for name in sums}))


def poison(model_dir: Path, tensor: str, value: float) -> None:
    weights = load_file(model_dir / MODEL_FILE)
    weights[tensor] = weights[tensor].clone()
    weights[tensor].view(-1)[0] = value
    save_file(weights, model_dir / MODEL_FILE, metadata={"format": "pt"})
    rechecksum(model_dir)


def craft(model_dir: Path, edit) -> None:
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    edit(config)
    (model_dir / CONFIG_FILE).write_text(json.dumps(config))
    rechecksum(model_dir)


# --------------------------------------------------------------------------------------------------
# non-finite weights


def test_every_poisoned_tensor_is_refused_by_load(models, tmp_path):
    names = sorted(load_file(models["single"] / MODEL_FILE))
    for i, name in enumerate(names):
        for value in (math.nan, math.inf):
            d = copy_model(models["single"], tmp_path / f"m{i}-{value}")
            poison(d, name, value)
            with pytest.raises(CheckpointError) as info:
                twilbert.load(d)
            msg = str(info.value)
            assert "\n" not in msg and "non-finite" in msg and str(d / MODEL_FILE) in msg, msg
            shutil.rmtree(d)


def test_a_nan_model_is_refused_by_predict_and_embed(models, pretrained, tmp_path):
    d = copy_model(models["single"], tmp_path / "nan")
    poison(d, sorted(load_file(d / MODEL_FILE))[0], math.nan)
    line = error_line(run_cli("predict", "--model", str(d), stdin="hola\n"))
    assert "non-finite" in line and str(d / MODEL_FILE) in line, line
    line = error_line(run_cli("embed", "--model", str(d), "--output", str(tmp_path / "e.npy"), stdin="hola\n"))
    assert "non-finite" in line and not (tmp_path / "e.npy").exists(), line

    p = copy_model(pretrained, tmp_path / "pre-nan")
    poison(p, sorted(load_file(p / MODEL_FILE))[0], math.inf)
    line = error_line(run_cli("embed", "--model", str(p), "--output", str(tmp_path / "p.npy"), stdin="hola\n"))
    assert "non-finite" in line and str(p / MODEL_FILE) in line, line
    with pytest.raises(CheckpointError, match="non-finite"):
        twilbert.load(p)


def test_the_pyfunc_refuses_a_nan_model(models, tmp_path):
    from types import SimpleNamespace

    from pipeline.pyfunc import ARTIFACT, TWilBERTPyfunc

    d = copy_model(models["single"], tmp_path / "nan")
    poison(d, sorted(load_file(d / MODEL_FILE))[-1], math.nan)
    with pytest.raises(CheckpointError, match="non-finite"):
        TWilBERTPyfunc().load_context(SimpleNamespace(artifacts={ARTIFACT: str(d)}))


# --------------------------------------------------------------------------------------------------
# strict outputs


def test_outputs_are_strict_json_or_one_line_error():
    assert json.loads(jsonl_text([{"value": 0.5}], ids=["a"])) == {"id": "a", "value": 0.5}
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(OutputError) as info:
            jsonl_text([{"value": 1.0}, {"probabilities": {"N": bad}}])
        assert "row 1" in str(info.value) and "\n" not in str(info.value)


def test_a_non_finite_output_is_an_error_not_nan(models):
    predictor = twilbert.load(models["single"])
    with torch.no_grad():
        predictor.classifier.head.bias.fill_(math.nan)  # after load: what the refusal above can no longer catch
    with pytest.raises(OutputError, match="non-finite output"):
        predictor.predict(["hola", "adiós"])
    with torch.no_grad():
        next(predictor.encoder.parameters()).fill_(math.inf)  # the first embedding table
    with pytest.raises(OutputError, match="non-finite embedding"):
        predictor.embed(["hola"])


def test_predict_output_file_is_strict_json(models, tmp_path):
    out = tmp_path / "p.jsonl"
    res = run_cli("predict", "--model", str(models["multi"]), "--output", str(out), stdin="hola\nadiós\n")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}")) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and list(tmp_path.iterdir()) == [out]  # no temp file left beside it


# --------------------------------------------------------------------------------------------------
# long inputs and crafted max_len


def reference(model_dir: Path, texts: list[str], max_len: int) -> np.ndarray:
    """Softmax of each text alone, cut to ``max_len`` pieces by the training encoder."""
    ft = load_finetuned(model_dir)
    tok = Tokenizer.from_file(ft.tokenizer_path)
    pred = twilbert.load(model_dir)
    data = encode_texts(tok, texts, None, max_len=max_len, rules=pred.rules)
    out = []
    with torch.no_grad():
        for i in range(len(texts)):
            ids = torch.from_numpy(data.values[data.offsets[i] : data.offsets[i + 1]])[None]  # (1, T)
            out.append(torch.softmax(ft.model(ids, torch.zeros_like(ids), None), -1)[0].numpy())
    return np.stack(out)


@pytest.mark.parametrize("max_len", [None, "table"])
def test_input_past_the_position_table_is_truncated(models, tmp_path, max_len):
    """The stored max_len (12), or the longest the position table takes: a long input is cut, as in training."""
    d = copy_model(models["single"], tmp_path / "long")
    positions = json.loads((d / CONFIG_FILE).read_text())["model"]["max_positions"]
    if max_len == "table":
        craft(d, lambda c: c.update(max_len=positions - 2))
    cut = json.loads((d / CONFIG_FILE).read_text())["max_len"]
    texts = [LONG, "hola", LONG[: len(LONG) // 3]]
    got = twilbert.load(d).predict(texts)
    probs = np.array([[r["probabilities"][k] for k in sorted(r["probabilities"])] for r in got])
    np.testing.assert_allclose(probs, reference(d, texts, cut), atol=1e-5)
    res = run_cli("predict", "--model", str(d), stdin=LONG + "\n")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output


def test_a_predictor_never_reads_past_the_position_table(models, pretrained):
    predictor = twilbert.load(models["single"])
    predictor.max_len = 10**9  # a Predictor built by hand: encode still cuts to the table
    positions = predictor.encoder.config.max_positions
    assert int(predictor.encode([LONG]).lengths.max()) == positions
    assert len(predictor.predict([LONG])) == 1
    pair = twilbert.load(models["pair"])
    assert len(pair.predict([LONG], [LONG])) == 1
    vectors = twilbert.load(pretrained).embed([LONG, "hola"], [LONG, LONG])
    assert vectors.shape[0] == 2 and np.isfinite(vectors).all()


# --------------------------------------------------------------------------------------------------
# crafted config.json


def _set(path: str, value):
    def edit(config: dict) -> None:
        node = config
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


CRAFTED = {
    "vocab_size int": (_set("model.vocab_size", 10**12), "vocab_size"),
    "vocab_size float": (_set("model.vocab_size", 1e12), "vocab_size"),
    "hidden_size": (_set("model.hidden_size", 2**40), "hidden_size"),
    "n_encoders": (_set("model.n_encoders", 10**6), "n_encoders"),
    "max_positions": (_set("model.max_positions", 10**9), "max_positions"),
    "vocab_size string": (_set("model.vocab_size", "many"), "vocab_size"),
    "label past the head": (_set("labels.P", 7), "labels.P"),
    "negative label": (_set("labels.N", -1), "labels.N"),
    "label not an int": (_set("labels.N", "0"), "labels.N"),
    "two labels one output": (_set("labels.P", 0), "labels"),
    "n_outputs": (_set("head.n_outputs", "3"), "head.n_outputs"),
    "max_len zero": (_set("max_len", 0), "max_len"),
    "max_len text": (_set("max_len", "long"), "max_len"),
    "max_len float": (_set("max_len", 1e9), "max_len"),
    "max_len past the table": (_set("max_len", 10**9), "max_len"),
    "max_len one past": (_set("max_len", 26), "max_len"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_config_values_are_one_line_errors(models, tmp_path, case):
    edit, key = CRAFTED[case]
    d = copy_model(models["single"], tmp_path / "crafted")
    craft(d, edit)
    line = error_line(run_cli("predict", "--model", str(d), stdin="hola\n"))
    assert str(d / CONFIG_FILE) in line and key in line, line
