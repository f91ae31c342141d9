"""User mistakes on the command line end as one line `error: ...` naming the file, line, key or option
(exit status 2), never as a Python traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.inference.test_predict import build_models
from tests.train.test_pretrain_fixtures import build_inputs, write_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp() / "inference-models")  # shared with tests/inference


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return build_inputs(tmp_path_factory.mktemp("cli-errors"))


def cli(*args: str, stdin: str | bytes | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def error_line(result, *, after_progress: bool = False) -> str:
    """The single `error: ...` line of a failed command (and no traceback anywhere). With
    ``after_progress`` the command may have printed progress lines before it (the error comes last)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert after_progress or len(lines) == 1, result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    return lines[-1]


# --------------------------------------------------------------------------------------------------
# pretrain / evaluate / pairs / vocab


def test_pretrain_with_a_missing_shards_dir(inputs, tmp_path):
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"], training={"max_steps": 1})
    missing = tmp_path / "no-shards"
    line = error_line(cli("pretrain", "--params", params, "--shards-dir", missing, "--vocab-model", inputs["tokenizer"],
                          "--out-dir", tmp_path / "out", "--reports-dir", tmp_path / "reports"))
    assert str(missing / "manifest.json") in line and "does not exist" in line


def test_pretrain_non_finite_loss_is_the_one_line_hint(inputs, tmp_path, monkeypatch):
    """Every step's loss is inf (the embeddings are poisoned): training stops after max_bad_steps
    with TrainingDivergedError, whose message says what to change."""
    import twilbert.model.embeddings as embeddings

    forward = embeddings.Embeddings.forward
    monkeypatch.setattr(embeddings.Embeddings, "forward", lambda self, *a, **kw: forward(self, *a, **kw) * float("inf"))
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"], training={"max_steps": 4}, run={"max_bad_steps": 2})
    line = error_line(cli("pretrain", "--params", params, "--shards-dir", inputs["shards"], "--vocab-model", inputs["tokenizer"],
                          "--out-dir", tmp_path / "out", "--reports-dir", tmp_path / "reports"), after_progress=True)
    assert "2 consecutive optimizer steps had a NaN/inf loss" in line and "lower training.lr" in line


def _fake_pretrained(tmp_path: Path) -> tuple[Path, Path]:
    """A model dir and a vocab file that pass evaluate's existence checks (nothing reads them before the shards)."""
    model_dir = tmp_path / "final"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    vocab = tmp_path / "spm.model"
    vocab.write_bytes(b"x")
    return model_dir, vocab


def test_evaluate_with_a_missing_shards_dir(inputs, tmp_path):
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"])
    model_dir, vocab = _fake_pretrained(tmp_path)
    missing = tmp_path / "no-shards"
    line = error_line(cli("evaluate", "--params", params, "--model-dir", model_dir, "--vocab-model", vocab,
                          "--shards-dir", missing, "--out-dir", tmp_path / "eval"))
    assert str(missing / "manifest.json") in line and "run the pairs stage first" in line
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("split", ["tset", "train"])
def test_evaluate_accepts_only_held_out_splits(tmp_path, split):
    line = error_line(cli("evaluate", "--params", tmp_path / "params.yaml", "--split", split))
    assert line == f"error: --split: expected test or valid (a held-out split), got '{split}'"


def test_evaluate_with_a_missing_vocab_model(inputs, tmp_path):
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"])
    model_dir, _ = _fake_pretrained(tmp_path)
    line = error_line(cli("evaluate", "--params", params, "--model-dir", model_dir, "--vocab-model", tmp_path / "nov.model",
                          "--shards-dir", inputs["shards"], "--out-dir", tmp_path / "eval"))
    assert f"{tmp_path / 'nov.model'}: no vocabulary model" in line


def test_pairs_with_a_missing_vocab_model(inputs, tmp_path):
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"])
    line = error_line(cli("pairs", "--params", params, "--vocab-model", tmp_path / "nov.model",
                          "--out-dir", tmp_path / "pairs", "--stats-path", tmp_path / "stats.json"))
    assert f"{tmp_path / 'nov.model'}: no vocabulary model" in line
    assert not (tmp_path / "pairs").exists()


def test_a_vocab_model_that_is_not_sentencepiece_is_named(inputs, tmp_path):
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"])
    bogus = tmp_path / "spm.model"
    bogus.write_text("not a model\n")
    # (no normalized dir either: the vocab model, checked first, is the one named, as in a fresh clone)
    line = error_line(cli("pairs", "--params", params, "--vocab-model", bogus, "--normalized-dir", tmp_path / "nonorm",
                          "--out-dir", tmp_path / "pairs", "--stats-path", tmp_path / "stats.json"))
    assert line.startswith(f"error: {bogus}: not a SentencePiece model")


