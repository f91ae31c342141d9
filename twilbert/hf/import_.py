"""``import-hf``: a transformers BERT, ALBERT, RoBERTa or XLM-R directory as a TWilBERT checkpoint, exactly or not at all.

Refused, with every reason (:func:`import_problems`): other model types, decoders / cross-attention,
non-absolute position embeddings, ``intermediate_size != 4 * hidden_size`` (our FFN is 4H),
``type_vocab_size`` other than 2 (RoBERTa / XLM-R: 1 or 2), a RoBERTa ``pad_token_id`` outside its
position table, ALBERT groups other than all-shared or unshared, ``inner_group_num != 1``,
and a tanh-approximate GELU (``gelu_new``, ``gelu_pytorch_tanh``..., ALBERT's default) unless
``approximate_gelu``: ours is exact (see docs/deviations.md#gelu-exact), so the outputs then differ slightly and
the probe's max difference is reported instead of enforced. Weights load only through safetensors.

The checkpoint's MLM head becomes ours (``mlm_transform: true``); the ROP head (and the MLM head when
the checkpoint has none) is freshly initialised, seeded, for continued pre-training. A shared ALBERT
with an identity ``embedding_hidden_mapping_in`` (our own export of an unfactorised model) is read back
unfactorised. The tokenizer is our own ``spm.model`` when the checkpoint carries it, else the
checkpoint's own renumbered to our special ids (``twilbert.hf.tokenizer``), the vocabulary rows
permuted to match, and the ``normalize.rules`` it expects suggested
(:func:`~twilbert.hf.tokenizer.suggested_rules`). ``max_len`` keeps the first ``2 * max_len + 3``
position rows (BERT has 512; our table is sized by ``max_len``); RoBERTa's rows count from
``pad_token_id + 1`` (docs/deviations.md#roberta-layout).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from twilbert.config import to_dict
from twilbert.hf.common import PARITY_TOL, HFInteropError, quiet_transformers, refuse
from twilbert.hf.probe import hidden_state_difference, mlm_logit_difference
from twilbert.hf.tokenizer import (
    RENUMBER_PROBES,
    check_renumbered,
    find_spm,
    lowercases,
    renumber_tokenizer,
    source_tokenizer,
    suggested_rules,
)
from twilbert.hf.weights import FAMILIES, Family, from_hf_state_dict, model_config_from_hf
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.tokens import SPECIAL_TOKENS
from twilbert.utils import sha256_file

EXACT_GELU = ("gelu", "gelu_python")
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh", "gelu_accurate")


def _albert_problems(hf_cfg: Any) -> list[str]:
    out = []
    G, L = hf_cfg.num_hidden_groups, hf_cfg.num_hidden_layers
    if G not in (1, L):
        out.append(f"num_hidden_groups {G}: TWilBERT shares all layers (1) or none ({L})")
    if hf_cfg.inner_group_num != 1:
        out.append(f"inner_group_num {hf_cfg.inner_group_num}: only 1 layer per group")
    return out


def _roberta_problems(hf_cfg: Any) -> list[str]:
    pad, rows = hf_cfg.pad_token_id, hf_cfg.max_position_embeddings
    if pad is None or not 0 <= pad < rows - 1:
        return [f"pad_token_id {pad}: RoBERTa's positions start at pad_token_id + 1, inside its {rows} position rows"]
    return []


# refusals that only one family's settings can trigger
_FAMILY_PROBLEMS = {"albert": _albert_problems, "roberta": _roberta_problems, "xlm-roberta": _roberta_problems}


def import_problems(hf_cfg: Any, *, approximate_gelu: bool = False) -> list[str]:
    """Every setting of an HF config TWilBERT cannot express (empty = importable)."""
    kind = getattr(hf_cfg, "model_type", None)
    if kind not in FAMILIES:
        *rest, last = FAMILIES
        return [f"model_type {kind!r}: only {', '.join(rest)} and {last} checkpoints can be imported"]
    out = _size_problems(hf_cfg)
    if out:  # the checks below compute with these sizes
        return out
    if getattr(hf_cfg, "is_decoder", False) or getattr(hf_cfg, "add_cross_attention", False):
        out.append("is_decoder / add_cross_attention: TWilBERT is an encoder")
    if getattr(hf_cfg, "position_embedding_type", "absolute") != "absolute":
        out.append(f"position_embedding_type {hf_cfg.position_embedding_type!r}: only absolute positions")
    if hf_cfg.intermediate_size != 4 * hf_cfg.hidden_size:
        out.append(f"intermediate_size {hf_cfg.intermediate_size} != 4 x hidden_size {hf_cfg.hidden_size}: the TWilBERT FFN is 4H")
    if hf_cfg.type_vocab_size not in FAMILIES[kind].type_rows:
        out.append(f"type_vocab_size {hf_cfg.type_vocab_size}: TWilBERT has exactly 2 segments")
    if hf_cfg.hidden_size % hf_cfg.num_attention_heads:
        out.append(f"hidden_size {hf_cfg.hidden_size} is not divisible by num_attention_heads {hf_cfg.num_attention_heads}")
    act = hf_cfg.hidden_act
    if act in TANH_GELU and not approximate_gelu:
        out.append(f"hidden_act {act!r} is a tanh approximation of GELU, TWilBERT's is exact (pass --approximate-gelu to import anyway)")
    elif act not in EXACT_GELU + TANH_GELU:
        out.append(f"hidden_act {act!r}: TWilBERT uses GELU")
    if kind in _FAMILY_PROBLEMS:
        out += _FAMILY_PROBLEMS[kind](hf_cfg)
    return out


# HF size keys -> the TWilBERT bounds they must meet (twilbert.model.size.MODEL_BOUNDS): checked before
# transformers builds anything, so a crafted vocab_size of 1e12 is one line, not an allocation.
_HF_SIZES = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_hidden_layers": "n_encoders",
             "num_attention_heads": "n_heads", "max_position_embeddings": "max_positions", "embedding_size": "embedding_size",
             "intermediate_size": "hidden_size", "type_vocab_size": "n_heads"}


def _size_problems(hf_cfg: Any) -> list[str]:
    from twilbert.model.size import MODEL_BOUNDS

    out = []
    for key, ours in _HF_SIZES.items():
        if not hasattr(hf_cfg, key):
            continue
        value, (lo, hi) = getattr(hf_cfg, key), MODEL_BOUNDS[ours]
        hi = 4 * hi if key == "intermediate_size" else hi
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            out.append(f"{key} {str(value)[:40]!r}: expected an integer in [{lo}, {hi}]")
    return out


def _load_checkpoint(hf_dir: Path, approximate_gelu: bool) -> tuple[Any, Family, torch.nn.Module, bool]:
    """(HF config, its family, the *ForMaskedLM model, whether it has an MLM head), after the refusals."""
    transformers = quiet_transformers()
    try:
        hf_cfg = transformers.AutoConfig.from_pretrained(str(hf_dir))
    except Exception as exc:  # noqa: BLE001 - any failure to read an untrusted config.json (bad JSON, wrong types) is the directory's
        raise HFInteropError(f"{hf_dir}: not a transformers model directory ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]})") from None
    refuse(f"{hf_dir}: cannot import into TWilBERT", import_problems(hf_cfg, approximate_gelu=approximate_gelu))
    family = FAMILIES[hf_cfg.model_type]
    if not any(hf_dir.glob("*.safetensors")):
        # Weights load only through safetensors: a pickled pytorch_model.bin can run code on load.
        raise HFInteropError(
            f"{hf_dir}: no *.safetensors weights; TWilBERT loads weights only through safetensors "
            "(convert a trusted pytorch_model.bin first: AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True))"
        )
    try:
        hf_model, loading = family.hf_class("ForMaskedLM").from_pretrained(str(hf_dir), output_loading_info=True, use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - damaged weights, shapes that disagree with config.json (safetensors' own error too)
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise HFInteropError(f"{hf_dir}: transformers cannot load its weights ({first.strip()[:200]})") from None
    hf_model.eval()
    has_head = not any(k.startswith(family.mlm_prefix) for k in loading["missing_keys"])
    return hf_cfg, family, hf_model, has_head


def _as_twilbert(hf_cfg: Any, family: Family, hf_model: torch.nn.Module, has_head: bool, seed: int, warns: list[str]) -> tuple[TWilBERT, bool]:
    """Our model holding the checkpoint's weights (heads it lacks seeded), and whether its MLM head came too."""
    hf_sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    factorize = None
    if family.projection and hf_cfg.embedding_size == hf_cfg.hidden_size:
        w = hf_sd[f"{family.base}.{family.projection}.weight"]
        b = hf_sd[f"{family.base}.{family.projection}.bias"]
        if torch.equal(w, torch.eye(w.shape[0], dtype=w.dtype)) and not b.any():
            factorize = False  # our own unfactorised shared export: drop the identity again
    cfg = model_config_from_hf(hf_cfg, factorize=factorize)
    if has_head and not cfg.tie_mlm_decoder and cfg.factorize_embeddings and cfg.embedding_size != cfg.hidden_size:
        has_head = False  # an untied factorised ALBERT decoder reads width E; ours reads H
        warns.append("the checkpoint's untied ALBERT MLM head (width E) has no TWilBERT counterpart: freshly initialised")
    torch.manual_seed(seed)
    model = TWilBERT(cfg)
    state = model.state_dict()
    state.update(from_hf_state_dict(hf_sd, cfg, family.model_type, with_mlm_head=has_head, pad_token_id=hf_cfg.pad_token_id))
    model.load_state_dict(state, strict=True)
    model.eval()
    if not has_head:
        warns.append("no MLM head in the checkpoint: freshly initialised (seed %d)" % seed)
    warns.append("ROP head freshly initialised (NSP/SOP heads read HF's pooler, which TWilBERT does not have)")
    return model, has_head


