"""`twilbert embed` / ``Predictor.embed``: shapes and files, and the pooled vectors equal a manual
computation on each text alone (no padding): [CLS]'s final state, or the mean over its tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.inference.test_predict import TEXTS, build_models, error_line, run_cli
from twilbert.config import to_dict
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.normalize import NormalizeRules, normalize_texts
from twilbert.text.tokenizer import Tokenizer
from twilbert.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path]:
    """A random "pre-trained" checkpoint in the pretrain stage's layout (out/final + pretrain.json)."""
    spm = build_models(tmp_path_factory.getbasetemp() / "inference-models")["spm"]
    tok = Tokenizer.from_file(spm)
    cfg = ModelConfig(hidden_size=24, embedding_size=8, factorize_embeddings=True, n_encoders=2, n_heads=3).resolved(vocab_size=tok.vocab_size, max_len=10)
    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("pretrain")
    save_checkpoint(out / "final", TWilBERT(cfg), to_dict(cfg), rng=False)
    (out / "final" / "pretrain.json").write_text(json.dumps({"tokenizer_path": str(spm), "tokenizer_sha256": tok.sha256}))
    return out, spm


def manual(model_dir: Path, spm: Path, texts: list[str], pooling: str) -> np.ndarray:
    """Each text alone: normalise (default rules), [CLS] ids [SEP] cut to max_positions, encode, pool."""
    from twilbert.finetune.model import load_encoder

    enc = load_encoder(model_dir).eval()
    tok = Tokenizer.from_file(spm)
    keep = enc.config.max_positions - 2
    rows = []
    with torch.no_grad():
        for text in normalize_texts(texts, NormalizeRules()):
            ids = torch.tensor([[2, *tok.encode(text)[:keep], 3]])  # (1, T)
            h = enc.encode(ids)[0]  # (T, H)
            rows.append((h[0] if pooling == "cls" else h.mean(0)).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_api_embeddings_equal_a_manual_computation(pretrained, pooling):
    import twilbert

    out, spm = pretrained
    many = TEXTS * 3  # padded batches of mixed lengths; the long text is truncated
    got = twilbert.load(out).embed(many, pooling=pooling, batch_size=4)  # tokenizer from pretrain.json
    assert got.shape == (len(many), 24) and got.dtype == np.float32
    np.testing.assert_allclose(got, manual(out / "final", spm, many, pooling), atol=1e-5)
    if pooling == "mean":  # not the [CLS] vector
        assert not np.allclose(got, twilbert.load(out).embed(many, pooling="cls"))


def test_cli_arrow_and_npy(pretrained, tmp_path):
    out, spm = pretrained
    f = tmp_path / "tweets.tsv"
    f.write_text("ID\tTEXT\n" + "".join(f"t{i}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    arrow, npy = tmp_path / "e.arrow", tmp_path / "e.npy"
    base = ["embed", "--model", str(out / "final"), "--vocab-model", str(spm), "-i", str(f), "--text-column", "TEXT", "--params", str(tmp_path / "none.yaml")]
    r = run_cli(*base, "--id-column", "ID", "--pooling", "mean", "-o", str(arrow))
    assert r.exit_code == 0, r.output
    table = pa.ipc.open_file(str(arrow)).read_all()
    assert table.column_names == ["id", "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 24)
    assert table["id"].to_pylist() == [f"t{i}" for i in range(len(TEXTS))]
    vectors = np.array(table["embedding"].to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, manual(out / "final", spm, TEXTS, "mean"), atol=1e-5)
    r = run_cli(*base, "-o", str(npy))  # cls by default
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(npy), manual(out / "final", spm, TEXTS, "cls"), atol=1e-5)


def test_finetuned_model_embeds_with_its_own_encoder(tmp_path_factory):
    import twilbert

    models = build_models(tmp_path_factory.getbasetemp() / "inference-models")
    p = twilbert.load(models["single"])
    got = p.embed(TEXTS, pooling="cls")
    data = p.encode(TEXTS)
    with torch.no_grad():
        for i in range(len(TEXTS)):
            ids = torch.from_numpy(data.values[data.offsets[i] : data.offsets[i + 1]])[None, :]
            np.testing.assert_allclose(got[i], p.encoder.encode(ids)[0, 0].numpy(), atol=1e-5)


def test_embed_errors(pretrained, tmp_path):
    out, spm = pretrained
    f = tmp_path / "x.tsv"
    f.write_text("TEXT\nhola\n", encoding="utf-8")
    base = ["embed", "--model", str(out), "--vocab-model", str(spm), "-i", str(f), "--text-column", "TEXT", "--params", str(tmp_path / "none.yaml")]
    assert "--pooling" in error_line(run_cli(*base, "--pooling", "max", "-o", str(tmp_path / "e.npy")))
    assert ".arrow or .npy" in error_line(run_cli(*base, "-o", str(tmp_path / "e.csv")))
    assert "no column 'tweet'" in error_line(run_cli(*base, "--text-column", "tweet", "-o", str(tmp_path / "e.npy")))


def test_a_checkpoint_s_recorded_rules_win_over_params_yaml(pretrained, tmp_path):
    """pretrain.json records the rules the corpus went through (the pretrain stage writes them);
    embed and twilbert.load use those, not whatever params.yaml in the working directory says."""
    import shutil

    import twilbert

    out, spm = pretrained
    ck = tmp_path / "final"
    shutil.copytree(out / "final", ck)
    rules = NormalizeRules(lowercase=False, hashtags="keep", laughter=False).effective()
    meta = json.loads((ck / "pretrain.json").read_text())
    (ck / "pretrain.json").write_text(json.dumps({**meta, "normalize": to_dict(rules)}))
    assert twilbert.load(ck).rules == rules and twilbert.load(out).rules == NormalizeRules().effective()
    texts = ["JAJAJA #ReyesMagos HOLA @ana", "Qué BIEN"]
    assert normalize_texts(texts, rules) != normalize_texts(texts, NormalizeRules())
    f = tmp_path / "t.tsv"
    f.write_text("TEXT\n" + "".join(t + "\n" for t in texts), encoding="utf-8")
    # A params.yaml with the default rules in the working directory: ignored for this checkpoint.
    params = tmp_path / "params.yaml"
    shutil.copy(Path(__file__).resolve().parents[2] / "params.yaml", params)
    r = run_cli("embed", "--model", str(ck), "--vocab-model", str(spm), "-i", str(f), "--text-column", "TEXT",
                "--params", str(params), "-o", str(tmp_path / "e.npy"))
    assert r.exit_code == 0, r.output
    enc = twilbert.load(ck, normalize=rules)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), enc.embed(texts, pooling="cls"), atol=1e-6)
    assert not np.allclose(np.load(tmp_path / "e.npy"), twilbert.load(ck, normalize=NormalizeRules()).embed(texts, pooling="cls"))
    # A checkpoint without recorded rules says where its rules come from.
    r = run_cli("embed", "--model", str(out / "final"), "--vocab-model", str(spm), "-i", str(f), "--text-column", "TEXT",
                "--params", str(tmp_path / "none.yaml"), "-o", str(tmp_path / "d.npy"))
    assert r.exit_code == 0 and "records no normalisation rules, so the defaults gave them" in r.output


def test_embed_refuses_columns_on_stdin_and_unknown_devices(pretrained):
    out, spm = pretrained
    base = ["embed", "--model", str(out), "--vocab-model", str(spm), "-o", "x.npy"]
    assert "--aux-column: stdin has no columns" in error_line(run_cli(*base, "--aux-column", "b"))
    assert "--device: expected cpu, cuda, cuda:N, mps or auto, got 'gpu'" in error_line(run_cli(*base, "--device", "gpu"))
