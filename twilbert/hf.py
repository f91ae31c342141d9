"""Hugging Face ``transformers`` interop: export TWilBERT checkpoints as BERT/ALBERT, import them back.

``transformers`` (and its ``tokenizers``) are imported lazily: the rest of the library never needs them,
and a missing install is a one-line :class:`HFInteropError` ("pip install -e .[hf]").

What maps, exactly (hidden states agree within float rounding, checked on a probe batch at every
export and import, and by ``tests/inference/test_hf.py``):

===========================  ===========================================================
TWilBERT                     transformers
===========================  ===========================================================
embeddings.token/position/   ``word_/position_/token_type_embeddings``, ``LayerNorm``
segment/norm                 (at width E; ALBERT: then ``embedding_hidden_mapping_in``)
attn.qkv (fused)             ``query``/``key``/``value`` (split in that order)
attn.out, norm1              BERT ``attention.output.dense/LayerNorm``; ALBERT ``attention.dense/LayerNorm``
ffn.fc_in, ffn.fc_out, norm2 BERT ``intermediate.dense``, ``output.dense/LayerNorm``;
                             ALBERT ``ffn``, ``ffn_output``, ``full_layer_layer_norm``
mlm_head (with transform)    BERT ``cls.predictions.*``; ALBERT ``predictions.*``
===========================  ===========================================================

Decisions (each one also a line of the refusal message when it applies):

* **Architecture.** BERT when the embeddings are not factorised and no layer is shared; ALBERT
  otherwise: factorised embeddings (E -> H is a plain Linear in both) and/or cross-layer sharing
  (``num_hidden_groups=1``; unshared layers are ``num_hidden_groups=L``, one layer per group). A shared
  model with E = H gets an identity ``embedding_hidden_mapping_in``, which import recognises and
  drops again.
* **GELU.** Ours is exact (erf): exported as ``hidden_act: gelu``. Importing a tanh approximation
  (``gelu_new``, ``gelu_pytorch_tanh``..., ALBERT's default) is refused unless
  ``approximate_gelu=True``; the outputs then differ slightly (the probe's max difference is reported).
* **Attention biases.** HF always has them: ``attention_bias: false`` is exported as zero biases
  (exact). Imports always have ``attention_bias: true``.
* **Embedding LayerNorm.** HF always has one; a model with ``embedding_layer_norm: false`` (the
  original TWilBERT architecture) is refused: no LayerNorm parameters reproduce the identity.
* **Heads.** The MLM head is exported when HF can express it, i.e. with ``mlm_transform: true`` (HF's
  prediction head always has its Linear-GELU-LayerNorm transform) and, for ALBERT, a decoder input
  of width E (a tied factorised decoder, or E = H); then the checkpoint is ``BertForMaskedLM`` /
  ``AlbertForMaskedLM``, otherwise ``BertModel`` / ``AlbertModel`` (encoder only). The ROP head is
  never exported: NSP/SOP heads read HF's pooler (``tanh(dense([CLS]))``), which ours does not have.
  ``AutoModel`` therefore reports a freshly initialised pooler, which hidden states do not use.
  On import, a checkpoint's MLM head becomes ours (``mlm_transform: true``); the ROP head (and the MLM
  head if the checkpoint has none) is freshly initialised (seeded) for continued pre-training.
* **Refused on export:** PKM layers, pre-LN, no embedding LayerNorm, ``attention_size * n_heads !=
  hidden_size``. **Refused on import:** other model types, decoders / cross-attention, non-absolute
  position embeddings, ``intermediate_size != 4 * hidden_size`` (our FFN is 4H), ``type_vocab_size !=
  2``, ALBERT groups other than all-shared or unshared, ``inner_group_num != 1``, tanh GELU (see above).
* **Tokenizer.** ``tokenizer.json`` is built from the SentencePiece model by following its own
  settings (no precompiled normaliser: our vocabulary uses ``identity``; extra-space removal, dummy
  prefix, ``▁`` escaping, user-defined placeholder pieces always whole, unknowns fused) and the
  ``[CLS] a [SEP] b [SEP]`` template with token types 0/1. Special tokens in the *text* are not
  special (``split_special_tokens``), as in SentencePiece where ``[MASK]`` is a control symbol. On the
  137,817 real tweets of ``../shared/data`` (normalised) the ids equal ``Tokenizer.encode`` for BPE
  vocabularies and for all but ~0.03% of texts for unigram ones; those few are exact ties between
  equal-score segmentations (``!!!`` = ``!`` + ``!!`` or ``!!`` + ``!``) that SentencePiece breaks by
  float32 rounding and ``tokenizers`` by order. The HF tokenizer does not normalise tweets: apply
  ``twilbert.text.normalize`` (the model's rules) first.
* **Importing a checkpoint with its own tokenizer** (a Spanish BERT's WordPiece, an ALBERT's
  SentencePiece, anything ``AutoTokenizer`` loads as a fast tokenizer): its ids are renumbered so the
  five specials come first, with our names, and every other id keeps its order after them; embedding
  rows and MLM biases are permuted to match, rows past the tokenizer are dropped, and the result is
  ``tokenizer.json`` beside the weights (:func:`renumber_tokenizer`, checked on probe texts by
  :func:`check_renumbered`; ``twilbert.text.tokenizer.HFTokenizer`` reads it). Positions: ``max_len``
  keeps the first ``2 * max_len + 3`` rows (BERT has 512; TWilBERT's table is sized by max_len).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from twilbert.config import ConfigError, to_dict
from twilbert.model.config import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID, ModelConfig, ROPConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import SPM_FILE  # the SentencePiece model, copied beside tokenizer.json (import reads it back)

HF_EXTRA = "pip install -e .[hf]"
EXPORT_INFO = "twilbert_export.json"
EXACT_GELU = ("gelu", "gelu_python")
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh", "gelu_accurate")
PARITY_TOL = 1e-4  # max |difference| of hidden states accepted by the probe check (fp32, any size)


class HFInteropError(ConfigError):
    """A checkpoint that cannot be converted (the message lists every reason), or no transformers."""


def _transformers():
    try:
        import transformers
    except ImportError:
        raise HFInteropError(f"Hugging Face interop needs the `transformers` package: {HF_EXTRA}") from None
    return transformers


def _refuse(what: str, reasons: list[str]) -> None:
    if reasons:
        raise HFInteropError(f"{what}: " + "; ".join(reasons))


# --------------------------------------------------------------------------------------------------
# which architecture, and what cannot be expressed


def export_problems(cfg: ModelConfig) -> list[str]:
    """Every option of ``cfg`` that BERT/ALBERT cannot express (empty = exportable)."""
    out = []
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


def hf_kind(cfg: ModelConfig) -> str:
    """``"albert"`` for factorised embeddings or shared layers, else ``"bert"``."""
    return "albert" if (cfg.factorize_embeddings or cfg.cross_sharing) else "bert"


def mlm_head_exportable(cfg: ModelConfig) -> bool:
    """HF's prediction heads always transform (Linear-act-LN); ALBERT's decoder reads width E."""
    if not cfg.mlm_transform:
        return False
    if hf_kind(cfg) == "bert":
        return True
    width = cfg.embedding_size if (cfg.tie_mlm_decoder and cfg.factorize_embeddings) else cfg.hidden_size
    return width == cfg.embedding_size


def hf_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The transformers config (BertConfig / AlbertConfig keyword arguments) of ``cfg``."""
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
        "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": 2,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": PAD_ID,
        "tie_word_embeddings": bool(cfg.tie_mlm_decoder),
    }
    if hf_kind(cfg) == "albert":
        d.update(
            embedding_size=cfg.embedding_size,
            num_hidden_groups=1 if cfg.cross_sharing else cfg.n_encoders,
            inner_group_num=1,
            bos_token_id=CLS_ID,
            eos_token_id=SEP_ID,
            classifier_dropout_prob=0.1,
        )
    return d


