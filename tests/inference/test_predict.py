"""`twilbert predict` and `twilbert.load(...).predict`: same outputs, in input order, from the model's
own normalisation and tokenizer; pair models; multi-label and regression formats; one-line errors.

Tiny models are fine-tuned here (one epoch, random 1-layer encoder): predictions are not meant to be
good, only to be computed right. The reference computation runs every text alone (no batching, no
padding, no length sorting) through ``load_finetuned`` + ``encode_texts``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from tests.finetune.test_finetune_data import make_tokenizer
from tests.finetune.test_finetune_e2e import CPU, LABELS, make_task, tiny_model_config, write_task
from twilbert.finetune.config import FinetuningConfig
from twilbert.finetune.inputs import encode_texts
from twilbert.finetune.model import load_finetuned, probabilities
from twilbert.finetune.train import finetune_task
from twilbert.model.twilbert import TWilBERT
from twilbert.text.normalize import EffectiveRules, NormalizeRules, normalize_texts
from twilbert.text.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[2]
KINDS = ("single", "pair", "multi", "reg")


def build_models(root: Path) -> dict[str, Path]:
    """Tiny fine-tuned models of every kind under ``root`` (built once per test session)."""
    out = {k: root / f"model-{k}" for k in KINDS}
    out["spm"] = root / "spm.model"
    if all((p / "checksums.json").is_file() for k, p in out.items() if k != "spm"):
        return out
    root.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(root)
    cats = {lab: i for i, lab in enumerate(LABELS)}
    specs = {
        "single": (dict(categories=cats), "cross_entropy", "single"),
        "pair": (dict(categories=cats, aux_header="TARGET"), "cross_entropy", "single"),
        "multi": (dict(categories=cats, type="multi_label", threshold=0.45), "bce", "multi"),
        "reg": (dict(type="regression", eval_metric="pearson"), "mse", "regression"),
    }
    for name, (kw, loss, kind) in specs.items():
        write_task(root / name, sizes=(16, 6, 6), pair=name == "pair", kind=kind)
        mc = tiny_model_config(tok)
        torch.manual_seed(0)
        finetune_task(
            name, make_task(root / name, **kw), FinetuningConfig(epochs=1, batch_size=8, max_len=12, loss=loss, lr=1e-3),
            tokenizer_path=tok, rules=NormalizeRules(), model_out=out[name], report_out=root / f"report-{name}",
            encoder_factory=lambda: TWilBERT(mc), impl=CPU, progress=False,
        )
    return out


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp() / "inference-models")


TEXTS = [
    "ca sa pe lo bien",
    "@ana mira esto https://t.co/abc JAJAJAJA",
    "",
    "ri to lu go ve fi cho lla gue rá té so ta ba en al es pa ri to lu go ve fi cho lla que",
    "ja",
    "#ReyesMagos llegan ya 😂😂😂😂",
]


def reference(model_dir: Path, texts, aux=None) -> np.ndarray:
    """Probabilities computed one text at a time: no batch, no padding, no sorting, no mask."""
    ft = load_finetuned(model_dir)
    cfg = ft.config
    rules = EffectiveRules(**cfg["normalize"])
    tok = Tokenizer.from_file(ft.tokenizer_path)
    rows = []
    with torch.no_grad():
        for i in range(len(texts)):
            enc = encode_texts(tok, texts[i : i + 1], None if aux is None else aux[i : i + 1], max_len=cfg["max_len"], rules=rules)
            ids = torch.from_numpy(enc.values)[None, :]  # (1, T)
            types = (torch.arange(ids.shape[1]) >= int(enc.len_a[0])).long()[None, :]  # (1, T)
            rows.append(probabilities(ft.model(ids, types, None), cfg["task_type"]).numpy()[0])
    return np.stack(rows)


def run_cli(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, list(args), input=stdin)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------


def test_stdin_cli_equals_api_and_per_text_reference(models):
    import twilbert

    res = run_cli("predict", "--model", str(models["single"]), stdin="\n".join(TEXTS) + "\n")
    assert res.exit_code == 0, res.output
    cli = json_lines(res.stdout)
    api = twilbert.load(models["single"]).predict(TEXTS, batch_size=4)
    assert cli == api  # identical dicts, input order
    ref = reference(models["single"], TEXTS)  # (N, C)
    got = np.array([[row["probabilities"][lab] for lab in LABELS] for row in api])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert [row["label"] for row in api] == [LABELS[j] for j in ref.argmax(1)]
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_batch_size_and_order_do_not_change_results(models):
    import twilbert

    p = twilbert.load(models["single"])
    many = TEXTS * 7  # several length buckets, duplicates far apart
    a = p.outputs(many, batch_size=1)
    b = p.outputs(many, batch_size=5)
    c = p.outputs(many[::-1], batch_size=64)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, c, atol=1e-5)
    np.testing.assert_allclose(a[: len(TEXTS)], a[len(TEXTS) : 2 * len(TEXTS)], atol=1e-6)


def test_uses_the_models_own_normalisation(models):
    import twilbert

    cfg = json.loads((models["single"] / "config.json").read_text())
    raw = ["@ana mira https://t.co/abc JAJAJAJA #ReyesMagos"]
    normalised = normalize_texts(raw, EffectiveRules(**cfg["normalize"]))
    assert normalised[0] != raw[0]
    p = twilbert.load(models["single"])
    np.testing.assert_array_equal(p.encode(raw).values, p.encode(normalised).values)
    unnormalised = twilbert.load(models["single"], normalize=False)
    assert not np.array_equal(unnormalised.encode(raw).values, p.encode(raw).values)


def test_tsv_and_jsonl_inputs_with_ids(models, tmp_path):
    tsv = tmp_path / "in.tsv"
    tsv.write_text("id\ttweet\n" + "".join(f"x{i}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"tweet": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    a = run_cli("predict", "-m", str(models["single"]), "-i", str(tsv), "--text-column", "tweet", "--id-column", "id", "-o", str(out))
    assert a.exit_code == 0, a.output
    b = run_cli("predict", "-m", str(models["single"]), "-i", str(jsonl), "--text-column", "tweet")
    assert b.exit_code == 0, b.output
    from_tsv, from_jsonl = json_lines(out.read_text(encoding="utf-8")), json_lines(b.stdout)
    assert [r.pop("id") for r in from_tsv] == [f"x{i}" for i in range(len(TEXTS))]
    assert from_tsv == from_jsonl


def test_pair_model_needs_and_uses_aux(models, tmp_path):
    import twilbert

    firsts, seconds = TEXTS[:4], TEXTS[2:6]
    f = tmp_path / "pairs.tsv"
    f.write_text("text\treply\n" + "".join(f"{a}\t{b}\n" for a, b in zip(firsts, seconds)), encoding="utf-8")
    res = run_cli("predict", "-m", str(models["pair"]), "-i", str(f), "--aux-column", "reply")
    assert res.exit_code == 0, res.output
    got = np.array([[r["probabilities"][lab] for lab in LABELS] for r in json_lines(res.stdout)])
    np.testing.assert_allclose(got, reference(models["pair"], firsts, seconds), atol=1e-5)
    assert "second texts" in error_line(run_cli("predict", "-m", str(models["pair"]), "-i", str(f)))
    assert "second texts" in error_line(run_cli("predict", "-m", str(models["pair"]), stdin="hola\n"))
    with pytest.raises(twilbert.inference.InputError, match="text-pair"):
        twilbert.load(models["pair"]).predict(firsts)
    with pytest.raises(twilbert.inference.InputError, match="single-text"):
        twilbert.load(models["single"]).predict(firsts, aux=seconds)


def test_multi_label_and_regression_outputs(models):
    import twilbert

    multi = twilbert.load(models["multi"]).predict(TEXTS)
    ref = reference(models["multi"], TEXTS)  # sigmoids
    for row, probs in zip(multi, ref):
        assert row["labels"] == [lab for lab, p in zip(LABELS, probs) if p >= 0.45]  # the task's threshold
        np.testing.assert_allclose([row["probabilities"][lab] for lab in LABELS], probs, atol=1e-5)
    reg = twilbert.load(models["reg"]).predict(TEXTS)
    assert all(set(r) == {"value"} for r in reg)
    np.testing.assert_allclose([r["value"] for r in reg], reference(models["reg"], TEXTS), atol=1e-5)


def test_bad_inputs_are_one_line_errors(models, tmp_path):
    m = str(models["single"])
    good = tmp_path / "good.tsv"
    good.write_text("id\ttext\n1\thola\n", encoding="utf-8")
    assert "no column 'tweet'" in error_line(run_cli("predict", "-m", m, "-i", str(good), "--text-column", "tweet"))
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    assert "empty" in error_line(run_cli("predict", "-m", m, "-i", str(empty)))
    header = tmp_path / "header.tsv"
    header.write_text("text\n", encoding="utf-8")
    assert "no rows" in error_line(run_cli("predict", "-m", m, "-i", str(header)))
    holes = tmp_path / "holes.jsonl"
    holes.write_text('{"text": "hola"}\n{"other": "x"}\n{"text": null}\n', encoding="utf-8")
    assert "line(s) 2, 3" in error_line(run_cli("predict", "-m", m, "-i", str(holes)))
    assert "no input texts" in error_line(run_cli("predict", "-m", m, stdin=""))
    assert "no such file" in error_line(run_cli("predict", "-m", m, "-i", str(tmp_path / "nope.tsv")))
    assert "config.json" in error_line(run_cli("predict", "-m", str(tmp_path)))


def test_import_twilbert_stays_light():
    code = "import sys, twilbert; assert callable(twilbert.load); print(sorted(m for m in ('torch', 'polars', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_compiled_forward_equals_eager(models):
    """compile=True (torch.compile, dynamic shapes) gives the eager outputs to float rounding, for
    predictions and embeddings, across batches of several shapes (with and without a mask)."""
    import twilbert

    eager = twilbert.load(models["single"])
    compiled = twilbert.load(models["single"], compile=True)
    texts = TEXTS * 3
    np.testing.assert_allclose(compiled.outputs(texts, batch_size=4), eager.outputs(texts, batch_size=4), atol=1e-5)
    np.testing.assert_allclose(compiled.embed(texts, pooling="mean", batch_size=5), eager.embed(texts, pooling="mean", batch_size=5), atol=1e-5)
    assert set(compiled._compiled) == {"classifier", "encode"} and not eager._compiled
    result = run_cli("predict", "--model", str(models["single"]), "--compile", stdin="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose([[r["probabilities"][lab] for lab in LABELS] for r in json_lines(result.stdout)],
                               reference(models["single"], TEXTS), atol=1e-5)


def test_bf16_precision_runs_linears_in_bf16_and_stays_close_to_fp32(models):
    """precision="bf16": the matrix products run in bfloat16 (a forward hook sees bf16 outputs), the
    returned probabilities / embeddings are float32 and within bf16 rounding of the fp32 ones; the CLI
    takes --precision, and a bad value is a one-line error."""
    import twilbert

    fp32 = twilbert.load(models["single"])
    bf16 = twilbert.load(models["single"], precision="bf16")
    seen: list[torch.dtype] = []
    linear = next(m for m in bf16.classifier.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    texts = TEXTS * 3
    got = bf16.outputs(texts, batch_size=4)
    handle.remove()
    assert seen and set(seen) == {torch.bfloat16}
    want = fp32.outputs(texts, batch_size=4)
    assert got.dtype == np.float32
    p_got = probabilities(torch.from_numpy(got), "single_label").numpy()
    p_want = probabilities(torch.from_numpy(want), "single_label").numpy()
    np.testing.assert_allclose(p_got, p_want, atol=3e-2)
    emb, emb32 = bf16.embed(texts, pooling="mean", batch_size=5), fp32.embed(texts, pooling="mean", batch_size=5)
    assert emb.dtype == np.float32
    cos = (emb * emb32).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(emb32, axis=1))
    assert cos.min() > 0.99, cos
    result = run_cli("predict", "--model", str(models["single"]), "--precision", "bf16", stdin="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.output
    rows = json_lines(result.stdout)
    np.testing.assert_allclose([[r["probabilities"][lab] for lab in LABELS] for r in rows], reference(models["single"], TEXTS), atol=3e-2)
    assert "precision must be one of" in error_line(run_cli("predict", "--model", str(models["single"]), "--precision", "fp8", stdin="hola\n"))
    from twilbert.inference import InputError

    with pytest.raises(InputError, match="precision"):
        twilbert.load(models["single"], precision="half")
