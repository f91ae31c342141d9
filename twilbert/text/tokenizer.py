"""Tokenizer: a thin wrapper over the trained SentencePiece model (see ``twilbert.text.vocab``), or over
an imported checkpoint's own tokenizer (:class:`HFTokenizer`).

The SentencePiece model is the whole tokenizer: no BERT ``FullTokenizer`` on top, unlike the original's
WordPiece-over-SentencePiece (docs/deviations.md#spm-is-the-tokenizer). Input text must already be
normalised by ``twilbert.text.normalize``; this class does not lower-case or clean anything.

Input layout (as the original): ``[CLS] a [SEP] b [SEP]`` with token types 0 for ``[CLS] a [SEP]``
and 1 for ``b [SEP]``; an MLM-only example (no ``b``) is ``[CLS] a [SEP]``, all type 0. Unlike the
original there is no per-segment left padding here: padding is the collator's job, on the right, with
an attention mask (docs/deviations.md#right-padding-attention-mask).

Two kinds of vocabulary file, one interface (:meth:`Tokenizer.from_file` picks by file, or finds the
file in a directory such as ``models/vocab``):

* ``spm.model``: the vocab stage's SentencePiece model (the default pipeline);
* ``tokenizer.json``: a Hugging Face ``tokenizers`` file written by ``twilbert import-hf`` from a
  checkpoint a user already has (a Spanish BERT's WordPiece, an ALBERT's SentencePiece...), its ids
  renumbered so the five specials sit at our fixed ids (the embedding rows are permuted to match).
  Continued pre-training from such a checkpoint must keep its tokenizer: its embeddings mean nothing
  under any other. Needs the ``hf`` extra (``tokenizers``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import sentencepiece as spm

from twilbert.text.vocab import HF_TOKENIZER_FILE, SPM_FILE, WORD_START
from twilbert.tokens import CLS_ID, MASK_ID, N_SPECIAL, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID

_USER_DEFINED = 4  # sentencepiece_model.proto: ModelProto.SentencePiece.Type.USER_DEFINED
TOKENIZER_FILES = (SPM_FILE, HF_TOKENIZER_FILE)  # what a vocabulary directory holds (one of them)


def resolve_threads(num_threads: int) -> int:
    """``0`` means every core this process may use (cgroup/affinity aware, unlike hardware_concurrency)."""
    if num_threads > 0:
        return num_threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def build_input(
    a_ids: Sequence[int] | np.ndarray, b_ids: Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] a [SEP] b [SEP]`` (or ``[CLS] a [SEP]`` when ``b`` is empty) and its token types.

    Returns int64 arrays ``ids`` (T,) and ``token_type_ids`` (T,), T = len(a) + len(b) + 3 (or + 2).
    """
    a = np.asarray(a_ids, dtype=np.int64)
    b = np.asarray(b_ids if b_ids is not None else (), dtype=np.int64)
    cls, sep = np.array([CLS_ID], np.int64), np.array([SEP_ID], np.int64)
    if b.size == 0:
        ids = np.concatenate([cls, a, sep])  # (La + 2,)
        return ids, np.zeros_like(ids)
    ids = np.concatenate([cls, a, sep, b, sep])  # (La + Lb + 3,)
    types = np.zeros_like(ids)
    types[a.size + 2 :] = 1
    return ids, types


class TokenizerError(ValueError):
    """A vocabulary model that cannot be used: not a SentencePiece model, without our special ids, or
    not the one a model or a set of shards was built with. The stages report it in one line."""


