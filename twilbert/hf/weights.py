"""The maps between our weights and configs and transformers', one :class:`Family` per model family.

===========================  ===========================================================
TWilBERT                     transformers
===========================  ===========================================================
embeddings.token/position/   ``word_/position_/token_type_embeddings``, ``LayerNorm``
segment/norm                 (at width E; ALBERT: then ``embedding_hidden_mapping_in``)
attn.qkv (fused)             ``query``/``key``/``value`` (split in that order)
attn.out, norm1              BERT ``attention.output.dense/LayerNorm``; ALBERT ``attention.dense/LayerNorm``
ffn.fc_in, ffn.fc_out, norm2 BERT ``intermediate.dense``, ``output.dense/LayerNorm``;
                             ALBERT ``ffn``, ``ffn_output``, ``full_layer_layer_norm``
mlm_head (with transform)    BERT ``cls.predictions.*``; ALBERT ``predictions.*``; RoBERTa ``lm_head.*``
===========================  ===========================================================

One table serves both directions (:func:`to_hf_state_dict`, :func:`from_hf_state_dict`), so a new
family is a new :class:`Family` entry plus its config translation and refusal rules. BERT is chosen
when the embeddings are not factorised and no layer is shared; ALBERT otherwise (E -> H is a plain
Linear in both; shared layers are ``num_hidden_groups=1``, unshared ones one layer per group, and a
shared model with E = H gets an identity ``embedding_hidden_mapping_in``). RoBERTa and XLM-R are
BERT's layers under other names, chosen by what a checkpoint was imported from (``export_family``),
with two layout differences handled exactly (docs/deviations.md#roberta-layout): their position ids
start at ``pad_token_id + 1`` (the rows before are cut on import and written as zeros on export), and
they usually have one token-type row (our two segments both get it; exported as one row while ours are
still equal, else as ``type_vocab_size: 2``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from twilbert.hf.common import require_transformers
from twilbert.model.config import ModelConfig, ROPConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.tokens import CLS_ID, PAD_ID, SEP_ID

# Our embeddings parameter -> the family's, under "<model_type>.embeddings." (the same in every family).
EMBEDDINGS = {
    "token.weight": "word_embeddings.weight",
    "position.weight": "position_embeddings.weight",
    "segment.weight": "token_type_embeddings.weight",
    "norm.weight": "LayerNorm.weight",
    "norm.bias": "LayerNorm.bias",
}


@dataclass(frozen=True)
class Family:
    """How one transformers model family names our weights; base-relative names exclude the base prefix (``bert.``)."""

    model_type: str  # config.model_type
    class_stem: str  # "Bert": BertConfig, BertModel, BertForMaskedLM...
    layer: str  # base-relative prefix of the layer (ALBERT: group) holding block {i}'s weights
    qkv: tuple[str, str, str]  # layer-relative query/key/value names
    block: dict[str, str]  # our block parameter -> layer-relative name (qkv apart)
    mlm_prefix: str  # the MLM head's prefix in *ForMaskedLM (its decoder is mlm_prefix + "decoder.")
    mlm: dict[str, str]  # our mlm_head parameter (transform = Sequential(Linear, GELU, LayerNorm)) -> theirs
    projection: str | None = None  # base-relative E -> H Linear, when the family has one
    config_extras: Callable[[ModelConfig], dict[str, Any]] | None = None  # family-only config keys
    position_offset: bool = False  # RoBERTa: real tokens sit at positions pad_token_id + 1, + 2, ...
    type_rows: tuple[int, ...] = (2,)  # token-type rows the family's checkpoints may have (ours: 2)
    base_attr: str = ""  # the base model's attribute and key prefix in *ForMaskedLM ("": model_type)
    # *ForSequenceClassification: the H -> H tanh layer on [CLS] and the linear layer to the labels
    seq_head: tuple[str, str] = ("bert.pooler.dense", "classifier")

    @property
    def base(self) -> str:
        """``"bert"``, ``"albert"``, ``"roberta"`` (XLM-R too): where the encoder sits in a heads model."""
        return self.base_attr or self.model_type

    def hf_class(self, suffix: str):
        """``"Config"``, ``"Model"``, ``"ForMaskedLM"``, ``"ForSequenceClassification"``... of this family."""
        return getattr(require_transformers(), self.class_stem + suffix)


def _albert_config(cfg: ModelConfig) -> dict[str, Any]:
    return {
        "embedding_size": cfg.embedding_size,
        "num_hidden_groups": 1 if cfg.cross_sharing else cfg.n_encoders,
        "inner_group_num": 1,
        "bos_token_id": CLS_ID,
        "eos_token_id": SEP_ID,
        "classifier_dropout_prob": 0.1,
    }


_TRANSFORM = {
    "transform.0.weight": "dense.weight",
    "transform.0.bias": "dense.bias",
    "transform.2.weight": "LayerNorm.weight",
    "transform.2.bias": "LayerNorm.bias",
}

BERT = Family(
    model_type="bert",
    class_stem="Bert",
    layer="encoder.layer.{i}.",
    qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
    block={
        "attn.out": "attention.output.dense",
        "norm1": "attention.output.LayerNorm",
        "ffn.fc_in": "intermediate.dense",
        "ffn.fc_out": "output.dense",
        "norm2": "output.LayerNorm",
    },
    mlm_prefix="cls.predictions.",
    mlm={**{k: "transform." + v for k, v in _TRANSFORM.items()}, "bias": "bias"},
)
ALBERT = Family(
    model_type="albert",
    class_stem="Albert",
    layer="encoder.albert_layer_groups.{i}.albert_layers.0.",
    qkv=("attention.query", "attention.key", "attention.value"),
    block={
        "attn.out": "attention.dense",
        "norm1": "attention.LayerNorm",
        "ffn.fc_in": "ffn",
        "ffn.fc_out": "ffn_output",
        "norm2": "full_layer_layer_norm",
    },
    mlm_prefix="predictions.",
    mlm={**_TRANSFORM, "bias": "bias"},
    projection="encoder.embedding_hidden_mapping_in",
    config_extras=_albert_config,
    seq_head=("albert.pooler", "classifier"),
)


def _roberta_config(cfg: ModelConfig) -> dict[str, Any]:
    return {"bos_token_id": CLS_ID, "eos_token_id": SEP_ID}


def _roberta(model_type: str, class_stem: str) -> Family:
    return Family(
        model_type=model_type,
        class_stem=class_stem,
        layer=BERT.layer,
        qkv=BERT.qkv,
        block=BERT.block,
        mlm_prefix="lm_head.",
        mlm={
            "transform.0.weight": "dense.weight",
            "transform.0.bias": "dense.bias",
            "transform.2.weight": "layer_norm.weight",
            "transform.2.bias": "layer_norm.bias",
            "bias": "bias",
        },
        config_extras=_roberta_config,
        position_offset=True,
        type_rows=(1, 2),
        base_attr="roberta",
        seq_head=("classifier.dense", "classifier.out_proj"),
    )


ROBERTA = _roberta("roberta", "Roberta")
XLM_ROBERTA = _roberta("xlm-roberta", "XLMRoberta")
FAMILIES = {f.model_type: f for f in (BERT, ALBERT, ROBERTA, XLM_ROBERTA)}


def first_position(family: Family, pad_token_id: int | None) -> int:
    """Row of the family's position table that holds position 0 of ours (RoBERTa: ``pad_token_id + 1``)."""
    return pad_token_id + 1 if family.position_offset else 0


