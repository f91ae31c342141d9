"""``export-hf -m models/finetune/<task>``: a fine-tuned classifier as a transformers ``*ForSequenceClassification``.

What a user of the Hub gets: the model (``id2label``/``label2id``, ``problem_type`` from the stored
``task_type``), a tokenizer that normalises raw tweets with the model's own rules
(:mod:`twilbert.hf.normalizers`), and a model card (``README.md``: base model, data, rules, metrics
beside the baseline's, intended use, how far the tokenizer's normalisation agrees with ours).

HF's classifiers read ``tanh(dense(h_[CLS]))`` (BERT/ALBERT's pooler, RoBERTa's classification head),
which TWilBERT has no counterpart for. With ``collapse_mode: cls`` that layer is made nearly the
identity: weight ``s * I`` (s = ``pooler_scale``) and the output weight divided by ``s``, so
``W tanh(s h) / s = W h (1 - O(s^2 h^2))``: probabilities agree to ~1e-5, checked on a probe batch at
every export. Other collapse modes (avg/max/concat, the default avg included) cannot be expressed and
are refused (train with ``finetuning.collapse_mode: cls`` for a model to share), unless
``allow_inexact`` (benchmarks/predict_throughput.py, where only the compute matters: the model is
then the cls-pooled one, with different predictions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from twilbert.hf.common import PARITY_TOL, HFInteropError, quiet_transformers, refuse
from twilbert.hf.export import EXPORT_INFO, export_family, export_problems
from twilbert.hf.probe import probe_batch
from twilbert.hf.tokenizer import save_hf_tokenizer
from twilbert.hf.weights import Family, export_type_rows, hf_config_dict, to_hf_state_dict

# benchmarks/normalizer_agreement.py on 27 564 real tweets of ../shared/data (every 5th text), 2026-12-07:
# share of tweets whose exported-tokenizer ids equal `twilbert predict`'s. Quoted in every model card.
# default: the normalised texts all agree; 4 id sequences differ by unigram ties (RESULTS.md#tokenizer-export).
# pysentimiento: every difference is a tweet with a literal "|" (its emoji delimiter quirk).
MEASURED_AGREEMENT = {"default": 0.99985, "pysentimiento": 0.99024}



def _problem_type(task_type: str) -> str:
    from twilbert.finetune.task_types import get_task_type

    kind = get_task_type(task_type)
    if kind.hf_problem_type is None:
        raise HFInteropError(f"task type {task_type!r} has no transformers problem_type: it cannot be exported as a classifier")
    return kind.hf_problem_type


def _hf_classifier(ft, family: Family, pooler_scale: float) -> torch.nn.Module:
    """The ``*ForSequenceClassification`` holding ``ft``'s encoder and head (see the module docstring)."""
    clf, cfg = ft.model, ft.model.encoder.config
    task_type = ft.config.get("task_type", "single_label")
    labels = ft.labels or ["value"]
    model_cls = family.hf_class("ForSequenceClassification")
    rows = export_type_rows(family, clf.encoder.embeddings.segment.weight.detach())
    hf_cfg = family.hf_class("Config")(
        **hf_config_dict(cfg, family, rows),
        architectures=[model_cls.__name__],
        num_labels=clf.head.out_features,
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
        problem_type=_problem_type(task_type),
    )
    hf_model = model_cls(hf_cfg)
    state = to_hf_state_dict(clf.encoder, with_mlm_head=False, family=family)
    H = cfg.hidden_size
    tanh_layer, out_layer = family.seq_head
    state[tanh_layer + ".weight"] = torch.eye(H) * pooler_scale
    state[tanh_layer + ".bias"] = torch.zeros(H)
    head_w = clf.head.weight.detach()
    if head_w.shape[1] != H:  # concat pooling (3H): inexact anyway; keep the [CLS] third
        head_w = head_w[:, :H]
    state[out_layer + ".weight"] = head_w / pooler_scale
    state[out_layer + ".bias"] = clf.head.bias.detach().clone()
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return hf_model.eval()


