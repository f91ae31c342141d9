"""SentencePiece vocabulary training with fixed special-token ids.

The trained SentencePiece model *is* the tokenizer: nothing rewrites its pieces for WordPiece, as the
original did, inverting ``##`` and leaving entries unreachable (docs/deviations.md#spm-is-the-tokenizer).

* The specials ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4`` (:mod:`twilbert.tokens`) live inside the
  SentencePiece model; ``[CLS] [SEP] [MASK]`` are *control* symbols, so the text "[MASK]" in a tweet
  never produces them; ``<s>``/``</s>`` do not exist (docs/deviations.md#special-token-ids).
* SentencePiece's own normalisation is ``identity``: ``twilbert.text.normalize`` is the one place where
  text changes, and a hidden NFKC pass would break ``decode(encode(x)) == x``
  (docs/deviations.md#spm-identity-normalization).
* Placeholders (``user``, ``url``, ...) are *user-defined symbols*, so each is one piece ``▁p``.
  SentencePiece matches those greedily, even inside a word, so a bare ``p`` is added only for the
  placeholders a style glues to a preceding character (``normalize.glued_placeholder_tokens``): a bare
  ``url`` would split ``burla`` into ``▁b url a``. ``▁p`` still matches the start of a longer word
  (``usera`` -> ``▁user a``), so a placeholder must not begin common words
  (docs/deviations.md#placeholders-user-defined).
* Training is reproducible: SentencePiece's own sentence sampling is not reproducible across
  processes, so a seeded reservoir sample is handed to it whole; the unigram result depends on
  ``num_threads``, a recipe knob here; the model bytes do not depend on the output path
  (docs/deviations.md#vocab-reproducible-sample).
* ``vocab_size`` is a hard limit: a corpus too small for it is an error naming the key.

Peak memory is set by ``input_sentence_size``, not by the corpus: the corpus is streamed into the
reservoir and the sample handed to SentencePiece one text at a time, released as it goes. Figures per
sample size: benchmarks/RESULTS.md#vocabulary.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import sentencepiece as spm

from twilbert.config import ConfigError, check, to_dict
from twilbert.tokens import CLS_ID, MASK_ID, N_SPECIAL, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID
from twilbert.utils import atomic_write, atomic_write_bytes, atomic_write_text

WORD_START = "\u2581"  # "▁", SentencePiece's word-boundary marker
TEXT_COLUMNS = ("orig_text", "reply_text", "text")  # text columns of the normalised parquet files
NORMALIZATION_RULE = "identity"  # see module docstring


@dataclass(frozen=True, kw_only=True)
class VocabConfig:
    """The ``vocab:`` section of params.yaml. Every field changes the trained model."""

    model_type: Literal["bpe", "unigram"] = "unigram"
    vocab_size: int = 8000  # total pieces, the 5 specials and the placeholders included
    # An imported checkpoint's tokenizer (its directory or its tokenizer.json / spm.model; `twilbert
    # import-hf` writes one) used instead of training: continued pre-training from that checkpoint
    # needs the vocabulary its embeddings were trained with. Then vocab_size must equal its size and
    # the other keys here are not used.
    pretrained: str | None = None
    character_coverage: float = 0.9995  # rarer characters become [UNK]
    # texts sampled (seeded reservoir); 0 = all. Sets peak RSS: benchmarks/RESULTS.md#vocabulary
    input_sentence_size: int = 2_000_000
    seed: int = 42  # sampling seed
    num_threads: int = 4  # SentencePiece trainer threads; the unigram result depends on it

    def __post_init__(self) -> None:
        check(self.vocab_size >= N_SPECIAL + 1, "vocab_size", f"must be >= {N_SPECIAL + 1}, got {self.vocab_size}")
        check(self.vocab_size <= 2**31 - 1, "vocab_size", "is too large")
        check(
            0.0 < self.character_coverage <= 1.0,
            "character_coverage",
            f"must be in (0, 1], got {self.character_coverage}",
        )
        check(self.input_sentence_size >= 0, "input_sentence_size", "must be >= 0 (0 = use every text)")
        check(self.seed >= 0, "seed", "must be >= 0")
        check(1 <= self.num_threads <= 1024, "num_threads", f"must be in [1, 1024], got {self.num_threads}")


def placeholder_pieces(placeholders: Sequence[str], glued: Sequence[str] = ()) -> list[str]:
    """User-defined pieces for the placeholders: every ``▁p`` first, then a bare ``p`` for each of
    ``glued`` (the placeholders that can follow a non-space character; see the module docstring)."""
    stray = [g for g in glued if g not in placeholders]
    if stray:
        raise ConfigError(f"vocab: glued placeholders {stray} are not among the placeholders {list(placeholders)}")
    for p in placeholders:
        if not p or re.search(r"\s", p) or WORD_START in p:
            raise ConfigError(f"vocab: placeholder {p!r} must be non-empty, without spaces or '{WORD_START}'")
        if p in SPECIAL_TOKENS:
            raise ConfigError(f"vocab: placeholder {p!r} clashes with a special token")
    if len(set(placeholders)) != len(placeholders):
        raise ConfigError(f"vocab: duplicate placeholders in {list(placeholders)}")
    return [WORD_START + p for p in placeholders] + [p for p in placeholders if p in glued]


def parquet_texts(paths: Sequence[Path], batch_rows: int = 65_536) -> Iterator[str]:
    """Stream the non-empty texts of normalised parquet files (``orig_text``/``reply_text``/``text``).

    Missing files are skipped (a corpus may have only pairs or only tweets). No deduplication: a tweet
    with k replies is seen k times, as in the original's ``create_vocab.py``.
    """
    import pyarrow.parquet as pq

    for path in paths:
        path = Path(path)
        if not path.exists():
            continue
        pf = pq.ParquetFile(path, pre_buffer=False)  # the default's read cache grows with the file
        cols = [c for c in TEXT_COLUMNS if c in pf.schema_arrow.names]
        if not cols:
            raise ConfigError(f"vocab: {path} has none of the text columns {TEXT_COLUMNS}")
        for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
            for col in batch.columns:
                yield from (t for t in col.to_pylist() if t)


def reservoir_sample(texts: Iterable[str], k: int, seed: int, batch: int = 65_536) -> tuple[list[str], int]:
    """Uniform sample of ``k`` texts from a stream of unknown length (Algorithm R), and the count seen.

    Deterministic given ``seed``. The random draws are vectorised per batch; only the (ever rarer)
    accepted items are placed one by one, in stream order, so it equals the sequential algorithm.
    """
    rng = np.random.default_rng(seed)
    sample: list[str] = []
    seen = 0
    buf: list[str] = []

    def flush() -> None:
        nonlocal seen
        start = 0
        if len(sample) < k:  # fill phase
            start = min(k - len(sample), len(buf))
            sample.extend(buf[:start])
        if start < len(buf):
            idx = np.arange(seen + start, seen + len(buf), dtype=np.int64)  # 0-based stream positions
            j = rng.integers(0, idx + 1)  # item at position i replaces slot j if j < k
            for pos in np.flatnonzero(j < k):
                sample[j[pos]] = buf[start + pos]
        seen += len(buf)
        buf.clear()

    for t in texts:
        buf.append(t)
        if len(buf) >= batch:
            flush()
    flush()
    return sample, seen


class _Counted:
    """Iterator wrapper that counts what SentencePiece consumed (when no sampling is done) and keeps
    the first ``keep`` texts (the probe for :func:`vocab_stats`)."""

    def __init__(self, it: Iterable[str], keep: int = 0):
        self._it, self.n, self._keep, self.head = iter(it), 0, keep, []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        t = next(self._it)
        self.n += 1
        if len(self.head) < self._keep:
            self.head.append(t)
        return t


def _drain(items: list[str]) -> Iterator[str]:
    """Yield the items of ``items`` in order, releasing each from the list as it goes.

    SentencePiece copies every sentence into its own memory before training, so without this the
    Python sample (hundreds of MB at millions of sentences, benchmarks/RESULTS.md#vocabulary) would stay
    alive next to it for the whole training. Same sentences, same order: the model bytes do not change."""
    for i in range(len(items)):
        t, items[i] = items[i], None
        yield t
    items.clear()


# What a vocabulary directory holds: the SentencePiece model (+ its readable .vocab), or an adopted tokenizer.
SPM_FILE, SPM_VOCAB_FILE, HF_TOKENIZER_FILE = "spm.model", "spm.vocab", "tokenizer.json"
PROBE_TEXTS = 20_000  # training texts (the first of the sample) re-encoded for the summary's stats


def vocab_stats(
    sp: spm.SentencePieceProcessor, probe: Sequence[str], placeholders: Sequence[str], glued: Sequence[str] = ()
) -> dict:
    """Deterministic quality figures of a trained model on ``probe`` (some of its training texts).

    * ``unk_rate``: share of pieces that are ``[UNK]`` (characters cut by ``character_coverage``);
    * ``pieces_per_text`` / ``pieces_per_word``: how finely text is cut;
    * ``placeholders_single_piece``: share of placeholders that encode as their one piece after a
      space (``▁user``) and, for the ``glued`` ones, after punctuation (``user``) -- anything below
      1.0 is a bug;
    * ``placeholder_coverage``: of the placeholder *occurrences* in the probe (whitespace tokens equal
      to one), the share encoded as exactly that placeholder's piece; ``placeholder_occurrences``: how
      many there were (0 leaves coverage at 1.0).
    """
    probe = list(probe)
    pieces = sp.encode(probe, num_threads=1) if probe else []
    single = {}
    for ph in placeholders:
        spaced = sp.encode(f"hola {ph} adios")
        bare_ok = ph not in glued or sp.piece_to_id(ph) in sp.encode(f"({ph})")
        single[ph] = sp.piece_to_id(WORD_START + ph) in spaced and bare_ok
    ph_ids = {sp.piece_to_id(WORD_START + ph) for ph in placeholders}
    return _probe_figures(probe, pieces, placeholders, ph_ids, single)


def _probe_figures(probe: list[str], pieces: list[list[int]], placeholders: Sequence[str], ph_ids: set[int], single: dict[str, bool]) -> dict:
    """The figures of :func:`vocab_stats` from the probe texts, their pieces and the placeholder ids."""
    n_pieces = sum(map(len, pieces))
    n_words = sum(len(t.split()) for t in probe)
    occurrences = hits = 0
    for text, ids in zip(probe, pieces) if placeholders else ():
        n = sum(w in placeholders for w in text.split())
        if n:
            occurrences += n
            hits += min(n, sum(i in ph_ids for i in ids))
    return {
        "probe_texts": len(probe),
        "unk_rate": sum(ids.count(UNK_ID) for ids in pieces) / n_pieces if n_pieces else 0.0,
        "pieces_per_text": n_pieces / len(probe) if probe else 0.0,
        "pieces_per_word": n_pieces / n_words if n_words else 0.0,
        "placeholders_single_piece": sum(single.values()) / len(single) if single else 1.0,
        "placeholder_single_piece": single,
        "placeholder_occurrences": occurrences,
        "placeholder_coverage": hits / occurrences if occurrences else 1.0,
    }


def _is_path_list(corpus) -> bool:
    return isinstance(corpus, (list, tuple)) and len(corpus) > 0 and all(isinstance(x, os.PathLike) for x in corpus)


def train_vocab(
    corpus: Sequence[Path] | Iterable[str],
    cfg: VocabConfig,
    out_prefix: Path,
    placeholders: Sequence[str] = (),
    glued: Sequence[str] = (),
) -> Path:
    """Train SentencePiece and write ``<out_prefix>.model``, ``<out_prefix>.vocab`` and ``vocab.json``.

    ``corpus``: a list of ``Path`` objects (normalised parquet files; missing ones skipped) or any
    iterable of already-normalised texts. ``placeholders`` become pieces ``▁p``; those also in
    ``glued`` a bare ``p`` as well (``normalize.placeholder_tokens`` / ``glued_placeholder_tokens``).
    Returns the path of the ``.model`` file.
    """
    out_prefix = Path(out_prefix)
    (out_prefix.parent / "vocab.json").unlink(missing_ok=True)  # written last: present = the files beside it are this run's
    user_pieces = placeholder_pieces(list(placeholders), list(glued))
    n_reserved = N_SPECIAL + len(user_pieces)
    if cfg.vocab_size <= n_reserved:
        raise ConfigError(
            f"vocab.vocab_size: {cfg.vocab_size} must exceed the {N_SPECIAL} specials + "
            f"{len(user_pieces)} placeholder pieces = {n_reserved}"
        )
    from_files = _is_path_list(corpus)
    texts = iter(parquet_texts(corpus) if from_files else (t for t in corpus if t))
    first = next(texts, None)
    if first is None:
        where = f" (files: {', '.join(map(str, corpus))})" if from_files else ""
        raise ConfigError(f"vocab: no text to train on: the corpus is empty{where}")
    texts = itertools.chain([first], texts)

    if cfg.input_sentence_size > 0:
        sample, seen = reservoir_sample(texts, cfg.input_sentence_size, cfg.seed)
        used, probe = len(sample), sample[:PROBE_TEXTS]
        model_bytes = _train_spm(_drain(sample), cfg, user_pieces)
    else:
        counted = _Counted(texts, keep=PROBE_TEXTS)
        model_bytes = _train_spm(counted, cfg, user_pieces)
        seen = used = counted.n
        probe = counted.head

    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    (out_prefix.parent / HF_TOKENIZER_FILE).unlink(missing_ok=True)  # an adopted tokenizer of an earlier run (adopt_vocab)
    model_path = out_prefix.with_name(out_prefix.name + ".model")
    atomic_write_bytes(model_path, model_bytes)
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    _check_specials(sp)
    vocab_lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size())]
    atomic_write_text(out_prefix.with_name(out_prefix.name + ".vocab"), "".join(vocab_lines))
    summary = {
        "model_file": model_path.name,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "vocab_size": sp.get_piece_size(),
        "model_type": cfg.model_type,
        "normalization_rule_name": NORMALIZATION_RULE,
        "specials": {tok: i for i, tok in enumerate(SPECIAL_TOKENS)},
        "placeholders": {p: [sp.piece_to_id(WORD_START + p)] + ([sp.piece_to_id(p)] if p in glued else []) for p in placeholders},
        "texts_seen": seen,
        "texts_used": used,
        "learned_pieces": sp.get_piece_size() - N_SPECIAL - len(user_pieces),
        "user_defined_pieces": len(user_pieces),
        "stats": vocab_stats(sp, probe, list(placeholders), list(glued)),
        "config": to_dict(cfg),
    }
    atomic_write_text(out_prefix.parent / "vocab.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return model_path


def tokenizer_stats(tokenizer, probe: Sequence[str], placeholders: Sequence[str]) -> dict:
    """:func:`vocab_stats` for any :class:`~twilbert.text.tokenizer.Tokenizer` (an adopted one): a
    placeholder counts as single-piece when ``hola <p> adios`` holds exactly the piece ``<p>`` encodes to."""
    probe = list(probe)
    pieces = tokenizer.encode_batch(probe) if probe else []
    single, ph_ids = {}, {}
    for ph in placeholders:
        alone = tokenizer.encode(ph)
        single[ph] = len(alone) == 1 and alone[0] != UNK_ID and alone[0] in tokenizer.encode(f"hola {ph} adios")
        if single[ph]:
            ph_ids[ph] = alone[0]
    return _probe_figures(probe, pieces, placeholders, set(ph_ids.values()), single)


def adopt_vocab(source: str | Path, corpus: Sequence[Path], cfg: VocabConfig, out_dir: Path, placeholders: Sequence[str] = ()) -> Path:
    """Copy an imported checkpoint's tokenizer (``vocab.pretrained``) into ``out_dir`` instead of
    training one, and write ``vocab.json`` with the same figures as :func:`train_vocab` (on the first
    :data:`PROBE_TEXTS` normalised texts). Its size must be ``vocab.vocab_size``. Returns the copy."""
    from twilbert.text.tokenizer import Tokenizer, TokenizerError, tokenizer_file

    try:
        path = tokenizer_file(source)
        tok = Tokenizer.from_file(path)
    except TokenizerError as exc:
        raise ConfigError(f"vocab.pretrained: {exc} (expected an import-hf output directory, or its tokenizer.json / spm.model)") from None
    if tok.vocab_size != cfg.vocab_size:
        raise ConfigError(f"vocab.vocab_size: {cfg.vocab_size}, but vocab.pretrained ({path}) has {tok.vocab_size} tokens: set vocab.vocab_size: {tok.vocab_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").unlink(missing_ok=True)  # written last, as in train_vocab
    target = out_dir / tok.file_name
    if path.resolve() != target.resolve():
        atomic_write(target, lambda tmp: shutil.copyfile(path, tmp))
    for stale in (SPM_FILE, SPM_VOCAB_FILE, HF_TOKENIZER_FILE):  # an earlier run's other kind: it would shadow this one
        if stale != target.name:
            (out_dir / stale).unlink(missing_ok=True)
    probe = list(itertools.islice(parquet_texts([c for c in corpus if Path(c).exists()]), PROBE_TEXTS)) if corpus else []
    summary = {
        "model_file": target.name,
        "model_sha256": tok.sha256,
        "vocab_size": tok.vocab_size,
        "model_type": getattr(tok, "model_type", cfg.model_type),
        "pretrained_from": str(source),
        "specials": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
        "placeholders": {},
        "texts_seen": len(probe),
        "texts_used": 0,
        "learned_pieces": tok.vocab_size - N_SPECIAL,
        "user_defined_pieces": int(len(tok.user_defined_ids)),
        "stats": tokenizer_stats(tok, probe, list(placeholders)),
        "config": to_dict(cfg),
    }
    atomic_write_text(out_dir / "vocab.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return target


def _train_spm(sentences: Iterable[str], cfg: VocabConfig, user_pieces: list[str]) -> bytes:
    """Run the SentencePiece trainer in memory; turn its size errors into errors naming the key."""
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=writer,
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            input_sentence_size=0,  # we sampled already (reproducibly)
            shuffle_input_sentence=False,
            num_threads=cfg.num_threads,
            normalization_rule_name=NORMALIZATION_RULE,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            eos_id=-1,
            pad_piece=SPECIAL_TOKENS[PAD_ID],
            unk_piece=SPECIAL_TOKENS[UNK_ID],
            control_symbols=[SPECIAL_TOKENS[i] for i in (CLS_ID, SEP_ID, MASK_ID)],
            user_defined_symbols=user_pieces,
            hard_vocab_limit=True,
            minloglevel=2,
        )
    except RuntimeError as exc:
        msg = str(exc)
        if m := re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", msg):
            raise ConfigError(
                f"vocab.vocab_size: {m.group(1)} is more than this corpus supports (at most {m.group(2)} pieces, "
                f"specials and placeholders included); lower vocab_size or train on more text"
            ) from None
        if m := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg):
            raise ConfigError(
                f"vocab.vocab_size: {m.group(1)} is too small: the {m.group(2)} distinct characters kept by "
                f"character_coverage={cfg.character_coverage} (plus specials) each need a piece; raise "
                f"vocab_size or lower character_coverage"
            ) from None
        raise
    return writer.getvalue()


def _check_specials(sp: spm.SentencePieceProcessor) -> None:
    """The fixed ids are a contract with masking, data and the model: fail loudly if they moved."""
    got = [sp.id_to_piece(i) for i in range(N_SPECIAL)]
    if got != list(SPECIAL_TOKENS):
        raise RuntimeError(f"special tokens are {got}, expected {list(SPECIAL_TOKENS)} at ids 0..{N_SPECIAL - 1}")


__all__ = ["VocabConfig", "adopt_vocab", "tokenizer_stats", "train_vocab", "vocab_stats", "parquet_texts", "reservoir_sample", "placeholder_pieces", "WORD_START"]
