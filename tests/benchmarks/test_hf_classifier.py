"""``benchmarks/hf_classifier.py``: a cls-pooled fine-tuned classifier exported as
``BertForSequenceClassification`` gives our probabilities and labels; other poolings are refused
unless the benchmark asks for the inexact model."""

from __future__ import annotations

import pytest
import torch

from benchmarks.hf_classifier import export_sequence_classifier
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
    model_dir = save_finetuned(tmp_path / collapse_mode, clf, spm, {"labels": LABELS, "task_type": "single_label"})
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