def test_pretrain_with_shards_of_another_tokenizer(inputs, tmp_path):
    """The tokenizer is a valid SentencePiece model with our ids, but not the one the shards were
    built with: one line saying so (a ValueError traceback before)."""
    from twilbert.text.vocab import VocabConfig, train_vocab

    other = train_vocab([f"hola que tal {i} user url" for i in range(200)] + ["otra cosa distinta"] * 50,
                        VocabConfig(vocab_size=40, input_sentence_size=0), tmp_path / "other", ["user", "url"])
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"], training={"max_steps": 1})
    line = error_line(cli("pretrain", "--params", params, "--shards-dir", inputs["shards"], "--vocab-model", other,
                          "--out-dir", tmp_path / "out", "--reports-dir", tmp_path / "reports"), after_progress=True)
    assert "shards were built with tokenizer" in line and "rebuild the pairs stage" in line


@pytest.mark.parametrize("command", ["vocab", "pairs"])
def test_a_missing_normalized_dir_is_named(inputs, tmp_path, command):
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"])
    missing = tmp_path / "nonorm"
    extra = ["--vocab-model", str(inputs["tokenizer"])] if command == "pairs" else []
    args = (command, "--params", params, "--normalized-dir", missing, "--out-dir", tmp_path / "out", "--stats-path", tmp_path / "s.json", *extra)
    line = error_line(cli(*args))
    assert f"{missing}: no such directory" in line and "corpus is empty" not in line
    missing.mkdir()  # there, but without the normalize stage's files
    line = error_line(cli(*args))
    assert line == f"error: {missing}: neither pairs.parquet nor tweets.parquet exists (run the normalize stage first)"


# --------------------------------------------------------------------------------------------------
# predict


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("gpu", "--device: expected cpu, cuda, cuda:N, mps or auto, got 'gpu'"),
        ("cuda:x", "--device: expected cpu, cuda, cuda:N, mps or auto, got 'cuda:x'"),
        ("cuda:99", "--device: cuda:99 requested but"),
    ],
)
def test_predict_device_is_validated(models, device, fragment):
    line = error_line(cli("predict", "-m", models["single"], "--device", device, stdin="hola\n"))
    assert fragment in line


def test_predict_invalid_utf8_on_stdin_names_the_line(models):
    line = error_line(cli("predict", "-m", models["single"], stdin=b"bien\nhola \xff\n"))
    assert line.startswith("error: stdin: line 2: invalid UTF-8 at byte 6 (0xff")


def test_predict_invalid_utf8_on_a_real_stdin(models):
    """A real process's stdin decodes with surrogateescape (the reported 72-line UnicodeEncodeError)."""
    env = {**os.environ, "PYTHONUTF8": "1"}
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "predict", "-m", str(models["single"])], input=b"hola \xff\n",
                         capture_output=True, cwd=REPO, env=env, timeout=300)
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2, err
    assert "Traceback" not in err and out.stdout == b""
    assert err.strip() == "error: stdin: line 1: invalid UTF-8 at byte 6 (0xff; file offset 5)"


def test_predict_tsv_row_with_an_extra_field_names_the_line(models, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\ttext\n1\thola\n2\tque\ttal\n3\tbien\n", encoding="utf-8")
    line = error_line(cli("predict", "-m", models["single"], "-i", bad))
    assert line.startswith(f"error: {bad}: line 3 has 3 fields, the header has 2")


def test_predict_tsv_file_with_invalid_utf8_names_the_line(models, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"text\nhola\nque \xfe tal\n")
    line = error_line(cli("predict", "-m", models["single"], "-i", bad))
    assert line.startswith(f"error: {bad}: line 3: invalid UTF-8 at byte 5 (0xfe")


def test_predict_jsonl_file_with_a_broken_line_names_it(models, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hola"}\n{"text": "que\n{"text": "tal"}\n', encoding="utf-8")
    line = error_line(cli("predict", "-m", models["single"], "-i", bad))
    assert line.startswith(f"error: {bad}: line 2: not valid JSON")


@pytest.mark.parametrize("option", ["--aux-column", "--id-column"])
def test_predict_column_options_are_refused_on_stdin(models, option):
    line = error_line(cli("predict", "-m", models["single"], option, "x", stdin="hola\n"))
    assert line == f"error: {option}: stdin has no columns (one text per line); use --input FILE with a header"


def test_predict_aux_column_on_a_single_text_model_file_is_refused_too(models, tmp_path):
    f = tmp_path / "two.tsv"
    f.write_text("text\tx\nhola\tque\n", encoding="utf-8")
    line = error_line(cli("predict", "-m", models["single"], "-i", f, "--aux-column", "x"))
    assert "a single-text model: it takes no second text" in line
