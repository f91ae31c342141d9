"""Tokenizers across the boundary: ours as a ``tokenizers`` file, a checkpoint's own renumbered to our ids.

Export (:func:`build_hf_tokenizer`): ``tokenizer.json`` follows the SentencePiece model's own settings
(no precompiled normaliser: our vocabulary uses ``identity``; extra-space removal, dummy prefix, ``▁``
escaping, user-defined placeholder pieces always whole, unknowns fused) and our ``[CLS] a [SEP] b
[SEP]`` template with token types 0/1. Special tokens typed in a text are text
(``split_special_tokens``), as in SentencePiece where ``[MASK]`` is a control symbol. The ids equal
``Tokenizer.encode`` for BPE vocabularies; for unigram ones a rare exact tie between equal-score
segmentations (``!!!`` = ``!`` + ``!!`` or ``!!`` + ``!``) is broken by float32 rounding in
SentencePiece and by order in ``tokenizers`` (measured: benchmarks/RESULTS.md#tokenizer-export). The
exported tokenizer does not normalise tweets (apply ``twilbert.text.normalize`` first); a fine-tuned
classifier's export does (:mod:`twilbert.hf.normalizers`).

Import (:func:`renumber_tokenizer`): a checkpoint's own fast tokenizer (a Spanish BERT's WordPiece, an
ALBERT's SentencePiece...) gets our five special ids first, with our names (see
docs/deviations.md#special-token-ids), and every other id in its old order after them; ``perm`` says
how to move the embedding rows and MLM biases to match, and :func:`check_renumbered` checks on probe
texts that nothing else changed. The source's fixed padding and truncation are dropped and its
post-processor becomes our template; its normaliser, pre-tokeniser and added tokens are kept
(docs/deviations.md#source-tokenizer-settings).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from twilbert.hf.common import HFInteropError, quiet_transformers, require_transformers
from twilbert.text.tokenizer import SPM_FILE  # the SentencePiece model, copied beside tokenizer.json (import reads it back)
from twilbert.tokens import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID
from twilbert.utils import sha256_file

# Files a transformers tokenizer is built from (any one of them): fast JSON, WordPiece, SentencePiece, BPE.
TOKENIZER_SOURCES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "vocab.json")
# Texts the renumbered tokenizer must split as the source does (accents, emoji, placeholders, digits).
RENUMBER_PROBES = ["hola user, ¿qué tal? 😂", "Jajaja no me lo puedo creer url", "el #Madrid ganó 2-1 a la Real Sociedad", "ñandú"]
_NORMAL, _USER_DEFINED = 1, 4  # sentencepiece_model.proto: ModelProto.SentencePiece.Type


def set_pair_template(tok, segment_b: int = 1) -> None:
    """Our ``[CLS] a [SEP] (b [SEP])`` template with token types 0/``segment_b`` (0 for a model with one
    token-type row: an exported RoBERTa whose segment rows are still equal), on a ``tokenizers.Tokenizer``."""
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair=f"[CLS]:0 $A:0 [SEP]:0 $B:{segment_b} [SEP]:{segment_b}",
        special_tokens=[(SPECIAL_TOKENS[CLS_ID], CLS_ID), (SPECIAL_TOKENS[SEP_ID], SEP_ID)],
    )


# --------------------------------------------------------------------------------------------------
# export: our SentencePiece model as a tokenizers file


def _spm_model(spm_path: str | Path, trainer_spec, pieces: list[tuple[str, float, int]]):
    """The ``tokenizers`` Unigram or BPE model that segments as the SentencePiece model does."""
    from tokenizers.models import BPE, Unigram

    if trainer_spec.model_type == 1:  # unigram
        # Control pieces ([PAD] [CLS] ...) are never matched in SentencePiece's lattice; tokenizers has no
        # such type, so price them out: a score far below any piece makes the ordinary characters win.
        # (It also lowers the unknown-character score, which only competes with these pieces.)
        floor = min(s for _, s, t in pieces if t == _NORMAL) - 1e4
        scored = [(p, s if t in (_NORMAL, _USER_DEFINED) else floor) for p, s, t in pieces]
        return Unigram(scored, unk_id=trainer_spec.unk_id, byte_fallback=False)
    if trainer_spec.model_type == 2:  # BPE: merges ranked by the score of the merged piece, as SentencePiece does
        normal = {p: (s, i) for i, (p, s, t) in enumerate(pieces) if t == _NORMAL}
        ranked = sorted(
            (-s, i, p[:k], p[k:]) for p, (s, i) in normal.items() for k in range(1, len(p)) if p[:k] in normal and p[k:] in normal
        )
        return BPE(
            vocab={p: i for i, (p, _, _) in enumerate(pieces)},
            merges=[(a, b) for _, _, a, b in ranked],
            unk_token=pieces[trainer_spec.unk_id][0],
            fuse_unk=True,
            byte_fallback=False,
            ignore_merges=any(t == _USER_DEFINED for _, _, t in pieces),  # a whole user-defined piece is never re-merged
        )
    raise HFInteropError(f"{spm_path}: SentencePiece model type {trainer_spec.model_type} is not unigram or BPE")


def build_hf_tokenizer(spm_path: str | Path):
    """A ``tokenizers.Tokenizer`` that encodes like our SentencePiece model (see the module docstring)."""
    require_transformers()
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers

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
    tok = Tokenizer(_spm_model(spm_path, ts, pieces))
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
    user_defined = [p for p, _, t in pieces if t == _USER_DEFINED]
    if user_defined:  # SentencePiece emits user-defined pieces whole, longest first, anywhere
        pattern = "|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
        pre.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.Fuse(), decoders.Strip(content=" ", left=1 if ns.add_dummy_prefix else 0)]
    )
    set_pair_template(tok)
    return tok


def save_hf_tokenizer(spm_path: str | Path, out_dir: str | Path, model_max_length: int, *, type_rows: int = 2, normalizer=None) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` (loadable by ``AutoTokenizer``) and a copy of the
    SentencePiece model as ``spm.model``. An imported checkpoint's ``tokenizer.json`` (its ids already
    ours, see :func:`renumber_tokenizer`) is written as it is, with no ``spm.model``. ``type_rows``: the
    exported model's token-type rows (1: segment B is typed 0 too). ``normalizer``: a ``tokenizers``
    normaliser run before the tokenizer's own (the tweet rules, :mod:`twilbert.hf.normalizers`)."""
    transformers = require_transformers()
    if Path(spm_path).suffix == ".json":
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(spm_path))
    else:
        backend = build_hf_tokenizer(spm_path)
    set_pair_template(backend, segment_b=1 if type_rows > 1 else 0)
    if normalizer is not None:
        from tokenizers import normalizers

        backend.normalizer = normalizer if backend.normalizer is None else normalizers.Sequence([normalizer, backend.normalizer])
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
            if sha is not None and sha256_file(c) != sha:
                raise HFInteropError(f"{c}: not the vocabulary {directory} was pre-trained with (sha256 differs); pass --vocab-model")
            return c
    return None