@torch.inference_mode()
def classifier_difference(ft, out_dir: str | Path) -> float:
    """Reload ``out_dir`` and compare probabilities (softmax / sigmoid / the value) on a probe batch."""
    from twilbert.finetune.model import probabilities

    transformers = quiet_transformers()
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(str(out_dir), use_safetensors=True).eval()
    clf, task_type = ft.model.eval(), ft.config.get("task_type", "single_label")
    ids, types, mask = probe_batch(clf.encoder.config.vocab_size, clf.encoder.config.max_positions)
    their_types = types if theirs.config.type_vocab_size > 1 else torch.zeros_like(types)
    a = probabilities(clf(ids, types, mask), task_type)  # (3, C) or (3,)
    b = theirs(input_ids=ids, token_type_ids=their_types, attention_mask=mask.long()).logits  # (3, C)
    b = probabilities(b.squeeze(-1) if task_type == "regression" else b, task_type)
    return float((a - b).abs().max())


def export_sequence_classifier(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    family: Family | None = None,
    vocab_model: str | Path | None = None,
    allow_inexact: bool = False,
    pooler_scale: float = 1e-3,
    normalize_tweets: bool = True,
    reports: str | Path | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir``: a ``*ForSequenceClassification`` (``family``: default what the encoder was
    imported from, see :func:`~twilbert.hf.export.export_family`), its tokenizer (normalising raw tweets
    unless ``normalize_tweets`` is false) and ``README.md`` (metrics from ``reports``: default the
    ``reports/`` directory beside the repository's ``models/``)."""
    from twilbert.finetune.model import load_finetuned
    from twilbert.hf.model_card import model_card

    quiet_transformers()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    ft = load_finetuned(model_dir)
    clf, cfg = ft.model, ft.model.encoder.config
    family = family or export_family(model_dir, cfg)
    refuse(f"{model_dir}: cannot export to transformers", export_problems(cfg, family))
    exact = clf.collapse_mode == "cls"
    if not exact and not allow_inexact:
        raise HFInteropError(
            f"{model_dir}: collapse_mode {clf.collapse_mode!r} has no transformers counterpart (their classifiers pool [CLS]); "
            "only cls-pooled classifiers export to *ForSequenceClassification (fine-tune with finetuning.collapse_mode: cls, "
            "or export the encoder alone with --encoder-only)"
        )
    hf_model = _hf_classifier(ft, family, pooler_scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out_dir))
    rules = ft.config.get("normalize")
    normalizer = None
    if normalize_tweets and rules:
        from twilbert.hf.normalizers import tweet_normalizer

        normalizer = tweet_normalizer(rules)
    max_len = int(ft.config.get("max_len") or cfg.max_positions - 2)
    tokenizer = Path(vocab_model) if vocab_model is not None else ft.tokenizer_path
    save_hf_tokenizer(tokenizer, out_dir, model_max_length=min(max_len + 2, cfg.max_positions),
                      type_rows=hf_model.config.type_vocab_size, normalizer=normalizer)
    info: dict[str, Any] = {
        "source": str(model_dir),
        "source_kind": "finetuned",
        "architecture": hf_model.config.architectures[0],
        "model_type": family.model_type,
        "exact": exact,
        "collapse_mode": clf.collapse_mode,
        "problem_type": hf_model.config.problem_type,
        "labels": ft.labels,
        "tokenizer_normalizes_tweets": normalizer is not None,
    }
    if verify:
        info["max_abs_diff_probabilities"] = diff = classifier_difference(ft, out_dir)
        if exact and not diff <= PARITY_TOL:
            raise HFInteropError(f"{out_dir}: the exported classifier differs from the source (max |diff| of probabilities {diff:.3g})")
    (out_dir / "README.md").write_text(model_card(model_dir, ft, info, reports), encoding="utf-8")
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
