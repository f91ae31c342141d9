"""End-to-end tiny fine-tunes (CPU, random or tiny "pre-trained" encoders): every output file is
written, the best-dev weights are the ones saved, and the saved directory alone reproduces the test
predictions."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tests.finetune.test_finetune_data import make_lines, make_tokenizer
from twilbert.config import to_dict
from twilbert.finetune.config import FinetuningConfig, TaskConfig
from twilbert.finetune.inputs import encode_texts
from twilbert.finetune.metrics import compute_metrics
from twilbert.finetune.model import load_finetuned, probabilities
from twilbert.finetune.train import finetune_task, predict_batches
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.normalize import EffectiveRules, NormalizeRules
from twilbert.text.tokenizer import Tokenizer
from twilbert.train.checkpoint import save_checkpoint
from twilbert.train.config import ImplConfig

MODEL_FILES = ("model.safetensors", "config.json", "spm.model", "checksums.json")
REPORT_FILES = ("metrics.json", "class_report.json", "class_report.md", "confusion.png", "confusion.csv", "predictions.tsv", "history.csv",
                "rejects.tsv")
CPU = ImplConfig(device="cpu", tokenizer_threads=1)
LABELS = ["N", "NEU", "P"]
CUES = {"N": "ja", "NEU": "que", "P": "bien"}  # a word that makes the label learnable


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("vocab"))


def tiny_model_config(tok_path: Path) -> ModelConfig:
    vocab = Tokenizer.from_file(tok_path).vocab_size
    return ModelConfig(hidden_size=16, embedding_size=16, n_encoders=1, n_heads=2).resolved(vocab_size=vocab, max_len=12)


def write_task(root: Path, sizes=(36, 15, 12), pair=False, kind="single", seed=0) -> None:
    """A generated task: texts from a made-up lexicon with a cue word per label; ids unique."""
    rng = np.random.default_rng(seed)
    lines = make_lines(sum(sizes) * 2, seed + 1)
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in zip(("train", "dev", "test"), sizes):
        header = ["ID", "TEXT"] + (["TARGET"] if pair else []) + ["CLASS"]
        rows = ["\t".join(header)]
        for i in range(n):
            if kind == "regression":
                y = float(rng.uniform(-1, 1))
                label = f"{y:.3f}"
                text = lines[k] + (" bien" if y > 0 else " ja")
            elif kind == "multi":
                present = [lab for lab in LABELS if rng.random() < 0.4]
                label = "|".join(present)
                text = lines[k] + "".join(f" {CUES[lab]}" for lab in present)
            else:
                lab = LABELS[i % 3]
                label = lab
                text = f"{lines[k]} {CUES[lab]}"
            fields = [f"{split}-{i}", text] + ([lines[k + 1]] if pair else []) + [label]
            rows.append("\t".join(fields))
            k += 2
        (root / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def make_task(root: Path, **kw) -> TaskConfig:
    return TaskConfig(train_file=str(root / "train.tsv"), dev_file=str(root / "dev.tsv"), test_file=str(root / "test.tsv"), **kw)


def read_tsv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)


def reload_and_predict(model_dir: Path, texts, aux) -> tuple[np.ndarray, dict]:
    """What the later `predict` stage does, from the model directory alone."""
    ft = load_finetuned(model_dir)
    cfg = ft.config
    rules = EffectiveRules(**cfg["normalize"]) if cfg["normalize"] is not None else None
    enc = encode_texts(Tokenizer.from_file(ft.tokenizer_path), texts, aux, max_len=cfg["max_len"], rules=rules)
    out = predict_batches(ft.model, enc, batch_size=5)
    return probabilities(torch.from_numpy(out), cfg["task_type"]).numpy(), cfg


def check_outputs(model_out: Path, report_out: Path) -> None:
    for f in MODEL_FILES:
        assert (model_out / f).is_file(), f
    for f in REPORT_FILES:
        assert (report_out / f).is_file() and (report_out / f).stat().st_size > 0, f
    assert (report_out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_text_finetune_from_pretrained_dir(tmp_path, tok_path):
    write_task(tmp_path / "task")
    task = make_task(tmp_path / "task", categories={lab: i for i, lab in enumerate(LABELS)}, class_weights="auto")
    torch.manual_seed(0)
    mc = tiny_model_config(tok_path)
    save_checkpoint(tmp_path / "pretrained", TWilBERT(mc), {"model": to_dict(mc)}, rng=False)
    sha = Tokenizer.from_file(tok_path).sha256  # the vocabulary it was "pre-trained" with: accepted
    (tmp_path / "pretrained" / "pretrain.json").write_text(json.dumps({"tokenizer_sha256": sha}))
    logged = []
    ft = FinetuningConfig(epochs=3, batch_size=8, max_len=12, lr=3e-3, warmup_steps=2, accum_iters=2, collapse_mode="concat")
    res = finetune_task(
        "senti", task, ft, tokenizer_path=tok_path, rules=NormalizeRules(), model_out=tmp_path / "model",
        report_out=tmp_path / "reports", pretrained_dir=tmp_path / "pretrained", impl=replace(CPU, pred_batch_size=7),
        log_fn=lambda m, e: logged.append((e, m)), progress=False,
    )
    model_out, report_out = tmp_path / "model", tmp_path / "reports"
    check_outputs(model_out, report_out)

    # log_fn: once per epoch, train loss and dev metrics
    assert [e for e, _ in logged] == [1, 2, 3]
    assert all({"train.loss", "lr", "dev.selection", "dev.f1_macro", "dev.accuracy"} <= set(m) for _, m in logged)

    # the best epoch is the first maximum of the dev scores
    metrics = json.loads((report_out / "metrics.json").read_text())
    history = list(csv.DictReader(open(report_out / "history.csv")))
    scores = [float(h["dev_score"]) for h in history]
    assert metrics["best_epoch"] == int(np.argmax(scores)) + 1 == res["best_epoch"]
    assert metrics["selection_metric"] == "f1_macro"
    assert metrics["dev"]["f1_macro"] == pytest.approx(max(scores), abs=1e-6)
    assert set(metrics["test"]) >= {"accuracy", "f1_macro", "precision_micro", "recall_weighted"}
    assert "pearson" not in metrics["test"]  # the task is not declared ordinal

    # predictions.tsv: one row per test example, probabilities that sum to 1, argmax = predicted
    pred = read_tsv(report_out / "predictions.tsv")
    test = read_tsv(tmp_path / "task" / "test.tsv")
    assert pred["id"].to_list() == test["ID"].to_list() and pred["text"].to_list() == test["TEXT"].to_list()
    assert pred["gold"].to_list() == test["CLASS"].to_list()
    probs = np.stack([pred[f"p_{lab}"].cast(pl.Float64).to_numpy() for lab in LABELS], 1)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert pred["predicted"].to_list() == [LABELS[i] for i in probs.argmax(1)]
    conf = read_tsv_csv(report_out / "confusion.csv")
    assert conf == list(zip(pred["gold"].to_list(), pred["predicted"].to_list()))
    report = json.loads((report_out / "class_report.json").read_text())
    assert set(report["test"]) == set(LABELS) and sum(r["support"] for r in report["test"].values()) == len(test)

    # the directory alone (original vocab gone) reproduces the test predictions and both metric sets
    moved = tmp_path / "moved"
    shutil.copytree(model_out, moved)
    saved_cfg = json.loads((moved / "config.json").read_text())
    assert saved_cfg["labels"] == {"N": 0, "NEU": 1, "P": 2} and saved_cfg["head"]["collapse_mode"] == "concat"
    assert saved_cfg["max_len"] == 12 and saved_cfg["normalize"]["lowercase"] is True
    assert not any(k.startswith("encoder.mlm_head") for k in _safetensors_keys(moved / "model.safetensors"))
    re_probs, _ = reload_and_predict(moved, test["TEXT"].to_list(), None)
    np.testing.assert_allclose(re_probs, probs, atol=2e-6)
    dev = read_tsv(tmp_path / "task" / "dev.tsv")
    dev_probs, _ = reload_and_predict(moved, dev["TEXT"].to_list(), None)
    dev_gold = np.array([LABELS.index(c) for c in dev["CLASS"].to_list()])
    assert compute_metrics(dev_gold, dev_probs, task)["f1_macro"] == pytest.approx(metrics["dev"]["f1_macro"], abs=1e-6)


def read_tsv_csv(path: Path) -> list[tuple[str, str]]:
    rows = list(csv.reader(open(path, newline="")))
    assert rows[0] == ["actual", "predicted"]
    return [tuple(r) for r in rows[1:]]


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_text_pair_finetune_random_init_frozen(tmp_path, tok_path):
    write_task(tmp_path / "task", pair=True, seed=3)
    task = make_task(tmp_path / "task", categories={lab: i for i, lab in enumerate(LABELS)}, aux_header="TARGET",
                     stance_f1=("N", "P"), finetuning={"finetune_all": False, "lr": 1e-2})
    ft = FinetuningConfig(epochs=2, batch_size=8, max_len=12, path_load_weights="random", use_special_tokens=False, optimizer="adamw",
                          schedule="noam", warmup_steps=2)
    res = finetune_task(
        "stance", task, ft, tokenizer_path=tok_path, rules=NormalizeRules(), model_out=tmp_path / "model",
        report_out=tmp_path / "reports", model_config=tiny_model_config(tok_path), impl=CPU, progress=False,
    )
    check_outputs(tmp_path / "model", tmp_path / "reports")
    assert res["selection_metric"] == "stance_f1" and "stance_f1" in res["test"]
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    assert cfg["text_pair"] is True and cfg["finetuning"]["finetune_all"] is False and cfg["encoder_source"] == "random"
    pred = read_tsv(tmp_path / "reports" / "predictions.tsv")
    test = read_tsv(tmp_path / "task" / "test.tsv")
    assert pred["aux_text"].to_list() == test["TARGET"].to_list()
    probs = np.stack([pred[f"p_{lab}"].cast(pl.Float64).to_numpy() for lab in LABELS], 1)
    re_probs, _ = reload_and_predict(tmp_path / "model", test["TEXT"].to_list(), test["TARGET"].to_list())
    np.testing.assert_allclose(re_probs, probs, atol=2e-6)


def test_multi_label_and_regression_reports(tmp_path, tok_path):
    mc = tiny_model_config(tok_path)
    ft = FinetuningConfig(epochs=1, batch_size=8, max_len=12, path_load_weights="random", lr=1e-2)
    write_task(tmp_path / "multi", kind="multi", seed=5)
    multi = make_task(tmp_path / "multi", categories={lab: i for i, lab in enumerate(LABELS)}, type="multi_label",
                      class_weights="auto", eval_metric="accuracy", finetuning={"loss": "bce"})
    res = finetune_task("emo", multi, ft, tokenizer_path=tok_path, rules=None, model_out=tmp_path / "m1",
                        report_out=tmp_path / "r1", model_config=mc, impl=CPU, progress=False)
    check_outputs(tmp_path / "m1", tmp_path / "r1")
    assert res["selection_metric"] == "accuracy" and {"jaccard", "subset_accuracy", "f1_micro"} <= set(res["test"])
    pred = read_tsv(tmp_path / "r1" / "predictions.tsv")
    probs = np.stack([pred[f"p_{lab}"].cast(pl.Float64).to_numpy() for lab in LABELS], 1)
    expected = ["|".join(LABELS[j] for j in np.flatnonzero(row >= 0.5)) for row in probs]
    assert [p or "" for p in pred["predicted"].to_list()] == expected

    write_task(tmp_path / "reg", kind="regression", seed=7)
    reg = make_task(tmp_path / "reg", type="regression", eval_metric="pearson", finetuning={"loss": "mse"})
    res = finetune_task("score", reg, ft, tokenizer_path=tok_path, rules=None, model_out=tmp_path / "m2",
                        report_out=tmp_path / "r2", model_config=mc, impl=CPU, progress=False)
    check_outputs(tmp_path / "m2", tmp_path / "r2")
    assert {"mse", "mae", "pearson"} == set(res["test"])
    pred = read_tsv(tmp_path / "r2" / "predictions.tsv")
    gold, value = pred["gold"].cast(pl.Float64).to_numpy(), pred["predicted"].cast(pl.Float64).to_numpy()
    assert res["test"]["mse"] == pytest.approx(np.mean((gold - value) ** 2), rel=1e-3)


def test_encoder_must_fit_tokenizer_and_lengths(tmp_path, tok_path):
    from twilbert.config import ConfigError

    write_task(tmp_path / "task", sizes=(3, 3, 3), pair=True)
    task = make_task(tmp_path / "task", categories={lab: i for i, lab in enumerate(LABELS)}, aux_header="TARGET")
    kw = dict(tokenizer_path=tok_path, rules=None, model_out=tmp_path / "m", report_out=tmp_path / "r", impl=CPU, progress=False)
    mc = tiny_model_config(tok_path)  # positions for max_len 12: 27
    with pytest.raises(ConfigError, match=r"^finetuning\.max_len: 13 tokens per segment need 29 positions, the encoder has 27; use max_len <= 12"):
        finetune_task("t", task, FinetuningConfig(max_len=13, path_load_weights="random"), model_config=mc, **kw)
    wrong_vocab = ModelConfig(hidden_size=16, embedding_size=16, n_encoders=1, n_heads=2).resolved(vocab_size=99, max_len=12)
    with pytest.raises(ConfigError, match=r"the tokenizer has 150 pieces but the encoder was built for vocab_size=99"):
        finetune_task("t", task, FinetuningConfig(max_len=12, path_load_weights="random"), model_config=wrong_vocab, **kw)
    with pytest.raises(ConfigError, match=r"^finetuning\.path_load_weights: 'random' needs the model config"):
        finetune_task("t", task, FinetuningConfig(path_load_weights="random"), **kw)
    with pytest.raises(ConfigError, match=r"^finetuning\.path_load_weights: no pre-trained model given"):
        finetune_task("t", task, FinetuningConfig(), **kw)
    # a pre-trained encoder that records another vocabulary
    save_checkpoint(tmp_path / "pre" / "final", TWilBERT(mc), to_dict(mc), rng=False)
    (tmp_path / "pre" / "final" / "pretrain.json").write_text(json.dumps({"tokenizer_sha256": "0" * 64}))
    with pytest.raises(ConfigError, match=r"is not the vocabulary the encoder in .* was pre-trained with"):
        finetune_task("t", task, FinetuningConfig(max_len=12), pretrained_dir=tmp_path / "pre", **kw)
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()  # nothing written on a config error


def test_repeated_ids_are_quarantined_reported_and_the_baseline_sees_the_same_splits(tmp_path, tok_path, capfd):
    """Dev/test rows whose id is in an earlier split: left out of training, selection and test, listed
    in rejects.tsv, counted in metrics.json "data" (rows_in = rows_used + rejected), one stderr line;
    the baseline (report stage) reads the very same splits."""
    from twilbert.finetune.baseline import run_baseline

    write_task(tmp_path / "task", sizes=(18, 9, 9))
    root = tmp_path / "task"

    def rename(split: str, line: int, new_id: str) -> None:  # give row `line` (1-based file line) another id
        p = root / f"{split}.tsv"
        rows = p.read_text(encoding="utf-8").splitlines()
        rows[line - 1] = "\t".join([new_id, *rows[line - 1].split("\t")[1:]])
        p.write_text("\n".join(rows) + "\n", encoding="utf-8")

    rename("dev", 3, "train-4")  # dev line 3 has train's id at train line 6
    rename("test", 2, "train-0")  # test line 2: in train (line 2)
    rename("test", 5, "dev-0")  # test line 5: in dev (line 2)
    rename("test", 7, "train-4")  # in train and in (quarantined) dev: train wins
    task = make_task(root, categories={lab: i for i, lab in enumerate(LABELS)})
    ft = FinetuningConfig(epochs=1, batch_size=8, max_len=12, path_load_weights="random", lr=1e-2)
    capfd.readouterr()
    res = finetune_task("leaky", task, ft, tokenizer_path=tok_path, rules=None, model_out=tmp_path / "m",
                        report_out=tmp_path / "r", model_config=tiny_model_config(tok_path), impl=CPU, progress=False)
    check_outputs(tmp_path / "m", tmp_path / "r")
    warned = [ln for ln in capfd.readouterr().err.splitlines() if "quarantined" in ln]
    assert len(warned) == 1 and warned[0].startswith("tasks.leaky: warning: quarantined 4 rows"), warned
    assert "dev.tsv: 1 row (line 3 id 'train-4'" in warned[0] and "test.tsv: 3 rows (line 2 id 'train-0'" in warned[0]

    data = json.loads((tmp_path / "r" / "metrics.json").read_text())["data"]
    assert data == res["data"] == {
        "train": {"rows_in": 18, "rows_used": 18, "rejected": {}, "repeated_ids": 0},
        "dev": {"rows_in": 9, "rows_used": 8, "rejected": {"id_in_train": 1}, "repeated_ids": 0},
        "test": {"rows_in": 9, "rows_used": 6, "rejected": {"id_in_train": 2, "id_in_dev": 1}, "repeated_ids": 0},
    }
    for d in data.values():
        assert d["rows_in"] == d["rows_used"] + sum(d["rejected"].values())
    rejects = read_tsv(tmp_path / "r" / "rejects.tsv")
    assert rejects.columns == ["file", "line", "id", "reason", "also_in"]
    assert rejects.select("line", "id", "reason").rows() == [
        ("3", "train-4", "id_in_train"), ("2", "train-0", "id_in_train"), ("5", "dev-0", "id_in_dev"), ("7", "train-4", "id_in_train")]
    assert [Path(f).name for f in rejects["file"]] == ["dev.tsv", "test.tsv", "test.tsv", "test.tsv"]
    assert [a.rsplit("/", 1)[-1] for a in rejects["also_in"]] == ["train.tsv:6", "train.tsv:2", "dev.tsv:2", "train.tsv:6"]
    pred = read_tsv(tmp_path / "r" / "predictions.tsv")
    assert len(pred) == 6 and not set(pred["id"]) & {"train-0", "dev-0", "train-4"}
    assert res["train_examples"] == 18

    base = run_baseline(task, name="leaky")
    assert base["data"] == data
    assert len(base["outputs"]["dev"]) == 8 and len(base["outputs"]["test"]) == 6
    # nothing quarantined: rejects.tsv is still written (a stable DVC output), a header alone
    write_task(tmp_path / "clean", sizes=(9, 6, 6))
    finetune_task("clean", make_task(tmp_path / "clean", categories={lab: i for i, lab in enumerate(LABELS)}), ft, tokenizer_path=tok_path,
                  rules=None, model_out=tmp_path / "m2", report_out=tmp_path / "r2", model_config=tiny_model_config(tok_path), impl=CPU,
                  progress=False)
    assert (tmp_path / "r2" / "rejects.tsv").read_text() == "file\tline\tid\treason\talso_in\n"