# --------------------------------------------------------------------------------------------------
# import: a checkpoint's own tokenizer, renumbered to our special ids


def find_spm(hf_dir: Path) -> Path | None:
    """A SentencePiece model file in a checkpoint directory (ours first), if any."""
    for name in (SPM_FILE, "spiece.model", "sentencepiece.bpe.model", "tokenizer.model"):
        if (hf_dir / name).is_file():
            return hf_dir / name
    return None


def source_tokenizer(hf_dir: Path) -> tuple[dict[str, Any], dict[str, str]] | None:
    """``(tokenizer.json as a dict, roles)`` of a checkpoint's own fast tokenizer (``AutoTokenizer``
    converts a ``vocab.txt`` or ``spiece.model`` to one), or None when it has no tokenizer files. Files
    that are there but do not load are an error: importing without them would leave weights whose
    vocabulary nobody knows."""
    present = [name for name in TOKENIZER_SOURCES if (hf_dir / name).is_file()]
    if not present:
        return None  # (transformers 5 would build an empty tokenizer of specials alone from config.json)
    transformers = quiet_transformers()
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


# Tokens of pysentimiento's preprocessing (RoBERTuito): handles, and the words it wraps tags and emoji in.
PYSENTIMIENTO_MARKERS = ("@usuario", "hashtag", "emoji")


def _whole_tokens(spec: dict[str, Any]) -> set[str]:
    """Every token of a tokenizer.json as a word: added tokens, and vocabulary pieces with a word-start
    mark (``Ġ`` byte-level, ``▁`` SentencePiece) stripped."""
    vocab = spec["model"].get("vocab")
    pieces = list(vocab) if isinstance(vocab, dict) else [p for p, _ in vocab or []]
    return {p.removeprefix("\u0120").removeprefix("\u2581") for p in pieces} | {a["content"] for a in spec.get("added_tokens") or []}