def _positions(max_len: int | None, cfg: ModelConfig) -> int | None:
    """Rows of the position table to keep for ``--max-len`` (None: all), refused when there are too few."""
    if max_len is None:
        return None
    positions = 2 * max_len + 3
    if max_len < 1:
        raise HFInteropError(f"--max-len {max_len}: must be >= 1 (tokens per segment, representation.max_len)")
    if positions > cfg.max_positions:
        raise HFInteropError(
            f"--max-len {max_len}: needs {positions} positions (2 * max_len + 3), the checkpoint has {cfg.max_positions} "
            f"(largest max_len: {(cfg.max_positions - 3) // 2})"
        )
    return positions


def _verify(hf_dir: Path, model: TWilBERT, hf_model: torch.nn.Module, family: Family, has_head: bool, approximate_gelu: bool) -> float:
    """Max |difference| of hidden states on the probe batch, refused over the tolerance (exact GELU)."""
    diff = hidden_state_difference(model, getattr(hf_model, family.base))
    if not approximate_gelu and not diff <= PARITY_TOL:
        raise HFInteropError(f"{hf_dir}: the imported model differs from the source (max |diff| {diff:.3g} > {PARITY_TOL})")
    if has_head:
        head_diff = mlm_logit_difference(model, hf_model)
        if not approximate_gelu and not head_diff <= PARITY_TOL * 10:  # logits: a sum over H, larger values
            raise HFInteropError(f"{hf_dir}: the imported MLM head differs from the source (max |diff| of logits {head_diff:.3g})")
    return diff


