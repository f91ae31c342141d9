"""The whole path a RoBERTuito user takes, through the CLI: import-hf -> vocab -> pairs ->
pretrain (MLM + ROP from the imported weights) -> finetune (collapse_mode: cls) -> predict -> export-hf,
and transformers gives back our numbers: ``AutoModelForMaskedLM`` on the continued pre-training, and
``pipeline("text-classification")`` on raw tweets on the fine-tuned model. A tiny random RoBERTa
(~45 s on 2 shared cores, 16 s of CPU: not marked slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")

from tests.finetune.test_finetune_e2e import LABELS, write_task  # noqa: E402
from tests.inference.test_hf_classifier import RAW_TWEETS  # noqa: E402
from tests.inference.test_hf_continue import continued_pretraining_inputs  # noqa: E402
from tests.inference.test_hf_roberta import roberta_like  # noqa: E402
from tests.inference.test_predict import json_lines, run_cli  # noqa: E402
from tests.train.test_pretrain_fixtures import MAX_LEN  # noqa: E402



def _ok(res) -> str:
    assert res.exit_code == 0, res.output
    return res.output


def test_roberta_import_pretrain_finetune_predict_export(tmp_path):
    from twilbert.finetune.model import load_encoder
    from twilbert.hf.probe import hidden_state_difference, mlm_logit_difference

    roberta_like(tmp_path / "hf", positions=64)
    out = _ok(run_cli("import-hf", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "ro"), "--max-len", str(MAX_LEN)))
    params, tree, norm = continued_pretraining_inputs(tmp_path, out, tmp_path / "ro", {"max_steps": 3, "lr": 1e-3})
    assert tree["model"]["layer_norm_eps"] == 1e-5 and 'normalize.rules: {"preset": "pysentimiento"}' in out
    write_task(tmp_path / "task")
    tree["finetuning"] = {"epochs": 1, "batch_size": 8, "max_len": MAX_LEN, "collapse_mode": "cls", "warmup_steps": 0}
    tree["tasks"] = {"senti": {f"{s}_file": str(tmp_path / "task" / f"{s}.tsv") for s in ("train", "dev", "test")}
                     | {"categories": {lab: i for i, lab in enumerate(LABELS)}}}
    params.write_text(yaml.safe_dump(tree, sort_keys=False))
    common = ["--params", str(params)]
    _ok(run_cli("vocab", *common, "--normalized-dir", str(norm), "--out-dir", str(tmp_path / "vocab"), "--stats-path", str(tmp_path / "v.json")))
    _ok(run_cli("pairs", *common, "--normalized-dir", str(norm), "--vocab-model", str(tmp_path / "vocab"),
                "--out-dir", str(tmp_path / "pairs"), "--stats-path", str(tmp_path / "pairs.json")))
    _ok(run_cli("pretrain", *common, "--shards-dir", str(tmp_path / "pairs"), "--vocab-model", str(tmp_path / "vocab"),
                "--out-dir", str(tmp_path / "pre"), "--reports-dir", str(tmp_path / "reports" / "pretrain")))
    _ok(run_cli("finetune", *common, "--task", "senti", "--pretrained-dir", str(tmp_path / "pre" / "final"),
                "--vocab-model", str(tmp_path / "vocab"), "--model-out", str(tmp_path / "model"),
                "--report-out", str(tmp_path / "reports" / "finetune" / "senti")))
    res = run_cli("predict", "--model", str(tmp_path / "model"), stdin="\n".join(RAW_TWEETS) + "\n")
    _ok(res)
    ours = json_lines(res.stdout)

    # the continued pre-training goes back as RobertaForMaskedLM (recorded at import, followed through path_initial_weights)
    out = _ok(run_cli("export-hf", "--model", str(tmp_path / "pre"), "--out", str(tmp_path / "hf-pre")))
    assert "RobertaForMaskedLM" in out
    encoder = load_encoder(tmp_path / "pre").eval()
    back = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf-pre")).eval()
    assert type(back).__name__ == "RobertaForMaskedLM"
    assert hidden_state_difference(encoder, back.roberta) <= 1e-5 and mlm_logit_difference(encoder, back) <= 1e-4
    moved = not torch.equal(encoder.embeddings.token.weight, load_encoder(tmp_path / "ro").embeddings.token.weight)
    assert moved  # pre-training changed the weights: the parity is not the import's

    # the fine-tuned classifier on raw tweets, in transformers' own pipeline
    out = _ok(run_cli("export-hf", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "hf-clf")))
    assert "RobertaForSequenceClassification" in out and (tmp_path / "hf-clf" / "README.md").is_file()
    clf = transformers.pipeline("text-classification", model=str(tmp_path / "hf-clf"), top_k=None, truncation=True)
    for a, b in zip(ours, clf(RAW_TWEETS)):
        probs = {d["label"]: d["score"] for d in b}
        assert max(abs(probs[lab] - p) for lab, p in a["probabilities"].items()) <= 1e-4
        assert max(probs, key=probs.get) == a["label"]
    assert np.isfinite([d["score"] for row in clf(RAW_TWEETS) for d in row]).all()