# --------------------------------------------------------------------------------------------------
# weight names: one table, used in both directions


def _block_names(kind: str) -> dict[str, str]:
    """Our block parameter -> HF layer parameter suffix (qkv handled separately)."""
    if kind == "bert":
        return {
            "attn.out": "attention.output.dense",
            "norm1": "attention.output.LayerNorm",
            "ffn.fc_in": "intermediate.dense",
            "ffn.fc_out": "output.dense",
            "norm2": "output.LayerNorm",
        }
    return {
        "attn.out": "attention.dense",
        "norm1": "attention.LayerNorm",
        "ffn.fc_in": "ffn",
        "ffn.fc_out": "ffn_output",
        "norm2": "full_layer_layer_norm",
    }


def _qkv_names(kind: str) -> tuple[str, str, str]:
    stem = "attention.self." if kind == "bert" else "attention."
    return tuple(stem + n for n in ("query", "key", "value"))  # type: ignore[return-value]


_EMBEDDINGS = {
    "token.weight": "word_embeddings.weight",
    "position.weight": "position_embeddings.weight",
    "segment.weight": "token_type_embeddings.weight",
    "norm.weight": "LayerNorm.weight",
    "norm.bias": "LayerNorm.bias",
}


def _hf_layers(kind: str, cfg: ModelConfig) -> Iterator[tuple[int, str]]:
    """(our block index, HF layer prefix) for every HF layer that holds weights."""
    if kind == "bert":
        for i in range(cfg.n_encoders):
            yield i, f"bert.encoder.layer.{i}."
    else:
        groups = 1 if cfg.cross_sharing else cfg.n_encoders
        for g in range(groups):
            yield g, f"albert.encoder.albert_layer_groups.{g}.albert_layers.0."


def _mlm_names(kind: str) -> dict[str, str]:
    """Our MLM head parameter -> HF name (transform = Sequential(Linear, GELU, LayerNorm))."""
    p = "cls.predictions." if kind == "bert" else "predictions."
    t = p + "transform." if kind == "bert" else p
    return {
        "transform.0.weight": t + "dense.weight",
        "transform.0.bias": t + "dense.bias",
        "transform.2.weight": t + "LayerNorm.weight",
        "transform.2.bias": t + "LayerNorm.bias",
        "bias": p + "bias",
    }