def _carry_tokenizer(
    hf_dir: Path, cfg: ModelConfig, warns: list[str], meta: dict[str, Any]
) -> tuple[Path | None, str | None, list[int] | None]:
    """(our own spm.model to copy, or the checkpoint's tokenizer renumbered and its ``perm``; or neither).
    A checkpoint's own tokenizer also says which ``normalize.rules`` it expects (into ``meta``)."""
    from twilbert.text.tokenizer import Tokenizer

    spm = find_spm(hf_dir)
    if spm is not None:
        try:
            tok = Tokenizer.from_file(spm)
            if tok.vocab_size == cfg.vocab_size:
                return spm, None, None
            warns.append(f"{spm}: {tok.vocab_size} pieces but vocab_size={cfg.vocab_size}: tokenizer not carried over")
        except (ValueError, RuntimeError):
            pass  # not ours (another project's SentencePiece ids): renumbered below like any other
    source = source_tokenizer(hf_dir)
    if source is None:
        warns.append("no tokenizer in the checkpoint: supply the vocabulary it was trained with before using it")
        return None, None, None
    spec, roles = source
    try:
        renumbered, perm = renumber_tokenizer(spec, roles, cfg.vocab_size)
        check_renumbered(spec, renumbered, perm, RENUMBER_PROBES)
    except HFInteropError as exc:
        raise HFInteropError(f"{hf_dir}: {exc}") from None
    meta["normalize_rules"], meta["normalize_rules_why"] = suggested_rules(spec)
    if lowercases(spec) is False:
        warns.append("its tokenizer is cased: set normalize.rules.lowercase: false, or the pipeline lower-cases tweets before it sees them")
    if perm != list(range(len(perm))):
        moved = {ours: perm[i] for i, ours in enumerate(SPECIAL_TOKENS)}
        warns.append(f"vocabulary renumbered to TWilBERT's special ids (source ids {moved}); embedding rows permuted to match")
    return None, renumbered, perm


