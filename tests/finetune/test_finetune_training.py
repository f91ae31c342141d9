"""finetune_task's wiring, checked where a mutation would show: the saved model is the best-dev
epoch's, freezing freezes, class weights reach the loss, lamb and a soft loss train end to end, a seed
reproduces its weights bitwise, and a multi-label task can select on stance_f1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import twilbert.finetune.epochs as epochs_mod
import twilbert.finetune.train as train_mod
from tests.finetune.test_finetune_e2e import CPU, LABELS, make_task, read_tsv, reload_and_predict, tiny_model_config, tok_path, write_task  # noqa: F401
from twilbert.finetune.config import FinetuningConfig
from twilbert.finetune.metrics import compute_metrics
from twilbert.finetune.train import Trainer, finetune_task
from twilbert.model.twilbert import TWilBERT

CATS = {lab: i for i, lab in enumerate(LABELS)}


def run(tmp_path, tok_path, task, ft, sub="run", **kw):
    kw.setdefault("model_config", tiny_model_config(tok_path))
    return finetune_task("t", task, ft, tokenizer_path=tok_path, rules=None, model_out=tmp_path / sub / "model",
                         report_out=tmp_path / sub / "reports", impl=CPU, progress=False, **kw)


def saved_weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture
def snapshots(monkeypatch):
    """The classifier's weights before training (index 0) and after every epoch (index e)."""
    taken: list[dict[str, torch.Tensor]] = []
    original = Trainer.train_epoch

    def spy(self, *args, **kwargs):
        if not taken:
            taken.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        out = original(self, *args, **kwargs)
        taken.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return out

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    return taken


def scripted_dev_scores(monkeypatch, scores):
    """Dev selection scores per epoch are ``scores`` (the epoch loop's calls); later calls use the real function."""
    real = epochs_mod.selection_score
    it = iter(scores)

    def fake(metrics, task):
        try:
            return next(it)
        except StopIteration:
            return real(metrics, task)

    monkeypatch.setattr(epochs_mod, "selection_score", fake)


def equal_on(saved: dict[str, torch.Tensor], state: dict[str, torch.Tensor], prefix: str = "") -> bool:
    keys = [k for k in saved if k.startswith(prefix)]
    assert keys
    return all(torch.equal(saved[k], state[k]) for k in keys)


# --------------------------------------------------------------------------------------------------
# best epoch


def test_saved_model_and_test_metrics_come_from_the_best_dev_epoch(tmp_path, tok_path, monkeypatch, snapshots):
    write_task(tmp_path / "task")
    task = make_task(tmp_path / "task", categories=CATS)
    scripted_dev_scores(monkeypatch, [0.30, 0.90, 0.50])  # epoch 2 is the best, epoch 3 (the last) is worse
    ft = FinetuningConfig(epochs=3, batch_size=8, max_len=12, path_load_weights="random", lr=1e-2, dropout=0.0)
    res = run(tmp_path, tok_path, task, ft)
    assert res["best_epoch"] == 2 and len(snapshots) == 4
    saved = saved_weights(tmp_path / "run" / "model")
    assert not equal_on(saved, snapshots[3]) and not equal_on(saved, snapshots[1])  # the epochs really differ
    assert equal_on(saved, snapshots[2])  # ... and the saved one is epoch 2's, bitwise

    # test metrics are those of the epoch-2 weights: recompute them from the snapshot
    test = read_tsv(tmp_path / "task" / "test.tsv")
    probs, _ = reload_and_predict(tmp_path / "run" / "model", test["TEXT"].to_list(), None)
    gold = np.array([CATS[c] for c in test["CLASS"].to_list()])
    metrics = json.loads((tmp_path / "run" / "reports" / "metrics.json").read_text())
    assert metrics["test"]["f1_macro"] == pytest.approx(compute_metrics(gold, probs, task)["f1_macro"], abs=1e-9)
    assert metrics["best_dev_score"] == 0.90 and metrics["best_epoch"] == 2