def to_hf_state_dict(model: TWilBERT, *, with_mlm_head: bool) -> dict[str, torch.Tensor]:
    """Our weights under HF's names (``bert.``/``albert.`` prefixed, heads as in *ForMaskedLM)."""
    cfg = model.config
    kind = hf_kind(cfg)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    base = f"{kind}."
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in _EMBEDDINGS.items():
        out[base + "embeddings." + theirs] = sd["embeddings." + ours]
    if kind == "albert":
        H = cfg.hidden_size
        if cfg.factorize_embeddings:
            w, b = sd["embeddings.project.weight"], sd["embeddings.project.bias"]
        else:  # shared layers without factorisation: ALBERT's E -> H mapping is the identity
            w, b = torch.eye(H), torch.zeros(H)
        out["albert.encoder.embedding_hidden_mapping_in.weight"] = w
        out["albert.encoder.embedding_hidden_mapping_in.bias"] = b
    A = cfg.n_heads * cfg.head_dim
    for block, prefix in _hf_layers(kind, cfg):
        ours = f"encoder.blocks.{block}."
        for (name, part), w in zip(((n, "weight") for n in _qkv_names(kind)), sd[ours + "attn.qkv.weight"].split(A, 0)):
            out[prefix + f"{name}.{part}"] = w  # (A*d, H) each
        qkv_bias = sd.get(ours + "attn.qkv.bias", torch.zeros(3 * A))  # attention_bias: false -> zeros (exact)
        for name, b in zip(_qkv_names(kind), qkv_bias.split(A, 0)):
            out[prefix + f"{name}.bias"] = b
        for mine, theirs in _block_names(kind).items():
            out[prefix + theirs + ".weight"] = sd[ours + mine + ".weight"]
            bias = sd.get(ours + mine + ".bias")
            out[prefix + theirs + ".bias"] = bias if bias is not None else torch.zeros(sd[ours + mine + ".weight"].shape[0])
    if with_mlm_head:
        names = _mlm_names(kind)
        for mine, theirs in names.items():
            out[theirs] = sd["mlm_head." + mine]
        decoder = names["bias"].replace("bias", "decoder.")
        out[decoder + "bias"] = sd["mlm_head.bias"]
        out[decoder + "weight"] = sd["embeddings.token.weight"] if cfg.tie_mlm_decoder else sd["mlm_head.decoder.weight"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig, kind: str, *, with_mlm_head: bool) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_hf_state_dict`: HF names -> ours (encoder, and the MLM head if asked)."""
    base = f"{kind}."
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in _EMBEDDINGS.items():
        out["embeddings." + ours] = hf[base + "embeddings." + theirs]
    if cfg.factorize_embeddings:
        out["embeddings.project.weight"] = hf["albert.encoder.embedding_hidden_mapping_in.weight"]
        out["embeddings.project.bias"] = hf["albert.encoder.embedding_hidden_mapping_in.bias"]
    for block, prefix in _hf_layers(kind, cfg):
        ours = f"encoder.blocks.{block}."
        out[ours + "attn.qkv.weight"] = torch.cat([hf[prefix + f"{n}.weight"] for n in _qkv_names(kind)], 0)  # (3*A*d, H)
        out[ours + "attn.qkv.bias"] = torch.cat([hf[prefix + f"{n}.bias"] for n in _qkv_names(kind)], 0)
        for mine, theirs in _block_names(kind).items():
            out[ours + mine + ".weight"] = hf[prefix + theirs + ".weight"]
            out[ours + mine + ".bias"] = hf[prefix + theirs + ".bias"]
    if with_mlm_head:
        names = _mlm_names(kind)
        for mine, theirs in names.items():
            out["mlm_head." + mine] = hf[theirs]
        # transformers 5 keeps the decoder's own bias apart from `predictions.bias` when the decoder is
        # untied, and the forward pass adds the decoder's; tied, the two are one tensor.
        decoder_bias = names["bias"].replace("bias", "decoder.bias")
        if decoder_bias in hf:
            out["mlm_head.bias"] = hf[decoder_bias]
        if not cfg.tie_mlm_decoder:
            out["mlm_head.decoder.weight"] = hf[names["bias"].replace("bias", "decoder.weight")]
    return out


# --------------------------------------------------------------------------------------------------
# tokenizer


def build_hf_tokenizer(spm_path: str | Path):
    """A ``tokenizers.Tokenizer`` that encodes like our SentencePiece model (see module docstring)."""
    _transformers()
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE, Unigram

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(spm_path).read_bytes())
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    if ns.precompiled_charsmap:
        raise HFInteropError(f"{spm_path}: a SentencePiece model with a built-in normaliser ({ns.name}); ours use identity")
    if ts.byte_fallback:
        raise HFInteropError(f"{spm_path}: byte_fallback SentencePiece models are not supported")
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    got = [p for p, _, _ in pieces[: len(SPECIAL_TOKENS)]]
    if got != list(SPECIAL_TOKENS):
        raise HFInteropError(f"{spm_path}: ids 0..4 are {got}, expected {list(SPECIAL_TOKENS)}")
    user_defined = [p for p, _, t in pieces if t == 4]
    if ts.model_type == 1:  # unigram
        # Control pieces ([PAD] [CLS] ...) are never matched in SentencePiece's lattice; tokenizers has no
        # such type, so price them out: a score far below any piece makes the ordinary characters win.
        # (It also lowers the unknown-character score, which only competes with these pieces.)
        floor = min(s for _, s, t in pieces if t == 1) - 1e4
        model = Unigram([(p, s if t == 1 or t == 4 else floor) for p, s, t in pieces], unk_id=ts.unk_id, byte_fallback=False)
    elif ts.model_type == 2:  # BPE: merges ranked by the score of the merged piece, as SentencePiece does
        normal = {p: (s, i) for i, (p, s, t) in enumerate(pieces) if t == 1}
        ranked = sorted(
            (-s, i, p[:k], p[k:]) for p, (s, i) in normal.items() for k in range(1, len(p)) if p[:k] in normal and p[k:] in normal
        )
        model = BPE(
            vocab={p: i for i, (p, _, _) in enumerate(pieces)},
            merges=[(a, b) for _, _, a, b in ranked],
            unk_token=pieces[ts.unk_id][0],
            fuse_unk=True,
            byte_fallback=False,
            ignore_merges=bool(user_defined),  # a whole user-defined piece is never re-merged
        )
    else:
        raise HFInteropError(f"{spm_path}: SentencePiece model type {ts.model_type} is not unigram or BPE")
    tok = Tokenizer(model)
    norm = []
    if ns.remove_extra_whitespaces:  # only ASCII spaces count, as in SentencePiece
        norm += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if ns.escape_whitespaces:
        norm.append(normalizers.Replace(" ", "\u2581"))
    if ns.add_dummy_prefix:  # Metaspace would skip the prefix of a text starting with "▁"; SentencePiece does not
        norm.append(normalizers.Replace(Regex("\\A\u2581"), "\u2581\u2581"))
    tok.normalizer = normalizers.Sequence(norm)
    pre = []
    if ns.add_dummy_prefix:
        pre.append(pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False))
    if user_defined:  # SentencePiece emits user-defined pieces whole, longest first, anywhere
        pattern = "|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
        pre.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.Fuse(), decoders.Strip(content=" ", left=1 if ns.add_dummy_prefix else 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    return tok


def save_hf_tokenizer(spm_path: str | Path, out_dir: str | Path, model_max_length: int) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` (loadable by ``AutoTokenizer``) and a copy of the
    SentencePiece model as ``spm.model``. An imported checkpoint's ``tokenizer.json`` (its ids already
    ours, see :func:`renumber_tokenizer`) is written as it is, with no ``spm.model``."""
    transformers = _transformers()
    if Path(spm_path).suffix == ".json":
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(spm_path))
    else:
        backend = build_hf_tokenizer(spm_path)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=SPECIAL_TOKENS[UNK_ID],
        pad_token=SPECIAL_TOKENS[PAD_ID],
        cls_token=SPECIAL_TOKENS[CLS_ID],
        sep_token=SPECIAL_TOKENS[SEP_ID],
        mask_token=SPECIAL_TOKENS[MASK_ID],
        model_max_length=model_max_length,
        split_special_tokens=True,  # "[MASK]" typed in a tweet is text, as in SentencePiece
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out_dir))
    if Path(spm_path).suffix == ".json":
        return
    target = Path(out_dir) / SPM_FILE
    if Path(spm_path).resolve() != target.resolve():
        shutil.copyfile(spm_path, target)


def _template(tok) -> None:
    """Our ``[CLS] a [SEP] (b [SEP])`` template with token types 0/1, on a ``tokenizers.Tokenizer``."""
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[(SPECIAL_TOKENS[CLS_ID], CLS_ID), (SPECIAL_TOKENS[SEP_ID], SEP_ID)],
    )


def renumber_tokenizer(spec: dict[str, Any], roles: dict[str, str], n_rows: int) -> tuple[str, list[int]]:
    """An imported tokenizer with TWilBERT's special ids: ``(tokenizer.json text, perm)``.

    Why: TWilBERT fixes ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4`` (padding, masking and the input
    layout rely on them), while a checkpoint a user has keeps its own (BETO: ``[PAD]=1 [UNK]=3 [CLS]=4
    [SEP]=5 [MASK]=0``). So the vocabulary is renumbered -- the five specials first (renamed to ours:
    ALBERT's ``<pad>`` becomes ``[PAD]``), every other id after them in its old order -- and
    ``perm[new_id] = old_id`` says how to reorder the embedding rows and MLM biases to match. Nothing
    else of the tokenizer changes (normaliser, pre-tokeniser, model). ``roles`` maps each of our
    special names to the token playing that role in the source (``{"[PAD]": "<pad>", ...}``);
    ``n_rows`` is the model's vocabulary rows (may exceed the tokenizer: unused rows keep their order).
    """
    from tokenizers import Tokenizer

    from twilbert.text.tokenizer import id_rows

    tok = Tokenizer.from_str(json.dumps(spec))
    size = id_rows(tok)
    if size > n_rows:
        raise HFInteropError(f"the tokenizer has ids up to {size - 1} but the model only {n_rows} embedding rows")
    old_special = []
    for ours in SPECIAL_TOKENS:
        token = roles.get(ours)
        i = tok.token_to_id(token) if token else None
        if i is None:
            raise HFInteropError(f"the tokenizer has no token for {ours} (TWilBERT needs {', '.join(SPECIAL_TOKENS)})")
        old_special.append(i)
    if len(set(old_special)) != len(old_special):
        raise HFInteropError(f"the tokenizer uses one token for two of {list(SPECIAL_TOKENS)}: {roles}")
    vocab = tok.get_vocab(with_added_tokens=True)
    for ours, i in zip(SPECIAL_TOKENS, old_special):
        if vocab.get(ours, i) != i:
            raise HFInteropError(f"the tokenizer has a token {ours!r} (id {vocab[ours]}) that is not its {ours}")
    taken = set(old_special)
    perm = old_special + [i for i in range(n_rows) if i not in taken]  # perm[new] = old
    new_of = {old: new for new, old in enumerate(perm)}
    rename = {roles[ours]: ours for ours in SPECIAL_TOKENS}

    spec = json.loads(json.dumps(spec))
    model = spec["model"]
    if isinstance(model.get("vocab"), dict):  # WordPiece, WordLevel, BPE: {token: id}
        model["vocab"] = {rename.get(t, t): new_of[i] for t, i in model["vocab"].items()}
    elif isinstance(model.get("vocab"), list):  # Unigram: [piece, score] in id order, so the list is reordered
        pieces = model["vocab"]
        moved = {new_of[i]: [rename.get(p, p), score] for i, (p, score) in enumerate(pieces)}
        if sorted(moved) != list(range(len(pieces))):
            raise HFInteropError("a special token of this Unigram tokenizer lies outside its piece list; not supported")
        model["vocab"] = [moved[i] for i in range(len(pieces))]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_of[model["unk_id"]]
    else:
        raise HFInteropError(f"tokenizer model type {model.get('type')!r} is not supported")
    if model.get("unk_token") in rename:
        model["unk_token"] = rename[model["unk_token"]]
    for added in spec.get("added_tokens") or []:
        added["id"] = new_of[added["id"]]
        added["content"] = rename.get(added["content"], added["content"])
        # Only our five are special (HFTokenizer encodes those as text when typed); any other special
        # token of the source ("@usuario", "HTTPURL"...) stays one token, as the source splits it.
        added["special"] = added["content"] in SPECIAL_TOKENS
    spec["padding"] = spec["truncation"] = None
    spec["post_processor"] = None
    out = Tokenizer.from_str(json.dumps(spec))
    _template(out)
    return out.to_str(), perm


# Files a transformers tokenizer is built from (any one of them): fast JSON, WordPiece, SentencePiece, BPE.
TOKENIZER_SOURCES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "vocab.json")


def source_tokenizer(hf_dir: Path) -> tuple[dict[str, Any], dict[str, str]] | None:
    """``(tokenizer.json as a dict, roles)`` of a checkpoint's own fast tokenizer (``AutoTokenizer``
    converts a ``vocab.txt`` or ``spiece.model`` to one), or None when it has no tokenizer files. Files
    that are there but do not load are an error: importing without them would leave weights whose
    vocabulary nobody knows."""
    present = [name for name in TOKENIZER_SOURCES if (hf_dir / name).is_file()]
    if not present:
        return None  # (transformers 5 would build an empty tokenizer of specials alone from config.json)
    transformers = _quiet_transformers()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir), use_fast=True)
    except Exception as exc:  # tokenizers/transformers raise many kinds here (JSON, protobuf, missing class)
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise HFInteropError(f"{hf_dir}: its tokenizer ({', '.join(present)}) does not load ({first})") from None
    if not getattr(tok, "is_fast", False) or len(tok) <= len(SPECIAL_TOKENS):
        raise HFInteropError(f"{hf_dir}: its tokenizer ({', '.join(present)}) loads as no usable fast tokenizer ({len(tok)} tokens)")
    roles = {
        SPECIAL_TOKENS[PAD_ID]: tok.pad_token,
        SPECIAL_TOKENS[UNK_ID]: tok.unk_token,
        SPECIAL_TOKENS[CLS_ID]: tok.cls_token,
        SPECIAL_TOKENS[SEP_ID]: tok.sep_token,
        SPECIAL_TOKENS[MASK_ID]: tok.mask_token,
    }
    return json.loads(tok.backend_tokenizer.to_str()), {k: v for k, v in roles.items() if v}


def lowercases(spec: dict[str, Any]) -> bool | None:
    """Whether a tokenizer.json's normaliser lower-cases (None: cannot tell)."""

    def walk(node: Any) -> bool | None:
        if not isinstance(node, dict):
            return False
        kind = node.get("type")
        if kind == "BertNormalizer":
            return bool(node.get("lowercase", True))
        if kind == "Lowercase":
            return True
        if kind == "Sequence":
            found = [walk(n) for n in node.get("normalizers", [])]
            return True if any(found) else (None if None in found else False)
        return False

    return walk(spec.get("normalizer"))