def _reshape(
    model: TWilBERT, renumbered: str | None, perm: list[int] | None, positions: int | None, warns: list[str]
) -> TWilBERT:
    """The model with its vocabulary rows in the renumbered order and its positions cut to ``positions``."""
    from twilbert.text.tokenizer import HFTokenizer

    cfg, state, reshaped = model.config, model.state_dict(), {}
    if renumbered is not None:
        # Rows past the tokenizer (Hub checkpoints often pad vocab_size) are ids no text can produce:
        # dropped, so that the model's vocab_size is the tokenizer's, as the pipeline derives it.
        size = HFTokenizer(renumbered.encode("utf-8")).vocab_size
        index = torch.tensor(perm[:size])
        for key in ("embeddings.token.weight", "mlm_head.bias", "mlm_head.decoder.weight"):
            if key in state:
                state[key] = state[key][index]  # (V', ...) rows in the new id order
        if size < cfg.vocab_size:
            warns.append(f"{cfg.vocab_size - size} embedding rows past the tokenizer's {size} tokens dropped (no text maps to them)")
            reshaped["vocab_size"] = size
    if positions is not None:
        state["embeddings.position.weight"] = state["embeddings.position.weight"][:positions]  # (P, E): the first P rows
        reshaped["max_positions"] = positions
    if renumbered is None and not reshaped:
        return model
    model = TWilBERT(replace(cfg, **reshaped))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _write(out_dir: Path, model: TWilBERT, own_spm: Path | None, renumbered: str | None, meta: dict[str, Any]) -> Path | None:
    """The checkpoint, its tokenizer and ``pretrain.json`` in ``out_dir``; returns the tokenizer file."""
    from twilbert.text.tokenizer import HF_TOKENIZER_FILE, SPM_FILE
    from twilbert.train.checkpoint import PRETRAIN_META, save_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir, model, to_dict(model.config), rng=False)
    for stale in (SPM_FILE, HF_TOKENIZER_FILE):  # an earlier import into the same directory
        (out_dir / stale).unlink(missing_ok=True)
    tok_file = None
    if own_spm is not None:
        tok_file = out_dir / SPM_FILE
        shutil.copyfile(own_spm, tok_file)
    elif renumbered is not None:
        tok_file = out_dir / HF_TOKENIZER_FILE
        tok_file.write_text(renumbered, encoding="utf-8")
    if tok_file is not None:
        meta.update(tokenizer_path=str(tok_file.resolve()), tokenizer_sha256=sha256_file(tok_file))
    (out_dir / PRETRAIN_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return tok_file


def import_hf(
    hf_dir: str | Path,
    out_dir: str | Path,
    *,
    approximate_gelu: bool = False,
    seed: int = 0,
    verify: bool = True,
    max_len: int | None = None,
) -> dict[str, Any]:
    """Convert an HF BERT/ALBERT directory into a TWilBERT checkpoint (``config.json`` = flat model
    config, ``model.safetensors``, ``checksums.json``, ``pretrain.json``, the tokenizer) usable as
    ``training.path_initial_weights`` (continued pre-training), ``finetuning.path_load_weights`` and by
    ``twilbert embed``. Heads the checkpoint lacks (ROP always, MLM sometimes) are freshly initialised
    with ``seed``. A renumbered tokenizer is used by the pipeline in place of the vocab stage's
    (``vocab.pretrained``). ``max_len``: keep the first ``2 * max_len + 3`` position rows (the rows kept
    are unchanged); needed to continue pre-training a checkpoint with BERT's 512 positions.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    hf_cfg, family, hf_model, has_head = _load_checkpoint(hf_dir, approximate_gelu)
    warns: list[str] = []
    model, has_head = _as_twilbert(hf_cfg, family, hf_model, has_head, seed, warns)
    positions = _positions(max_len, model.config)
    diff = _verify(hf_dir, model, hf_model, family, has_head, approximate_gelu) if verify else None
    meta: dict[str, Any] = {"imported_from": str(hf_dir), "hf_model_type": family.model_type, "hf_hidden_act": hf_cfg.hidden_act}
    own_spm, renumbered, perm = _carry_tokenizer(hf_dir, model.config, warns, meta)
    model = _reshape(model, renumbered, perm, positions, warns)
    tok_file = _write(out_dir, model, own_spm, renumbered, meta)
    for w in warns:
        warnings.warn(w, stacklevel=2)
    return {
        "source": str(hf_dir),
        "model_type": family.model_type,
        "model": to_dict(model.config),
        "mlm_head": "imported" if has_head else "fresh",
        "tokenizer": str(tok_file) if tok_file is not None else None,
        "max_abs_diff_hidden": diff,
        "normalize_rules": meta.get("normalize_rules"),
        "normalize_rules_why": meta.get("normalize_rules_why"),
        "warnings": warns,
    }