def test_early_stopping_keeps_the_best_epochs_dev_block(tmp_path, tok_path, monkeypatch):
    import csv

    write_task(tmp_path / "task")
    task = make_task(tmp_path / "task", categories=CATS)
    scripted_dev_scores(monkeypatch, [0.2, 0.7, 0.1, 0.6, 0.65])  # best 2; patience 2 stops after epoch 4
    ft = FinetuningConfig(epochs=5, patience=2, batch_size=8, max_len=12, path_load_weights="random", lr=1e-2)
    res = run(tmp_path, tok_path, task, ft)
    assert (res["best_epoch"], res["epochs_run"], res["stopped_early"]) == (2, 4, True)
    rows = list(csv.DictReader(open(tmp_path / "run" / "reports" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    metrics = json.loads((tmp_path / "run" / "reports" / "metrics.json").read_text())
    for k in ("accuracy", "f1_macro", "recall_weighted"):
        assert metrics["dev"][k] == pytest.approx(float(rows[1][f"dev_{k}"]), abs=1e-6)


# --------------------------------------------------------------------------------------------------
# freezing


@pytest.mark.parametrize("finetune_all", [False, True])
def test_freezing_keeps_the_encoder_bitwise_and_trains_the_head(tmp_path, tok_path, snapshots, finetune_all):
    write_task(tmp_path / "task")
    task = make_task(tmp_path / "task", categories=CATS)
    mc = tiny_model_config(tok_path)
    torch.manual_seed(0)
    encoder = TWilBERT(mc)
    initial = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    ft = FinetuningConfig(epochs=2, batch_size=8, max_len=12, lr=1e-2, finetune_all=finetune_all)
    run(tmp_path, tok_path, task, ft, encoder_factory=lambda: encoder, model_config=None)
    saved = saved_weights(tmp_path / "run" / "model")
    enc_keys = [k for k in saved if k.startswith("encoder.")]
    assert len(enc_keys) > 5
    same = [torch.equal(saved[k], initial[k.removeprefix("encoder.")]) for k in enc_keys]
    if finetune_all:
        assert not all(same)
    else:
        assert all(same)
    assert not torch.equal(saved["head.weight"], snapshots[0]["head.weight"])  # the head trained either way


# --------------------------------------------------------------------------------------------------
# class weights


def loss_spy(monkeypatch):
    calls = []
    real = train_mod.build_loss

    def build(name, task_type, weights=None):
        fn = real(name, task_type, weights)

        def wrapped(out, labels):
            loss = fn(out, labels)
            calls.append((out.detach().clone(), labels.clone(), loss.detach().clone()))
            return loss

        return wrapped

    monkeypatch.setattr(train_mod, "build_loss", build)
    return calls


@pytest.mark.parametrize("weights", [{"N": 3.0, "P": 0.25}, "auto"])
def test_class_weights_reach_the_loss(tmp_path, tok_path, monkeypatch, weights):
    write_task(tmp_path / "task", sizes=(38, 9, 9))  # train labels N, NEU, P: 13, 13, 12
    task = make_task(tmp_path / "task", categories=CATS, class_weights=weights)
    calls = loss_spy(monkeypatch)
    run(tmp_path, tok_path, task, FinetuningConfig(epochs=1, batch_size=8, max_len=12, path_load_weights="random"))
    w = torch.tensor([3.0, 1.0, 0.25]) if weights != "auto" else torch.tensor([1.0, 1.0, 13 / 12])
    for out, labels, loss in calls[:3]:
        ce = -F.log_softmax(out.double(), -1).gather(1, labels[:, None]).squeeze(1)  # (B,)
        by_hand = (w.double()[labels] * ce).mean()
        assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)
        assert float(loss) != pytest.approx(float(ce.mean()), rel=1e-4)  # unweighted would differ


# --------------------------------------------------------------------------------------------------
# lamb + soft loss, seeds


def test_lamb_with_a_soft_macro_f1_loss_trains(tmp_path, tok_path, snapshots):
    write_task(tmp_path / "task")
    task = make_task(tmp_path / "task", categories=CATS)
    ft = FinetuningConfig(epochs=4, batch_size=8, max_len=12, path_load_weights="random", optimizer="lamb", loss="macro_f1",
                          lr=2e-2, warmup_steps=0, schedule="constant")
    res = run(tmp_path, tok_path, task, ft)
    import csv

    losses = [float(r["train_loss"]) for r in csv.DictReader(open(tmp_path / "run" / "reports" / "history.csv"))]
    assert all(-1.0 <= v <= 0.0 for v in losses)  # a negated soft F1
    assert losses[-1] < losses[0]  # it learns the cue words
    assert not equal_on({k: v for k, v in snapshots[-1].items()}, snapshots[0], "encoder.encoder")
    assert np.isfinite(res["test"]["f1_macro"]) and res["skipped_updates"] == 0


def test_same_seed_same_weights_and_metrics_other_seed_differs(tmp_path, tok_path):
    write_task(tmp_path / "task")
    task = make_task(tmp_path / "task", categories=CATS)
    ft = FinetuningConfig(epochs=2, batch_size=8, max_len=12, path_load_weights="random", lr=1e-2, seed=11)
    run(tmp_path, tok_path, task, ft, sub="a")
    run(tmp_path, tok_path, task, ft, sub="b")
    run(tmp_path, tok_path, task, ft, sub="c", seed=12)
    a, b, c = (saved_weights(tmp_path / s / "model") for s in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # no wall time in metrics.json: a rerun writes the same file
    text = [(tmp_path / s / "reports" / "metrics.json").read_text() for s in "ab"]
    assert text[0] == text[1] and "seconds" not in text[0]
    info = json.loads((tmp_path / "a" / "reports" / "run_info.json").read_text())
    assert info["train_seconds"] > 0 and info["train_tokens_per_s"] > 0
    assert json.loads((tmp_path / "c" / "model" / "config.json").read_text())["finetuning"]["seed"] == 12


# --------------------------------------------------------------------------------------------------
# B1: multi-label + stance_f1


def test_multi_label_task_selects_on_stance_f1(tmp_path, tok_path):
    write_task(tmp_path / "multi", kind="multi", seed=5)
    task = make_task(tmp_path / "multi", categories=CATS, type="multi_label", stance_f1=("N", "P"), finetuning={"loss": "bce"})
    res = run(tmp_path, tok_path, task, FinetuningConfig(epochs=2, batch_size=8, max_len=12, path_load_weights="random", lr=1e-2))
    assert res["selection_metric"] == "stance_f1"
    per_class = json.loads((tmp_path / "run" / "reports" / "class_report.json").read_text())
    for split in ("dev", "test"):
        assert res[split]["stance_f1"] == pytest.approx((per_class[split]["N"]["f1"] + per_class[split]["P"]["f1"]) / 2)
    assert res["best_dev_score"] == pytest.approx(res["dev"]["stance_f1"])


def test_every_epoch_prints_one_progress_line(tmp_path, capsys):
    """One stderr line per epoch (train loss, dev selection metric, best so far), with or without a TTY."""
    from tests.finetune.test_finetune_e2e import CPU, make_task, tiny_model_config, write_task
    from tests.finetune.test_finetune_data import make_tokenizer
    from twilbert.finetune.config import FinetuningConfig
    from twilbert.finetune.train import finetune_task
    from twilbert.model.twilbert import TWilBERT
    from twilbert.text.normalize import NormalizeRules

    tok = make_tokenizer(tmp_path)
    write_task(tmp_path / "t", sizes=(12, 6, 6))
    mc = tiny_model_config(tok)
    finetune_task("tiny", make_task(tmp_path / "t", categories={"N": 0, "NEU": 1, "P": 2}), FinetuningConfig(epochs=3, batch_size=4, max_len=12),
                  tokenizer_path=tok, rules=NormalizeRules(), model_out=tmp_path / "m", report_out=tmp_path / "r",
                  encoder_factory=lambda: TWilBERT(mc), impl=CPU, progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("finetune tiny: epoch ")]
    assert [line.split()[3] for line in lines] == ["1/3:", "2/3:", "3/3:"]
    assert "(best so far)" in lines[0] and all("dev f1_macro" in line for line in lines)
