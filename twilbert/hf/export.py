"""``export-hf``: a TWilBERT checkpoint as a transformers BERT, ALBERT, RoBERTa or XLM-R directory.

What cannot be expressed is refused with every reason (:func:`export_problems`); what is exported is
exact, checked by reloading the directory and comparing hidden states on a probe batch. Where
transformers differs from us:

* **GELU**: ours is exact (erf), exported as ``hidden_act: gelu`` (see docs/deviations.md#gelu-exact).
* **Attention biases**: HF always has them; ``attention_bias: false`` is exported as zero biases (exact;
  see docs/deviations.md#attention-bias).
* **Embedding LayerNorm**: HF always has one, and no LayerNorm parameters reproduce the identity, so
  ``embedding_layer_norm: false`` (the original TWilBERT architecture) is refused (see
  docs/deviations.md#embedding-layer-norm).
* **Heads**: the MLM head is exported when HF can express it (:func:`mlm_head_exportable`), giving
  ``*ForMaskedLM``; otherwise the encoder alone (``*Model``). The ROP head never is: NSP/SOP heads
  read HF's pooler (``tanh(dense([CLS]))``), which we do not have, so ``AutoModel`` reports a freshly
  initialised pooler that hidden states do not use. A fine-tuned model exports as a sequence
  classifier (``twilbert.hf.classifier``), or its encoder alone with ``encoder_only``.
* **Family**: what the model was imported from (``hf_model_type`` in the ``pretrain.json`` of the
  import, followed through ``encoder_source`` and ``training.path_initial_weights``), so a RoBERTa
  continued or fine-tuned here goes back as RoBERTa (:func:`export_family`); else BERT, or ALBERT for
  factorised / shared models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from twilbert.hf.common import PARITY_TOL, HFInteropError, quiet_transformers, refuse
from twilbert.hf.probe import hidden_state_difference, mlm_logit_difference
from twilbert.hf.tokenizer import pretrained_tokenizer_path, save_hf_tokenizer
from twilbert.hf.weights import FAMILIES, Family, export_type_rows, family_of, hf_config_dict, to_hf_state_dict
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.utils import sha256_file

EXPORT_INFO = "twilbert_export.json"


def export_problems(cfg: ModelConfig, family: Family | None = None) -> list[str]:
    """Every option of ``cfg`` that BERT/ALBERT (or ``family``) cannot express (empty = exportable)."""
    out = []
    if family is not None and family.projection is None and (cfg.factorize_embeddings or cfg.cross_sharing):
        out.append(f"factorize_embeddings / cross_sharing: {family.class_stem} has neither (export as albert)")
    if cfg.pkm:
        out.append(f"pkm: product-key memory layers {list(cfg.pkm_params.in_layers)} have no transformers counterpart")
    if cfg.norm != "post":
        out.append("norm: pre (pre-LN) -- BERT and ALBERT are post-LN")
    if not cfg.embedding_layer_norm:
        out.append("embedding_layer_norm: false -- BERT and ALBERT always normalise the embeddings")
    if cfg.hidden_size % cfg.n_heads or cfg.head_dim * cfg.n_heads != cfg.hidden_size:
        out.append(
            f"attention_size: {cfg.head_dim} x n_heads {cfg.n_heads} != hidden_size {cfg.hidden_size} -- "
            "transformers' attention is hidden_size wide"
        )
    return out


def mlm_head_exportable(cfg: ModelConfig, family: Family | None = None) -> bool:
    """HF's prediction heads always transform (Linear-act-LN); ALBERT's decoder reads width E."""
    if not cfg.mlm_transform:
        return False
    if (family or family_of(cfg)).projection is None:
        return True
    width = cfg.embedding_size if (cfg.tie_mlm_decoder and cfg.factorize_embeddings) else cfg.hidden_size
    return width == cfg.embedding_size


def to_hf_model(model: TWilBERT, *, with_mlm_head: bool | None = None, family: Family | None = None) -> torch.nn.Module:
    """An HF ``*ForMaskedLM`` (MLM head exportable and wanted) or base ``*Model`` holding our weights
    (``family``: default :func:`~twilbert.hf.weights.family_of`)."""
    cfg = model.config
    refuse("cannot export to transformers", export_problems(cfg, family))
    quiet_transformers()
    family = family or family_of(cfg)
    head = mlm_head_exportable(cfg, family) if with_mlm_head is None else with_mlm_head
    if head and not mlm_head_exportable(cfg, family):
        raise HFInteropError("the MLM head cannot be expressed in transformers (needs mlm_transform: true and a decoder of width E)")
    model_cls = family.hf_class("ForMaskedLM" if head else "Model")
    rows = export_type_rows(family, model.embeddings.segment.weight.detach())
    hf_cfg = family.hf_class("Config")(**hf_config_dict(cfg, family, rows), architectures=[model_cls.__name__])
    hf_model = model_cls(hf_cfg) if head else model_cls(hf_cfg, add_pooling_layer=False)
    state = to_hf_state_dict(model, with_mlm_head=head, family=family)
    if not head:
        state = {k.removeprefix(f"{family.base}."): v for k, v in state.items()}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if missing or unexpected:  # a gap in the weight map, never the user's fault
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return hf_model.eval()


def _load_source(model_dir: Path) -> tuple[TWilBERT, Path | None, str]:
    """(encoder, tokenizer path or None, "pretrained" | "finetuned") of a TWilBERT model directory."""
    from twilbert.finetune.model import FORMAT, load_encoder, load_finetuned, resolve_pretrained_dir
    from twilbert.train.checkpoint import read_config

    directory = resolve_pretrained_dir(model_dir)
    if read_config(directory).get("format") == FORMAT:
        ft = load_finetuned(directory)
        return ft.model.encoder, ft.tokenizer_path, "finetuned"
    return load_encoder(directory), None, "pretrained"


def _export_tokenizer(model_dir: Path, cfg: ModelConfig, spm_path: Path | None, source_kind: str) -> Path:
    """The vocabulary file to export: ``spm_path`` if given, else the one ``pretrain.json`` records;
    checked to be the one the model was trained with."""
    if spm_path is None:
        spm_path = pretrained_tokenizer_path(model_dir)
    if spm_path is None or not Path(spm_path).exists():
        raise HFInteropError(f"{model_dir}: no tokenizer found (pretrain.json names none that exists); pass --vocab-model models/vocab")
    from twilbert.text.tokenizer import Tokenizer, tokenizer_file

    tok = Tokenizer.from_file(spm_path)
    if tok.vocab_size != cfg.vocab_size:
        raise HFInteropError(f"{spm_path}: {tok.vocab_size} pieces, the model has vocab_size={cfg.vocab_size}")
    if source_kind == "pretrained":
        from twilbert.finetune.model import pretrained_tokenizer_sha256

        recorded = pretrained_tokenizer_sha256(model_dir)
        if recorded is not None and recorded != tok.sha256:
            raise HFInteropError(f"{spm_path}: not the vocabulary {model_dir} was pre-trained with (sha256 {tok.sha256[:12]} vs {recorded[:12]})")
    return tokenizer_file(spm_path)  # a directory (models/vocab) -> its file


def _recorded_path(recorded: str, directory: Path) -> Path | None:
    """A path a config records, tried as given, then relative to ``directory``'s ancestors (a repository root)."""
    for c in [Path(recorded)] + ([] if Path(recorded).is_absolute() else [p / recorded for p in directory.resolve().parents]):
        if (c / "config.json").is_file() or (c / "final" / "config.json").is_file():
            return c
    return None