def export_type_rows(family: Family, segment: torch.Tensor) -> int:
    """Token-type rows to export: one while both our segment rows are equal (an imported RoBERTa before
    any pair training), where the family allows it; else two."""
    return 1 if 1 in family.type_rows and torch.equal(segment[0], segment[1]) else 2


def family_of(cfg: ModelConfig) -> Family:
    """ALBERT for factorised embeddings or shared layers, else BERT."""
    return ALBERT if (cfg.factorize_embeddings or cfg.cross_sharing) else BERT


def hf_config_dict(cfg: ModelConfig, family: Family | None = None, type_rows: int = 2) -> dict[str, Any]:
    """The transformers config (BertConfig / AlbertConfig / RobertaConfig... keyword arguments) of ``cfg``
    (``family``: default :func:`family_of`; ``type_rows``: see :func:`export_type_rows`)."""
    family = family or family_of(cfg)
    d: dict[str, Any] = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.n_encoders,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": 4 * cfg.hidden_size,
        "hidden_act": "gelu",  # exact erf GELU, as ours
        # HF has one dropout for embeddings and residual branches: training-only, so no parity issue
        "hidden_dropout_prob": cfg.output_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_positions + first_position(family, PAD_ID),
        "type_vocab_size": type_rows,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": PAD_ID,
        "tie_word_embeddings": bool(cfg.tie_mlm_decoder),
    }
    extras = family.config_extras
    return d | (extras(cfg) if extras else {})