class Tokenizer:
    """SentencePiece with the project's fixed special ids and placeholder pieces."""

    pad_id, unk_id, cls_id, sep_id, mask_id = PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID
    special_ids = (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)

    def __init__(self, model_bytes: bytes, *, source: str = "this model"):
        self._bytes = bytes(model_bytes)
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self._bytes)
        except RuntimeError as exc:  # SentencePiece's own parse error, e.g. a text file given as the model
            raise TokenizerError(f"{source}: not a SentencePiece model ({str(exc).splitlines()[0]})") from None
        got = [self.sp.id_to_piece(i) for i in range(min(N_SPECIAL, self.sp.get_piece_size()))]
        if got != list(SPECIAL_TOKENS):
            raise TokenizerError(
                f"{source}: this SentencePiece model has {got} at ids 0..{N_SPECIAL - 1}, expected {list(SPECIAL_TOKENS)}: "
                "train it with twilbert.text.vocab.train_vocab"
            )

    file_name = SPM_FILE  # the name a copy of this tokenizer gets (fine-tuned model dirs)

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        """The tokenizer in ``path``: a ``spm.model``, a ``tokenizer.json`` (an :class:`HFTokenizer`), or a
        directory holding one of them (``models/vocab``, an imported checkpoint)."""
        path = tokenizer_file(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TokenizerError(f"{path}: cannot read the vocabulary model ({exc.strerror})") from None
        if cls is Tokenizer and path.suffix == ".json":
            return HFTokenizer(data, source=str(path))
        return cls(data, source=str(path))

    # -- identity ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @cached_property
    def sha256(self) -> str:
        """Hash of the model file bytes: shards and checkpoints record it to catch a vocab mismatch."""
        return hashlib.sha256(self._bytes).hexdigest()

    @cached_property
    def user_defined_ids(self) -> np.ndarray:
        """Ids of the user-defined pieces (the placeholders, both ``▁p`` and ``p`` forms), ascending."""
        from sentencepiece import sentencepiece_model_pb2  # needs `protobuf`; only read once

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self._bytes)
        return np.array([i for i, p in enumerate(proto.pieces) if p.type == _USER_DEFINED], dtype=np.int64)

    @cached_property
    def placeholder_ids(self) -> dict[str, tuple[int, ...]]:
        """``{"user": (id of "▁user", id of "user"), ...}``: every piece a placeholder can become."""
        out: dict[str, list[int]] = {}
        for i in self.user_defined_ids.tolist():
            piece = self.sp.id_to_piece(i)
            out.setdefault(piece.removeprefix(WORD_START), []).append(i)

        def word_initial_first(i: int) -> bool:  # "▁user" before "user"
            return not self.sp.id_to_piece(i).startswith(WORD_START)

        return {p: tuple(sorted(ids, key=word_initial_first)) for p, ids in out.items()}

    # -- encoding ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """Encode many texts in SentencePiece's C++ thread pool (0 = all usable cores). Deterministic."""
        return self.sp.encode(list(texts), num_threads=resolve_threads(num_threads))

    def encode_flat(self, texts: list[str], num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Encode a batch into Arrow-style ``(values (N,) int32, offsets (n+1,) int64)``.

        Text ``i`` is ``values[offsets[i]:offsets[i+1]]``. This is the form shards are built from, and
        it avoids one Python list per text on the hot path.
        """
        lists = self.encode_batch(texts, num_threads)
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, lists), dtype=np.int64, count=len(lists)), out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
        return values, offsets

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of the ids; control pieces ([PAD] [CLS] [SEP] [MASK]) decode to nothing."""
        return self.sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)

    # -- tables for masking and batching ----------------------------------------------------------
    def word_start_table(self) -> np.ndarray:
        """(V,) bool: True where a piece starts a word (``▁x``, the bare ``▁``, placeholders).

        Used by whole-word masking: a word is a word-start piece plus the non-start pieces after it.
        Specials are False (they are never masked). Punctuation glued to a word (``hola,``) is a
        continuation, as in BERT/XLM-R whole-word masking over SentencePiece.
        """
        pieces = (self.id_to_piece(i) for i in range(self.vocab_size))
        table = np.fromiter(map(self._starts_word, pieces), dtype=bool, count=self.vocab_size)
        table[self.user_defined_ids] = True
        table[list(self.special_ids)] = False
        return table

    def _starts_word(self, piece: str) -> bool:
        return piece.startswith(WORD_START)

    def display_piece(self, i: int) -> str:
        """A piece as it reads inside text (reports): ``▁x`` -> `` x`` (a word start), ``x`` -> ``x``."""
        return self.id_to_piece(i).replace(WORD_START, " ")

    def build_input(self, a_ids, b_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """See :func:`build_input`."""
        return build_input(a_ids, b_ids)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]})"


def id_rows(tok) -> int:
    """Rows the ids of a ``tokenizers.Tokenizer`` index: highest id + 1, not the token count (a
    ``vocab.txt`` with a repeated line leaves an id no token has)."""
    return max(tok.get_vocab(with_added_tokens=True).values()) + 1