def check_renumbered(spec: dict[str, Any], renumbered: str, perm: list[int], texts: list[str]) -> None:
    """The renumbered tokenizer splits ``texts`` exactly as the source, ids mapped through ``perm``."""
    from tokenizers import Tokenizer

    src, new = Tokenizer.from_str(json.dumps(spec)), Tokenizer.from_str(renumbered)
    for text in texts:
        a = src.encode(text, add_special_tokens=False).ids
        b = new.encode(text, add_special_tokens=False).ids
        if [perm[i] for i in b] != a:
            raise HFInteropError(f"renumbering changed how {text!r} is tokenised: {a} vs {[perm[i] for i in b]}")


# Texts the renumbered tokenizer must split as the source does (accents, emoji, placeholders, digits).
RENUMBER_PROBES = ["hola user, ¿qué tal? 😂", "Jajaja no me lo puedo creer url", "el #Madrid ganó 2-1 a la Real Sociedad", "ñandú"]


# --------------------------------------------------------------------------------------------------
# probes: the same random batch through both models


def probe_batch(vocab_size: int, max_positions: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, token types, mask) of 3 sequences of different lengths (padding included), pairs included."""
    g = torch.Generator().manual_seed(seed)
    T = min(max_positions, 24)
    lengths = [T, max(3, T // 2), max(3, T // 3)]
    ids = torch.randint(5, vocab_size, (3, T), generator=g)  # (3, T)
    pos = torch.arange(T)[None, :]  # (1, T)
    mask = pos < torch.tensor(lengths)[:, None]  # (3, T)
    ids[:, 0] = CLS_ID
    ids[torch.arange(3), torch.tensor(lengths) - 1] = SEP_ID
    ids = ids.masked_fill(~mask, PAD_ID)
    types = ((pos >= torch.tensor(lengths)[:, None] // 2) & mask).long()  # second half is segment B
    return ids, types, mask


@torch.inference_mode()
def hidden_state_difference(ours: TWilBERT, theirs: torch.nn.Module, seed: int = 0) -> float:
    """Max |difference| of the final hidden states at real tokens, ours vs an HF base model."""
    ours.eval()
    theirs.eval()
    ids, types, mask = probe_batch(ours.config.vocab_size, ours.config.max_positions, seed)
    a = ours.encode(ids, types, mask)  # (3, T, H)
    b = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state  # (3, T, H)
    return float((a - b).abs()[mask].max())


# --------------------------------------------------------------------------------------------------
# export


@torch.inference_mode()
def mlm_logit_difference(ours: TWilBERT, theirs: torch.nn.Module, seed: int = 0) -> float:
    """Max |difference| of the MLM logits at real tokens, ours vs an HF *ForMaskedLM model."""
    ours.eval()
    theirs.eval()
    ids, types, mask = probe_batch(ours.config.vocab_size, ours.config.max_positions, seed)
    a = ours(ids, types, mask, mlm_labels=torch.where(mask, ids, -100)).mlm_logits  # (N, V)
    b = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits[mask]  # (N, V)
    return float((a - b).abs().max())


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _quiet_transformers():
    """Silence transformers' load reports (we report what was and was not converted ourselves)."""
    transformers = _transformers()
    transformers.logging.set_verbosity_error()
    return transformers