def lineage(model_dir: str | Path) -> list[tuple[Path, str, dict[str, Any]]]:
    """Where ``model_dir``'s encoder came from, newest first: ``(directory, "finetuned" | "pretrained" |
    "imported", its config or pretrain.json)``, following a fine-tuned model's ``encoder_source`` and a
    pre-training's ``training.path_initial_weights`` (paths as recorded, or under a repository root)."""
    from twilbert.finetune.model import resolve_pretrained_dir
    from twilbert.train.checkpoint import read_config, read_pretrain_meta

    steps: list[tuple[Path, str, dict[str, Any]]] = []
    directory: Path | None = Path(model_dir)
    while directory is not None and len(steps) < 8:  # imports, continued pre-trainings, fine-tunings
        directory = resolve_pretrained_dir(directory)
        config = read_config(directory)
        if "encoder_source" in config:  # a fine-tuned model
            steps.append((directory, "finetuned", config))
            source = str(config["encoder_source"])
            directory = _recorded_path(source, directory) if source not in ("random", "encoder_factory") else None
            continue
        meta = read_pretrain_meta(directory)
        steps.append((directory, "imported" if meta.get("imported_from") else "pretrained", meta))
        initial = ((meta.get("run_config") or {}).get("training") or {}).get("path_initial_weights")
        directory = _recorded_path(str(initial), directory) if initial else None
    return steps


