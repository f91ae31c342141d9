"""A fine-tuned TWilBERT classifier as ``BertForSequenceClassification`` / ``AlbertForSequenceClassification``.

Only ``predict_throughput.py`` uses it, to run the same model under ``pipeline("text-classification")``.
HF's classifiers read ``tanh(pooler(h_[CLS]))``, which TWilBERT has no counterpart for. With
``collapse_mode: cls`` the pooler is made nearly the identity: weight ``s * I`` (s = ``pooler_scale``)
and the classifier weight divided by ``s``, so ``W tanh(s h) / s = W h (1 - O(s^2 h^2))``: probabilities
agree to ~1e-5. Other collapse modes (avg/max/concat, the default avg included) cannot be expressed:
refused unless ``allow_inexact`` (the throughput benchmark, where only the compute matters: the model
is then the cls-pooled one, with different predictions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from twilbert.hf.common import HFInteropError, quiet_transformers, refuse
from twilbert.hf.export import EXPORT_INFO, export_problems
from twilbert.hf.tokenizer import save_hf_tokenizer
from twilbert.hf.weights import family_of, hf_config_dict, to_hf_state_dict

PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification", "regression": "regression"}


def export_sequence_classifier(
    model_dir: str | Path, out_dir: str | Path, *, allow_inexact: bool = False, pooler_scale: float = 1e-3
) -> dict[str, Any]:
    """Write ``out_dir`` as a transformers ``*ForSequenceClassification`` (see the module docstring)."""
    from twilbert.finetune.model import load_finetuned

    quiet_transformers()
    ft = load_finetuned(model_dir)
    clf, cfg, stored = ft.model, ft.model.encoder.config, ft.config
    refuse(f"{model_dir}: cannot export to transformers", export_problems(cfg))
    exact = clf.collapse_mode == "cls"
    if not exact and not allow_inexact:
        raise HFInteropError(
            f"{model_dir}: collapse_mode {clf.collapse_mode!r} has no transformers counterpart (their classifiers pool [CLS]); "
            "only cls-pooled classifiers export to *ForSequenceClassification"
        )
    family = family_of(cfg)
    model_cls = family.hf_class("ForSequenceClassification")
    labels = ft.labels or ["value"]
    hf_cfg = family.hf_class("Config")(
        **hf_config_dict(cfg),
        architectures=[model_cls.__name__],
        num_labels=clf.head.out_features,
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
        problem_type=PROBLEM_TYPES[stored["task_type"]],
    )
    hf_model = model_cls(hf_cfg)
    state = to_hf_state_dict(clf.encoder, with_mlm_head=False)
    H = cfg.hidden_size
    pooler = "bert.pooler.dense" if family.model_type == "bert" else "albert.pooler"
    state[pooler + ".weight"] = torch.eye(H) * pooler_scale
    state[pooler + ".bias"] = torch.zeros(H)
    head_w = clf.head.weight.detach()
    if head_w.shape[1] != H:  # concat pooling (3H): inexact anyway; keep the [CLS] third
        head_w = head_w[:, :H]
    state["classifier.weight"] = head_w / pooler_scale
    state["classifier.bias"] = clf.head.bias.detach().clone()
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out_dir))
    save_hf_tokenizer(ft.tokenizer_path, out_dir, model_max_length=cfg.max_positions)
    info = {"source": str(model_dir), "architecture": model_cls.__name__, "exact": exact, "collapse_mode": clf.collapse_mode}
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