def _hf_classes(kind: str):
    transformers = _transformers()
    if kind == "bert":
        return transformers.BertConfig, transformers.BertModel, transformers.BertForMaskedLM
    return transformers.AlbertConfig, transformers.AlbertModel, transformers.AlbertForMaskedLM


def to_hf_model(model: TWilBERT, *, with_mlm_head: bool | None = None) -> torch.nn.Module:
    """An HF ``*ForMaskedLM`` (MLM head exportable and wanted) or base ``*Model`` holding our weights."""
    cfg = model.config
    _refuse("cannot export to transformers", export_problems(cfg))
    _quiet_transformers()
    kind = hf_kind(cfg)
    head = mlm_head_exportable(cfg) if with_mlm_head is None else with_mlm_head
    if head and not mlm_head_exportable(cfg):
        raise HFInteropError("the MLM head cannot be expressed in transformers (needs mlm_transform: true and a decoder of width E)")
    config_cls, base_cls, mlm_cls = _hf_classes(kind)
    hf_cfg = config_cls(**hf_config_dict(cfg), architectures=[(mlm_cls if head else base_cls).__name__])
    hf_model = mlm_cls(hf_cfg) if head else base_cls(hf_cfg, add_pooling_layer=False)
    state = to_hf_state_dict(model, with_mlm_head=head)
    if not head:
        state = {k.removeprefix(f"{kind}."): v for k, v in state.items()}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if missing or unexpected:  # a bug in the table above, never the user's fault
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return hf_model.eval()