def model_config_from_hf(hf_cfg: Any, *, factorize: bool | None = None) -> ModelConfig:
    """Translate an HF BERT/ALBERT/RoBERTa/XLM-R config (``factorize``: override for an identity E -> H
    mapping). RoBERTa's position rows before ``pad_token_id + 1`` are not counted."""
    H = hf_cfg.hidden_size
    skipped = first_position(FAMILIES[hf_cfg.model_type], hf_cfg.pad_token_id)
    if hf_cfg.model_type == "albert":
        E = hf_cfg.embedding_size
        fact = True if factorize is None else factorize
        shared = hf_cfg.num_hidden_groups == 1 and hf_cfg.num_hidden_layers > 1
    else:
        E, fact, shared = H, False, False
    return ModelConfig(
        vocab_size=hf_cfg.vocab_size,
        max_positions=hf_cfg.max_position_embeddings - skipped,
        factorize_embeddings=fact,
        cross_sharing=shared,
        embedding_size=E if fact else H,
        hidden_size=H,
        n_encoders=hf_cfg.num_hidden_layers,
        n_heads=hf_cfg.num_attention_heads,
        attention_size=None,
        input_dropout=float(hf_cfg.hidden_dropout_prob),
        output_dropout=float(hf_cfg.hidden_dropout_prob),
        attention_dropout=float(hf_cfg.attention_probs_dropout_prob),
        attention_bias=True,
        initializer_range=float(hf_cfg.initializer_range),
        embedding_layer_norm=True,
        norm="post",
        layer_norm_eps=float(hf_cfg.layer_norm_eps),
        tie_mlm_decoder=bool(getattr(hf_cfg, "tie_word_embeddings", True)),
        mlm_transform=True,
        pkm=False,
        rop=ROPConfig(use_rop=True, n_hidden=0),
    )


def _layers(family: Family, cfg: ModelConfig) -> list[tuple[int, str]]:
    """(our block index, full HF prefix) of every HF layer that holds weights (shared: only one)."""
    n = 1 if cfg.cross_sharing else cfg.n_encoders
    return [(i, f"{family.base}." + family.layer.format(i=i)) for i in range(n)]