def export_family(model_dir: str | Path, cfg: ModelConfig) -> Family:
    """The family ``model_dir`` descends from (the ``hf_model_type`` its :func:`lineage` recorded at
    import), else :func:`~twilbert.hf.weights.family_of` (BERT, or ALBERT for factorised / shared models)."""
    for _, kind, meta in lineage(model_dir):
        family = FAMILIES.get(meta.get("hf_model_type")) if kind == "imported" else None
        if family is not None and not export_problems(cfg, family):
            return family
    return family_of(cfg)


def export_hf(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    vocab_model: str | Path | None = None,
    verify: bool = True,
    family: str | None = None,
    encoder_only: bool = False,
) -> dict[str, Any]:
    """Write ``out_dir`` loadable by ``AutoModel``/``AutoTokenizer.from_pretrained`` (see module doc).

    ``model_dir``: a pre-trained checkpoint (``models/pretrain/final`` or its parent) or a fine-tuned
    model directory (a ``*ForSequenceClassification`` with a model card, see
    :func:`twilbert.hf.classifier.export_sequence_classifier`; its encoder alone with ``encoder_only``). The
    tokenizer is ``vocab_model``, else the fine-tuned model's own, else the one ``pretrain.json``
    records. ``family``: ``bert``, ``albert``, ``roberta`` or ``xlm-roberta`` (default: :func:`export_family`).
    Returns (and writes as ``twilbert_export.json``) what was exported.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    encoder, spm_path, source_kind = _load_source(model_dir)
    cfg = encoder.config
    chosen = _family(family, model_dir, cfg)
    if source_kind == "finetuned" and not encoder_only:
        from twilbert.hf.classifier import export_sequence_classifier

        return export_sequence_classifier(model_dir, out_dir, family=chosen, vocab_model=vocab_model, verify=verify)
    refuse(f"{model_dir}: cannot export to transformers", export_problems(cfg, chosen))
    spm_path = _export_tokenizer(model_dir, cfg, Path(vocab_model) if vocab_model is not None else spm_path, source_kind)

    head = source_kind == "pretrained" and mlm_head_exportable(cfg, chosen)
    hf_model = to_hf_model(encoder, with_mlm_head=head, family=chosen)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out_dir))
    save_hf_tokenizer(spm_path, out_dir, model_max_length=cfg.max_positions, type_rows=hf_model.config.type_vocab_size)
    info: dict[str, Any] = {
        "source": str(model_dir),
        "source_kind": source_kind,
        "architecture": hf_model.config.architectures[0],
        "model_type": chosen.model_type,
        "mlm_head": head,
        "not_exported": ["rop_head (NSP/SOP heads read a pooler TWilBERT does not have)"]
        + ([] if head or source_kind == "finetuned" else ["mlm_head (needs mlm_transform: true and, for ALBERT, a decoder of width E)"])
        + (["task head (export without --encoder-only for a *ForSequenceClassification)"] if source_kind == "finetuned" else []),
        "tokenizer_sha256": sha256_file(spm_path),
    }
    if verify:
        info["max_abs_diff_hidden"] = verify_export(encoder, out_dir)
        if head:
            info["max_abs_diff_mlm_logits"] = verify_mlm_head(encoder, out_dir)
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _family(name: str | None, model_dir: Path, cfg: ModelConfig) -> Family:
    """``name``'s family (refused when unknown), else the one ``model_dir`` descends from."""
    if name is None:
        return export_family(model_dir, cfg)
    if name not in FAMILIES:
        raise HFInteropError(f"--family {name!r}: expected one of {list(FAMILIES)}")
    return FAMILIES[name]


def verify_mlm_head(model: TWilBERT, out_dir: str | Path) -> float:
    """Reload ``out_dir`` with ``AutoModelForMaskedLM`` and compare MLM logits on a probe batch."""
    transformers = quiet_transformers()
    reloaded = transformers.AutoModelForMaskedLM.from_pretrained(str(out_dir), use_safetensors=True)
    diff = mlm_logit_difference(model, reloaded)
    if not diff <= PARITY_TOL * 10:  # logits: a sum over H, larger values
        raise HFInteropError(f"{out_dir}: the exported MLM head differs from the source (max |diff| of logits {diff:.3g})")
    return diff


def verify_export(encoder: TWilBERT, out_dir: str | Path) -> float:
    """Reload ``out_dir`` with ``AutoModel`` and compare hidden states on a probe batch."""
    transformers = quiet_transformers()
    reloaded = transformers.AutoModel.from_pretrained(str(out_dir), use_safetensors=True)
    diff = hidden_state_difference(encoder, reloaded)
    if not diff <= PARITY_TOL:
        raise HFInteropError(f"{out_dir}: the exported model differs from the source (max |diff| {diff:.3g} > {PARITY_TOL})")
    return diff