def suggested_rules(spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The ``normalize.rules`` a checkpoint's tokenizer expects, and why: RoBERTuito-like vocabularies
    (``@usuario``, ``hashtag`` and ``emoji`` whole tokens) take the ``pysentimiento`` preset; any other
    the default preset. ``lowercase`` follows the tokenizer: true when it lower-cases or its vocabulary
    has no upper-case word; false for a cased vocabulary (then the pipeline must keep the case)."""
    words = _whole_tokens(spec)
    upper = sum(any(c.isupper() for c in w) for w in words if w.isalpha() and len(w) > 1)
    lower = lowercases(spec) is True or upper == 0
    casing = "the tokenizer lower-cases" if lowercases(spec) else ("its vocabulary has no upper-case word" if lower else f"cased vocabulary words: {upper}")
    if all(m in words for m in PYSENTIMIENTO_MARKERS):
        rules: dict[str, Any] = {"preset": "pysentimiento"} | ({"lowercase": True} if lower else {})
        return rules, f"its vocabulary has pysentimiento's {', '.join(PYSENTIMIENTO_MARKERS)} as whole tokens; {casing}"
    return {"preset": "default", "lowercase": lower}, f"no preprocessing markers found in its vocabulary; {casing}"


def _special_ids(tok, roles: dict[str, str]) -> list[int]:
    """The source ids of the tokens playing our five special roles, in our order."""
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
    return old_special


def _renumber_model(model: dict[str, Any], new_of: dict[int, int], rename: dict[str, str]) -> None:
    """Give the ``model`` section of a tokenizer.json its new ids and special names, in place."""
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


def _take_added(spec: dict[str, Any]) -> None:
    """Put the added tokens the model section lacks (RoBERTa's and XLM-R's ``<mask>``, added after
    training) into it at their ids, in place: ``tokenizers`` renumbers an added token that its model does
    not know, so renumbering must move it with the model's ids. A Unigram list gets them at a score far
    below every piece (added tokens are matched before the model, and typed as text --
    ``split_special_tokens`` -- they never win over the characters that spell them)."""
    model = spec["model"]
    added = sorted((a["id"], a["content"]) for a in spec.get("added_tokens") or [])
    if isinstance(model.get("vocab"), dict):
        ids = set(model["vocab"].values())
        model["vocab"].update({content: i for i, content in added if content not in model["vocab"] and i not in ids})
    elif isinstance(model.get("vocab"), list) and model["vocab"]:
        pieces = model["vocab"]
        past = [(i, content) for i, content in added if i >= len(pieces)]
        if [i for i, _ in past] != list(range(len(pieces), len(pieces) + len(past))):
            raise HFInteropError(f"added tokens {past} leave a gap after the Unigram tokenizer's {len(pieces)} pieces; not supported")
        floor = min(score for _, score in pieces) - 1e4
        pieces.extend([content, floor] for _, content in past)


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
    old_special = _special_ids(tok, roles)
    taken = set(old_special)
    perm = old_special + [i for i in range(n_rows) if i not in taken]  # perm[new] = old
    new_of = {old: new for new, old in enumerate(perm)}
    rename = {roles[ours]: ours for ours in SPECIAL_TOKENS}

    spec = json.loads(json.dumps(spec))
    _take_added(spec)
    _renumber_model(spec["model"], new_of, rename)
    for added in spec.get("added_tokens") or []:
        added["id"] = new_of[added["id"]]
        added["content"] = rename.get(added["content"], added["content"])
        # Only our five are special (HFTokenizer encodes those as text when typed); any other special
        # token of the source ("@usuario", "HTTPURL"...) stays one token, as the source splits it.
        added["special"] = added["content"] in SPECIAL_TOKENS
    spec["padding"] = spec["truncation"] = None
    spec["post_processor"] = None
    out = Tokenizer.from_str(json.dumps(spec))
    set_pair_template(out)
    return out.to_str(), perm


def check_renumbered(spec: dict[str, Any], renumbered: str, perm: list[int], texts: list[str]) -> None:
    """The renumbered tokenizer splits ``texts`` exactly as the source, ids mapped through ``perm``."""
    from tokenizers import Tokenizer

    src, new = Tokenizer.from_str(json.dumps(spec)), Tokenizer.from_str(renumbered)
    src.no_padding()  # a source's fixed padding / truncation (sentence-transformers exports) is no split
    src.no_truncation()
    for text in texts:
        a = src.encode(text, add_special_tokens=False).ids
        b = new.encode(text, add_special_tokens=False).ids
        if [perm[i] for i in b] != a:
            raise HFInteropError(f"renumbering changed how {text!r} is tokenised: {a} vs {[perm[i] for i in b]}")