def _load_source(model_dir: Path) -> tuple[TWilBERT, dict[str, Any], Path | None, str]:
    """(encoder, stored config, tokenizer path or None, "pretrained" | "finetuned") of a TWilBERT dir."""
    from twilbert.finetune.model import FORMAT, load_encoder, load_finetuned, resolve_pretrained_dir
    from twilbert.train.checkpoint import read_config

    directory = resolve_pretrained_dir(model_dir)
    stored = read_config(directory)
    if stored.get("format") == FORMAT:
        ft = load_finetuned(directory)
        return ft.model.encoder, stored, ft.tokenizer_path, "finetuned"
    return load_encoder(directory), stored, None, "pretrained"


def pretrained_tokenizer_path(model_dir: str | Path) -> Path | None:
    """The SentencePiece model a pre-trained checkpoint records in ``pretrain.json`` (tried as given,
    then relative to the checkpoint's ancestors, i.e. a repository root), verified by sha256."""
    from twilbert.finetune.model import resolve_pretrained_dir
    from twilbert.train.checkpoint import read_pretrain_meta

    directory = resolve_pretrained_dir(model_dir)
    meta = read_pretrain_meta(directory)
    recorded = meta.get("tokenizer_path")
    if not recorded:
        return None
    candidates = [Path(recorded)] + ([] if Path(recorded).is_absolute() else [p / recorded for p in directory.resolve().parents])
    candidates.append(directory / Path(recorded).name)  # an imported checkpoint moved since (its own copy)
    for c in candidates:
        if c.is_file():
            sha = meta.get("tokenizer_sha256")
            if sha is not None and _sha256(c) != sha:
                raise HFInteropError(f"{c}: not the vocabulary {directory} was pre-trained with (sha256 differs); pass --vocab-model")
            return c
    return None