def tokenizer_file(path: str | Path) -> Path:
    """``path`` itself, or the tokenizer file inside the directory ``path`` (``spm.model`` first)."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = [path / name for name in TOKENIZER_FILES if (path / name).is_file()]
    if len(found) > 1:  # e.g. a vocab stage run by hand into the directory of an earlier one
        raise TokenizerError(f"{path}: holds both {' and '.join(f.name for f in found)}; which vocabulary is meant is unclear: remove the stale one")
    if not found:
        raise TokenizerError(f"{path}: no vocabulary model in this directory (neither {' nor '.join(TOKENIZER_FILES)})")
    return found[0]


def _tokenizers(source: str):
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - the hf extra is installed by make
        raise TokenizerError(f"{source}: a Hugging Face tokenizer needs the `tokenizers` package (pip install -e .[hf])") from None
    return tokenizers


BYTE_LEVEL_SPACE = "\u0120"  # 'Ġ': byte-level BPE's encoding of a leading space


class HFTokenizer(Tokenizer):
    """A ``tokenizers`` tokenizer.json whose specials are ours at ids 0..4 (``twilbert import-hf`` renumbers
    an imported checkpoint's vocabulary so; see :func:`twilbert.hf.renumber_tokenizer`).

    It keeps the source tokenizer's own normaliser (e.g. BETO's lower-casing and accent stripping) and
    pre-tokeniser; only the [CLS]/[SEP] template is not applied (:func:`build_input` does that, as for
    SentencePiece). Special tokens typed in a tweet ("[MASK]") are encoded as text, as SentencePiece
    does with control pieces. Threads: ``tokenizers`` uses its own Rayon pool (``RAYON_NUM_THREADS``),
    so ``num_threads`` is not passed on.
    """

    file_name = HF_TOKENIZER_FILE

    def __init__(self, data: bytes, *, source: str = "this tokenizer"):
        tokenizers = _tokenizers(source)
        self._bytes = bytes(data)
        try:
            self.tok = tokenizers.Tokenizer.from_str(self._bytes.decode("utf-8"))
        except Exception as exc:  # UTF-8, or tokenizers (which raises a bare Exception for bad JSON too)
            raise TokenizerError(f"{source}: not a Hugging Face tokenizer.json ({str(exc).splitlines()[0][:200]})") from None
        got = [self.tok.id_to_token(i) for i in range(N_SPECIAL)]
        if got != list(SPECIAL_TOKENS):
            raise TokenizerError(
                f"{source}: this tokenizer has {got} at ids 0..{N_SPECIAL - 1}, expected {list(SPECIAL_TOKENS)}: "
                "import the checkpoint with `twilbert import-hf`, which renumbers them"
            )
        self.tok.no_padding()
        self.tok.no_truncation()
        self.tok.encode_special_tokens = True
        self.model_type = type(self.tok.model).__name__  # WordPiece, Unigram, BPE, WordLevel
        # What marks a word-internal piece: WordPiece's "##" prefix, or the absence of SentencePiece's "▁".
        self._continuation = (self.tok.model.continuing_subword_prefix or "##") if self.model_type == "WordPiece" else None
        self.sp = None  # no SentencePiece processor behind this one

    @cached_property
    def vocab_size(self) -> int:
        return id_rows(self.tok)

    @cached_property
    def user_defined_ids(self) -> np.ndarray:
        """Added tokens that are not special (a tokenizer's own whole-token additions), ascending."""
        specials = set(self.special_ids)
        added = self.tok.get_added_tokens_decoder()
        return np.array(sorted(i for i, t in added.items() if i not in specials and not t.special), dtype=np.int64)

    @cached_property
    def placeholder_ids(self) -> dict[str, tuple[int, ...]]:
        """Placeholders are words of the imported vocabulary, not pieces of ours: ``{}``."""
        return {}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        fast = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)  # no offsets (tokenizers >= 0.20)
        return [e.ids for e in fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def id_to_piece(self, i: int) -> str:
        piece = self.tok.id_to_token(int(i))
        return piece if piece is not None else SPECIAL_TOKENS[UNK_ID]

    def piece_to_id(self, piece: str) -> int:
        i = self.tok.token_to_id(piece)
        return UNK_ID if i is None else i

    def display_piece(self, i: int) -> str:
        """WordPiece: ``##x`` -> ``x`` (inside a word), ``x`` -> `` x``; SentencePiece-style: as the base class."""
        if self._continuation is None:
            return super().display_piece(i)
        piece = self.id_to_piece(i)
        return piece[len(self._continuation) :] if piece.startswith(self._continuation) else " " + piece

    @cached_property
    def _byte_level(self) -> bool:
        """Whether pieces carry byte-level BPE's ``Ġ`` (an encoded space: GPT-2, RoBERTa)."""
        return any(p.startswith(BYTE_LEVEL_SPACE) for p in self.tok.get_vocab(with_added_tokens=False))

    @cached_property
    def _metaspace(self) -> bool:
        """Whether pieces carry SentencePiece's ``▁`` (Unigram, BPE over Metaspace)."""
        return any(p.startswith(WORD_START) for p in self.tok.get_vocab(with_added_tokens=False))

    def _starts_word(self, piece: str) -> bool:
        """For :meth:`Tokenizer.word_start_table`: WordPiece pieces without ``##`` start a word, and
        SentencePiece-style pieces with ``▁`` do, and byte-level BPE pieces (RoBERTa) with ``Ġ`` do (a
        segment's first piece, which has no ``Ġ``, starts a masking run anyway). A model with no marker
        counts every piece as a word start (whole-word masking becomes token masking there)."""
        if self._continuation is not None:
            return not piece.startswith(self._continuation)
        if self._metaspace:
            return piece.startswith(WORD_START)
        return piece.startswith(BYTE_LEVEL_SPACE) if self._byte_level else True

    def __repr__(self) -> str:
        return f"HFTokenizer({self.model_type}, vocab_size={self.vocab_size}, sha256={self.sha256[:12]})"


__all__ = [
    "HF_TOKENIZER_FILE",
    "HFTokenizer",
    "SPM_FILE",
    "TOKENIZER_FILES",
    "Tokenizer",
    "TokenizerError",
    "build_input",
    "id_rows",
    "resolve_threads",
    "tokenizer_file",
]
