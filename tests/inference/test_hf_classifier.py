"""``twilbert.hf.classifier``: a cls-pooled fine-tuned classifier exported as
``BertForSequenceClassification`` gives our probabilities and labels; other poolings are refused
unless the benchmark asks for the inexact model."""

from __future__ import annotations

import pytest
import torch

from twilbert.hf.classifier import export_sequence_classifier
from tests.finetune.test_finetune_data import make_tokenizer
from tests.inference.test_hf import randomised, tiny
from twilbert.finetune.model import SequenceClassifier, save_finetuned
from twilbert.hf import HFInteropError
from twilbert.hf.probe import probe_batch
from twilbert.text.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

LABELS = {"N": 0, "NEU": 1, "P": 2}


def finetuned(tmp_path, collapse_mode: str) -> tuple[SequenceClassifier, object]:
    spm = make_tokenizer(tmp_path / "vocab")
    clf = SequenceClassifier(randomised(tiny(Tokenizer.from_file(spm).vocab_size)), len(LABELS), collapse_mode=collapse_mode).eval()
    with torch.no_grad():
        clf.head.weight.normal_(0, 1.0)  # logits far enough apart that the labels mean something
    model_dir = save_finetuned(tmp_path / collapse_mode, clf, spm, {"labels": LABELS, "task_type": "single_label", "max_len": 16})
    return clf, model_dir


def test_cls_classifier_exports_with_our_probabilities(tmp_path):
    clf, model_dir = finetuned(tmp_path, "cls")
    info = export_sequence_classifier(model_dir, tmp_path / "hf")
    assert info["exact"] and info["architecture"] == "BertForSequenceClassification"
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
    assert theirs.config.id2label == {0: "N", 1: "NEU", 2: "P"} and theirs.config.problem_type == "single_label_classification"
    ids, types, mask = probe_batch(clf.encoder.config.vocab_size, clf.encoder.config.max_positions)
    with torch.no_grad():
        ours = clf(ids, types, mask).softmax(-1)  # (3, 3)
        hf = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits.softmax(-1)  # (3, 3)
    assert (ours - hf).abs().max() <= 1e-4
    assert torch.equal(ours.argmax(-1), hf.argmax(-1))


def test_other_poolings_are_refused_unless_inexact_is_allowed(tmp_path):
    _, model_dir = finetuned(tmp_path, "avg")
    with pytest.raises(HFInteropError, match="collapse_mode 'avg' has no transformers counterpart"):
        export_sequence_classifier(model_dir, tmp_path / "hf")
    assert export_sequence_classifier(model_dir, tmp_path / "hf", allow_inexact=True)["exact"] is False


def test_multi_label_and_regression_get_their_problem_type(tmp_path):
    spm = make_tokenizer(tmp_path / "vocab")
    for task_type, n, labels in (("multi_label", 3, LABELS), ("regression", 1, {})):
        clf = SequenceClassifier(randomised(tiny(Tokenizer.from_file(spm).vocab_size)), n, collapse_mode="cls").eval()
        model_dir = save_finetuned(tmp_path / task_type, clf, spm, {"labels": labels, "task_type": task_type, "max_len": 16})
        info = export_sequence_classifier(model_dir, tmp_path / f"hf-{task_type}")
        assert info["problem_type"] == {"multi_label": "multi_label_classification", "regression": "regression"}[task_type]
        assert info["max_abs_diff_probabilities"] <= 1e-4  # sigmoid / the value itself
        assert (tmp_path / f"hf-{task_type}" / "README.md").is_file()


RAW_TWEETS = [
    "@Pepe_88 JAJAJA no me lo puedo creer 😂😂😂😂 https://t.co/AbC123",
    "RT @ana: Qué ganas de vacaciones!!!!!! #VeranoYa",
    "El Madrid GANÓ 2-1 a la Real… www.marca.com",
    "ñandú, pingüino y cigüeña &amp; más 🤣estoy",
    "jejeje   que bien que bien",
]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_roberta_classifier_on_raw_tweets_in_pipeline_matches_twilbert_predict(tmp_path):
    """The user command: an imported RoBERTa fine-tuned here (collapse_mode cls, default rules), exported
    with export-hf -m <model dir>: pipeline("text-classification") on RAW tweets gives our probabilities
    and labels (the tokenizer normalises), and the model card has the metrics beside the baseline."""
    import twilbert
    from tests.finetune.test_finetune_e2e import CPU, LABELS as TASK_LABELS, make_task, write_task
    from tests.inference.test_hf_roberta import roberta_like
    from twilbert.finetune.config import FinetuningConfig
    from twilbert.finetune.train import finetune_task
    from twilbert.hf import export_hf, import_hf
    from twilbert.text.normalize import NormalizeRules

    roberta_like(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "ro")
    write_task(tmp_path / "task")
    task = make_task(tmp_path / "task", categories={lab: i for i, lab in enumerate(TASK_LABELS)})
    ft = FinetuningConfig(epochs=1, batch_size=8, max_len=24, lr=1e-3, warmup_steps=0, collapse_mode="cls")
    finetune_task("senti", task, ft, tokenizer_path=tmp_path / "ro", rules=NormalizeRules(), model_out=tmp_path / "model",
                  report_out=tmp_path / "reports" / "finetune" / "senti", pretrained_dir=tmp_path / "ro", impl=CPU, progress=False)
    info = export_hf(tmp_path / "model", tmp_path / "shared", family=None)
    assert info["architecture"] == "RobertaForSequenceClassification" and info["tokenizer_normalizes_tweets"]
    assert info["max_abs_diff_probabilities"] <= 1e-4
    card = (tmp_path / "shared" / "README.md").read_text()
    assert "imported from" in card and "| test | f1_macro |" in card and "pipeline(" in card

    ours = twilbert.load(tmp_path / "model").predict(RAW_TWEETS)
    clf = transformers.pipeline("text-classification", model=str(tmp_path / "shared"), top_k=None, truncation=True)
    theirs = clf(RAW_TWEETS)
    for a, b in zip(ours, theirs):
        probs = {d["label"]: d["score"] for d in b}
        assert max(abs(probs[lab] - p) for lab, p in a["probabilities"].items()) <= 1e-4
        assert max(probs, key=probs.get) == a["label"]


def test_export_hf_refuses_a_mean_pooled_classifier_and_offers_the_encoder(tmp_path):
    from tests.inference.test_predict import error_line, run_cli

    _, model_dir = finetuned(tmp_path, "avg")
    line = error_line(run_cli("export-hf", "--model", str(model_dir), "--out", str(tmp_path / "hf")))
    assert "collapse_mode 'avg' has no transformers counterpart" in line and "--encoder-only" in line
    res = run_cli("export-hf", "--model", str(model_dir), "--out", str(tmp_path / "hf"), "--encoder-only")
    assert res.exit_code == 0, res.output
    assert "BertModel" in res.output