def to_hf_state_dict(model: TWilBERT, *, with_mlm_head: bool, family: Family | None = None) -> dict[str, torch.Tensor]:
    """Our weights under HF's names (``bert.``/``albert.``/``roberta.`` prefixed, heads as in *ForMaskedLM)."""
    cfg = model.config
    family = family or family_of(cfg)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    base = f"{family.base}."
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in EMBEDDINGS.items():
        out[base + "embeddings." + theirs] = sd["embeddings." + ours]
    if family.position_offset:  # rows 0..PAD_ID: never read by a real token (PAD_ID's row is the padding row)
        pos = sd["embeddings.position.weight"]  # (P, E)
        out[base + "embeddings.position_embeddings.weight"] = torch.cat([pos.new_zeros(first_position(family, PAD_ID), pos.shape[1]), pos])
    out[base + "embeddings.token_type_embeddings.weight"] = sd["embeddings.segment.weight"][: export_type_rows(family, sd["embeddings.segment.weight"])]
    if family.projection:
        H = cfg.hidden_size
        if cfg.factorize_embeddings:
            w, b = sd["embeddings.project.weight"], sd["embeddings.project.bias"]
        else:  # shared layers without factorisation: the E -> H mapping is the identity
            w, b = torch.eye(H), torch.zeros(H)
        out[base + family.projection + ".weight"] = w
        out[base + family.projection + ".bias"] = b
    A = cfg.n_heads * cfg.head_dim
    for block, prefix in _layers(family, cfg):
        ours = f"encoder.blocks.{block}."
        for name, w in zip(family.qkv, sd[ours + "attn.qkv.weight"].split(A, 0)):
            out[prefix + f"{name}.weight"] = w  # (A*d, H) each
        qkv_bias = sd.get(ours + "attn.qkv.bias", torch.zeros(3 * A))  # attention_bias: false -> zeros (exact)
        for name, b in zip(family.qkv, qkv_bias.split(A, 0)):
            out[prefix + f"{name}.bias"] = b
        for mine, theirs in family.block.items():
            out[prefix + theirs + ".weight"] = sd[ours + mine + ".weight"]
            bias = sd.get(ours + mine + ".bias")
            out[prefix + theirs + ".bias"] = bias if bias is not None else torch.zeros(sd[ours + mine + ".weight"].shape[0])
    if with_mlm_head:
        for mine, theirs in family.mlm.items():
            out[family.mlm_prefix + theirs] = sd["mlm_head." + mine]
        decoder = family.mlm_prefix + "decoder."
        out[decoder + "bias"] = sd["mlm_head.bias"]
        out[decoder + "weight"] = sd["embeddings.token.weight"] if cfg.tie_mlm_decoder else sd["mlm_head.decoder.weight"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def from_hf_state_dict(
    hf: dict[str, torch.Tensor], cfg: ModelConfig, kind: str, *, with_mlm_head: bool, pad_token_id: int | None = None
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_hf_state_dict`: HF names -> ours (encoder, and the MLM head if asked).
    ``pad_token_id``: the source config's (RoBERTa's position rows start after it)."""
    family = FAMILIES[kind]
    base = f"{family.base}."
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in EMBEDDINGS.items():
        out["embeddings." + ours] = hf[base + "embeddings." + theirs]
    first = first_position(family, pad_token_id)
    out["embeddings.position.weight"] = out["embeddings.position.weight"][first : first + cfg.max_positions]  # (P, E)
    out["embeddings.segment.weight"] = out["embeddings.segment.weight"].expand(2, -1)  # one row: both segments get it
    if cfg.factorize_embeddings:
        out["embeddings.project.weight"] = hf[base + family.projection + ".weight"]
        out["embeddings.project.bias"] = hf[base + family.projection + ".bias"]
    for block, prefix in _layers(family, cfg):
        ours = f"encoder.blocks.{block}."
        out[ours + "attn.qkv.weight"] = torch.cat([hf[prefix + f"{n}.weight"] for n in family.qkv], 0)  # (3*A*d, H)
        out[ours + "attn.qkv.bias"] = torch.cat([hf[prefix + f"{n}.bias"] for n in family.qkv], 0)
        for mine, theirs in family.block.items():
            out[ours + mine + ".weight"] = hf[prefix + theirs + ".weight"]
            out[ours + mine + ".bias"] = hf[prefix + theirs + ".bias"]
    if with_mlm_head:
        for mine, theirs in family.mlm.items():
            out["mlm_head." + mine] = hf[family.mlm_prefix + theirs]
        # transformers 5 keeps the decoder's own bias apart from `predictions.bias` when the decoder is
        # untied, and the forward pass adds the decoder's; tied, the two are one tensor.
        decoder = family.mlm_prefix + "decoder."
        if decoder + "bias" in hf:
            out["mlm_head.bias"] = hf[decoder + "bias"]
        if not cfg.tie_mlm_decoder:
            out["mlm_head.decoder.weight"] = hf[decoder + "weight"]
    return out