def export_hf(model_dir: str | Path, out_dir: str | Path, *, vocab_model: str | Path | None = None, verify: bool = True) -> dict[str, Any]:
    """Write ``out_dir`` loadable by ``AutoModel``/``AutoTokenizer.from_pretrained`` (see module doc).

    ``model_dir``: a pre-trained checkpoint (``models/pretrain/final`` or its parent) or a fine-tuned
    model directory (its encoder is exported; the task head is not). The tokenizer is ``vocab_model``,
    else the fine-tuned model's own ``spm.model``, else the one ``pretrain.json`` records.
    Returns (and writes as ``twilbert_export.json``) what was exported.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    encoder, stored, spm_path, source_kind = _load_source(model_dir)
    cfg = encoder.config
    _refuse(f"{model_dir}: cannot export to transformers", export_problems(cfg))
    if vocab_model is not None:
        spm_path = Path(vocab_model)
    elif spm_path is None:
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
    spm_path = tokenizer_file(spm_path)  # a directory (models/vocab) -> its file

    head = source_kind == "pretrained" and mlm_head_exportable(cfg)
    hf_model = to_hf_model(encoder, with_mlm_head=head)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out_dir))
    save_hf_tokenizer(spm_path, out_dir, model_max_length=cfg.max_positions)
    info: dict[str, Any] = {
        "source": str(model_dir),
        "source_kind": source_kind,
        "architecture": hf_model.config.architectures[0],
        "model_type": hf_kind(cfg),
        "mlm_head": head,
        "not_exported": ["rop_head (NSP/SOP heads read a pooler TWilBERT does not have)"]
        + ([] if head or source_kind == "finetuned" else ["mlm_head (needs mlm_transform: true and, for ALBERT, a decoder of width E)"])
        + (["task head (use the TWilBERT model directory for predictions)"] if source_kind == "finetuned" else []),
        "tokenizer_sha256": _sha256(Path(spm_path)),
    }
    if verify:
        info["max_abs_diff_hidden"] = verify_export(encoder, out_dir)
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def verify_export(encoder: TWilBERT, out_dir: str | Path) -> float:
    """Reload ``out_dir`` with ``AutoModel`` and compare hidden states on a probe batch."""
    transformers = _quiet_transformers()
    reloaded = transformers.AutoModel.from_pretrained(str(out_dir), use_safetensors=True)
    diff = hidden_state_difference(encoder, reloaded)
    if not diff <= PARITY_TOL:
        raise HFInteropError(f"{out_dir}: the exported model differs from the source (max |diff| {diff:.3g} > {PARITY_TOL})")
    return diff


# --------------------------------------------------------------------------------------------------
# sequence classifier (throughput benchmark; not a CLI command)


def export_sequence_classifier(model_dir: str | Path, out_dir: str | Path, *, allow_inexact: bool = False, pooler_scale: float = 1e-3) -> dict[str, Any]:
    """A fine-tuned model as ``BertForSequenceClassification`` / ``AlbertForSequenceClassification``.

    HF's classifiers read ``tanh(pooler(h_[CLS]))``, which TWilBERT has no counterpart for. With
    ``collapse_mode: cls`` we make the pooler nearly the identity: weight ``s * I`` (s =
    ``pooler_scale``) and the classifier weight divided by ``s``, so ``W tanh(s h) / s = W h (1 -
    O(s^2 h^2))``: probabilities agree to ~1e-5. Other collapse modes (avg/max/concat, the default
    avg included) cannot be expressed: refused unless ``allow_inexact`` (the throughput benchmark,
    where only the compute matters: the model is then the cls-pooled one, with different predictions).
    """
    from twilbert.finetune.model import load_finetuned

    _quiet_transformers()
    ft = load_finetuned(model_dir)
    clf, cfg, stored = ft.model, ft.model.encoder.config, ft.config
    _refuse(f"{model_dir}: cannot export to transformers", export_problems(cfg))
    exact = clf.collapse_mode == "cls"
    if not exact and not allow_inexact:
        raise HFInteropError(
            f"{model_dir}: collapse_mode {clf.collapse_mode!r} has no transformers counterpart (their classifiers pool [CLS]); "
            "only cls-pooled classifiers export to *ForSequenceClassification"
        )
    kind = hf_kind(cfg)
    transformers = _transformers()
    cls_name = "BertForSequenceClassification" if kind == "bert" else "AlbertForSequenceClassification"
    config_cls = transformers.BertConfig if kind == "bert" else transformers.AlbertConfig
    labels = ft.labels or ["value"]
    problem = {"single_label": "single_label_classification", "multi_label": "multi_label_classification", "regression": "regression"}
    hf_cfg = config_cls(
        **hf_config_dict(cfg),
        architectures=[cls_name],
        num_labels=clf.head.out_features,
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
        problem_type=problem[stored["task_type"]],
    )
    hf_model = getattr(transformers, cls_name)(hf_cfg)
    state = to_hf_state_dict(clf.encoder, with_mlm_head=False)
    H = cfg.hidden_size
    pooler = "bert.pooler.dense" if kind == "bert" else "albert.pooler"
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
    info = {"source": str(model_dir), "architecture": cls_name, "exact": exact, "collapse_mode": clf.collapse_mode}
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


# --------------------------------------------------------------------------------------------------
# import


def import_problems(hf_cfg: Any, *, approximate_gelu: bool = False) -> list[str]:
    """Every setting of an HF config TWilBERT cannot express (empty = importable)."""
    out = []
    kind = getattr(hf_cfg, "model_type", None)
    if kind not in ("bert", "albert"):
        return [f"model_type {kind!r}: only bert and albert checkpoints can be imported"]
    if getattr(hf_cfg, "is_decoder", False) or getattr(hf_cfg, "add_cross_attention", False):
        out.append("is_decoder / add_cross_attention: TWilBERT is an encoder")
    if getattr(hf_cfg, "position_embedding_type", "absolute") != "absolute":
        out.append(f"position_embedding_type {hf_cfg.position_embedding_type!r}: only absolute positions")
    if hf_cfg.intermediate_size != 4 * hf_cfg.hidden_size:
        out.append(f"intermediate_size {hf_cfg.intermediate_size} != 4 x hidden_size {hf_cfg.hidden_size}: the TWilBERT FFN is 4H")
    if hf_cfg.type_vocab_size != 2:
        out.append(f"type_vocab_size {hf_cfg.type_vocab_size}: TWilBERT has exactly 2 segments")
    if hf_cfg.hidden_size % hf_cfg.num_attention_heads:
        out.append(f"hidden_size {hf_cfg.hidden_size} is not divisible by num_attention_heads {hf_cfg.num_attention_heads}")
    act = hf_cfg.hidden_act
    if act in TANH_GELU and not approximate_gelu:
        out.append(f"hidden_act {act!r} is a tanh approximation of GELU, TWilBERT's is exact (pass --approximate-gelu to import anyway)")
    elif act not in EXACT_GELU + TANH_GELU:
        out.append(f"hidden_act {act!r}: TWilBERT uses GELU")
    if kind == "albert":
        G, L = hf_cfg.num_hidden_groups, hf_cfg.num_hidden_layers
        if G not in (1, L):
            out.append(f"num_hidden_groups {G}: TWilBERT shares all layers (1) or none ({L})")
        if hf_cfg.inner_group_num != 1:
            out.append(f"inner_group_num {hf_cfg.inner_group_num}: only 1 layer per group")
    return out


def model_config_from_hf(hf_cfg: Any, *, factorize: bool | None = None) -> ModelConfig:
    """Translate an HF BERT/ALBERT config (``factorize``: override for an identity E -> H mapping)."""
    kind = hf_cfg.model_type
    H = hf_cfg.hidden_size
    if kind == "albert":
        E = hf_cfg.embedding_size
        fact = True if factorize is None else factorize
        shared = hf_cfg.num_hidden_groups == 1 and hf_cfg.num_hidden_layers > 1
    else:
        E, fact, shared = H, False, False
    return ModelConfig(
        vocab_size=hf_cfg.vocab_size,
        max_positions=hf_cfg.max_position_embeddings,
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


def _find_spm(hf_dir: Path) -> Path | None:
    for name in (SPM_FILE, "spiece.model", "sentencepiece.bpe.model", "tokenizer.model"):
        if (hf_dir / name).is_file():
            return hf_dir / name
    return None


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
    with ``seed``.

    Tokenizer: our own export's ``spm.model`` is copied as it is. Any other (a Spanish BERT's WordPiece,
    an ALBERT's SentencePiece, as ``AutoTokenizer`` loads it) becomes ``tokenizer.json`` renumbered to
    TWilBERT's special ids, and the embedding rows and MLM biases are permuted to match
    (:func:`renumber_tokenizer`): the pipeline then uses it in place of the vocab stage's
    (``vocab.pretrained``).

    ``max_len``: keep the first ``2 * max_len + 3`` rows of the position table (TWilBERT's layout; the
    rows kept are unchanged, so nothing changes for inputs that fit). Needed to continue pre-training a
    checkpoint with BERT's 512 positions.
    """
    from twilbert.text.tokenizer import HF_TOKENIZER_FILE, HFTokenizer, Tokenizer
    from twilbert.train.checkpoint import PRETRAIN_META, save_checkpoint

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    transformers = _quiet_transformers()
    try:
        hf_cfg = transformers.AutoConfig.from_pretrained(str(hf_dir))
    except (OSError, ValueError) as exc:
        raise HFInteropError(f"{hf_dir}: not a transformers model directory ({str(exc).splitlines()[0]})") from None
    _refuse(f"{hf_dir}: cannot import into TWilBERT", import_problems(hf_cfg, approximate_gelu=approximate_gelu))
    kind = hf_cfg.model_type
    _, _, mlm_cls = _hf_classes(kind)
    if not any(hf_dir.glob("*.safetensors")):
        # Weights load only through safetensors: a pickled pytorch_model.bin can run code on load.
        raise HFInteropError(
            f"{hf_dir}: no *.safetensors weights; TWilBERT loads weights only through safetensors "
            "(convert a trusted pytorch_model.bin first: AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True))"
        )
    hf_model, loading = mlm_cls.from_pretrained(str(hf_dir), output_loading_info=True, use_safetensors=True)
    hf_model.eval()
    hf_sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    head_prefix = "cls.predictions." if kind == "bert" else "predictions."
    has_head = not any(k.startswith(head_prefix) for k in loading["missing_keys"])
    warns: list[str] = []

    factorize = None
    if kind == "albert" and hf_cfg.embedding_size == hf_cfg.hidden_size:
        w = hf_sd["albert.encoder.embedding_hidden_mapping_in.weight"]
        b = hf_sd["albert.encoder.embedding_hidden_mapping_in.bias"]
        if torch.equal(w, torch.eye(w.shape[0], dtype=w.dtype)) and not b.any():
            factorize = False  # our own unfactorised shared export: drop the identity again
    cfg = model_config_from_hf(hf_cfg, factorize=factorize)
    if has_head and kind == "albert" and not cfg.tie_mlm_decoder and cfg.factorize_embeddings and cfg.embedding_size != cfg.hidden_size:
        has_head = False  # an untied factorised ALBERT decoder reads width E; ours reads H
        warns.append("the checkpoint's untied ALBERT MLM head (width E) has no TWilBERT counterpart: freshly initialised")
    torch.manual_seed(seed)
    model = TWilBERT(cfg)
    state = model.state_dict()
    state.update(from_hf_state_dict(hf_sd, cfg, kind, with_mlm_head=has_head))
    model.load_state_dict(state, strict=True)
    model.eval()
    if not has_head:
        warns.append("no MLM head in the checkpoint: freshly initialised (seed %d)" % seed)
    warns.append("ROP head freshly initialised (NSP/SOP heads read HF's pooler, which TWilBERT does not have)")

    positions = None if max_len is None else 2 * max_len + 3
    if max_len is not None:
        if max_len < 1:
            raise HFInteropError(f"--max-len {max_len}: must be >= 1 (tokens per segment, representation.max_len)")
        if positions > cfg.max_positions:
            raise HFInteropError(
                f"--max-len {max_len}: needs {positions} positions (2 * max_len + 3), the checkpoint has {cfg.max_positions} "
                f"(largest max_len: {(cfg.max_positions - 3) // 2})"
            )

    diff = None
    if verify:
        base = hf_model.bert if kind == "bert" else hf_model.albert
        diff = hidden_state_difference(model, base)
        if not approximate_gelu and not diff <= PARITY_TOL:
            raise HFInteropError(f"{hf_dir}: the imported model differs from the source (max |diff| {diff:.3g} > {PARITY_TOL})")
        if has_head:
            head_diff = mlm_logit_difference(model, hf_model)
            if not approximate_gelu and not head_diff <= PARITY_TOL * 10:  # logits: a sum over H, larger values
                raise HFInteropError(f"{hf_dir}: the imported MLM head differs from the source (max |diff| of logits {head_diff:.3g})")

    # The tokenizer: ours as it is, or the checkpoint's own renumbered (then the vocabulary rows move too).
    meta: dict[str, Any] = {"imported_from": str(hf_dir), "hf_model_type": kind, "hf_hidden_act": hf_cfg.hidden_act}
    spm = _find_spm(hf_dir)
    own_spm = renumbered = None
    if spm is not None:
        try:
            tok = Tokenizer.from_file(spm)
            if tok.vocab_size == cfg.vocab_size:
                own_spm = spm
            else:
                warns.append(f"{spm}: {tok.vocab_size} pieces but vocab_size={cfg.vocab_size}: tokenizer not carried over")
        except (ValueError, RuntimeError):
            pass  # not ours (another project's SentencePiece ids): renumbered below like any other
    if own_spm is None:
        source = source_tokenizer(hf_dir)
        if source is None:
            warns.append("no tokenizer in the checkpoint: supply the vocabulary it was trained with before using it")
        else:
            spec, roles = source
            try:
                renumbered, perm = renumber_tokenizer(spec, roles, cfg.vocab_size)
                check_renumbered(spec, renumbered, perm, RENUMBER_PROBES)
            except HFInteropError as exc:
                raise HFInteropError(f"{hf_dir}: {exc}") from None
            if lowercases(spec) is False:
                warns.append(
                    "its tokenizer is cased: set normalize.rules.lowercase: false, or the pipeline lower-cases tweets before it sees them"
                )
            if perm != list(range(len(perm))):
                moved = {ours: perm[i] for i, ours in enumerate(SPECIAL_TOKENS)}
                warns.append(f"vocabulary renumbered to TWilBERT's special ids (source ids {moved}); embedding rows permuted to match")

    # Reshape the weights once: vocabulary rows in the renumbered order, positions cut to max_len.
    state, reshaped = model.state_dict(), {}
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
    if renumbered is not None or reshaped:
        cfg = replace(cfg, **reshaped)
        model = TWilBERT(cfg)
        model.load_state_dict(state, strict=True)
        model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir, model, to_dict(cfg), rng=False)
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
        meta.update(tokenizer_path=str(tok_file.resolve()), tokenizer_sha256=_sha256(tok_file))
    (out_dir / PRETRAIN_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for w in warns:
        warnings.warn(w, stacklevel=2)
    return {
        "source": str(hf_dir),
        "model_type": kind,
        "model": to_dict(cfg),
        "mlm_head": "imported" if has_head else "fresh",
        "tokenizer": str(tok_file) if tok_file is not None else None,
        "max_abs_diff_hidden": diff,
        "warnings": warns,
    }


__all__ = [
    "HFInteropError",
    "build_hf_tokenizer",
    "export_hf",
    "export_problems",
    "export_sequence_classifier",
    "from_hf_state_dict",
    "hf_config_dict",
    "hf_kind",
    "hidden_state_difference",
    "import_hf",
    "import_problems",
    "mlm_head_exportable",
    "model_config_from_hf",
    "pretrained_tokenizer_path",
    "renumber_tokenizer",
    "save_hf_tokenizer",
    "to_hf_model",
    "to_hf_state_dict",
]
