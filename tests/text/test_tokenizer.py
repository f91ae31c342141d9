"""Tokenizer wrapper: batched encoding, word-start table, input layout, identity checks."""

from __future__ import annotations

import hashlib
import io
import pickle

import numpy as np
import pytest
import sentencepiece as spm

from twilbert.text.tokenizer import Tokenizer, build_input
from twilbert.text.vocab import VocabConfig, train_vocab
from twilbert.tokens import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID

PLACEHOLDERS = ["user", "url", "hashtag"]
SYLLABLES = "ca sa pe lo mi tu ra no que bien ja je ma ña ción des pa ri to lu go ve fi cho lla gue rá té so ta ba en al es".split()


def make_lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lexicon = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(400)]
    return [" ".join(rng.choice(lexicon + PLACEHOLDERS, rng.integers(3, 15))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    out = tmp_path_factory.mktemp("vocab") / "spm"
    path = train_vocab(make_lines(400, 0), VocabConfig(vocab_size=300, input_sentence_size=0), out, PLACEHOLDERS, ["hashtag"])
    return Tokenizer.from_file(path)


def test_special_ids_and_identity(tok, tmp_path_factory):
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == 300
    assert tok.sha256 == hashlib.sha256(tok._bytes).hexdigest()
    assert tok.placeholder_ids["user"] == (tok.piece_to_id("\u2581user"),)  # spaced only
    assert tok.placeholder_ids["hashtag"] == (tok.piece_to_id("\u2581hashtag"), tok.piece_to_id("hashtag"))  # glued too
    assert set(tok.placeholder_ids) == set(PLACEHOLDERS)


def test_placeholders_encode_as_one_piece_each(tok):
    ids = tok.encode("user url hola")
    assert ids[0] == tok.placeholder_ids["user"][0] and ids[1] == tok.placeholder_ids["url"][0]
    assert tok.placeholder_ids["hashtag"][1] in tok.encode("(hashtag)")


def test_a_model_without_our_special_ids_is_refused():
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_lines(200, 3)), model_writer=writer, vocab_size=60, minloglevel=2
    )  # sentencepiece defaults: <unk>=0 <s>=1 </s>=2
    with pytest.raises(ValueError, match="expected"):
        Tokenizer(writer.getvalue())


@pytest.mark.parametrize("num_threads", [0, 1, 2])
def test_batch_encoding_equals_one_at_a_time(tok, num_threads):
    lines = make_lines(300, 1) + ["", "ñ", "zzz qqq"]  # empty text and unseen characters included
    single = [tok.encode(t) for t in lines]
    assert tok.encode_batch(lines, num_threads=num_threads) == single
    values, offsets = tok.encode_flat(lines, num_threads=num_threads)
    assert offsets[0] == 0 and offsets.size == len(lines) + 1
    assert [values[offsets[i] : offsets[i + 1]].tolist() for i in range(len(lines))] == single
    assert offsets[-3] == offsets[-4]  # the empty text has no tokens


def test_decode_inverts_encode_and_drops_control_pieces(tok):
    for line in make_lines(30, 2):
        assert tok.decode(tok.encode(line)) == line
        assert tok.decode([CLS_ID, *tok.encode(line), SEP_ID, PAD_ID]) == line


def test_word_start_table_groups_pieces_into_the_original_words(tok):
    table = tok.word_start_table()
    assert table.shape == (tok.vocab_size,) and table.dtype == bool
    assert not table[[PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID]].any()
    for ids in tok.placeholder_ids.values():
        assert table[list(ids)].all()
    for line in make_lines(100, 4):
        ids = np.array(tok.encode(line))
        starts = np.flatnonzero(table[ids])
        words = line.split()
        assert starts.size == len(words) and starts[0] == 0
        groups = np.split(ids, starts[1:])
        assert [tok.decode(g.tolist()) for g in groups] == words


def test_build_input_layout():
    ids, types = build_input([10, 11], [20, 21, 22])
    assert ids.tolist() == [CLS_ID, 10, 11, SEP_ID, 20, 21, 22, SEP_ID]
    assert types.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    ids, types = build_input(np.array([7], np.uint16), [])
    assert ids.tolist() == [CLS_ID, 7, SEP_ID] and types.tolist() == [0, 0, 0]
    assert ids.dtype == np.int64
    ids, _ = build_input([5, 6])
    assert ids.tolist() == [CLS_ID, 5, 6, SEP_ID]


def test_pickles_for_dataloader_workers(tok):
    clone = pickle.loads(pickle.dumps(tok))
    line = make_lines(1, 5)[0]
    assert clone.encode(line) == tok.encode(line) and clone.sha256 == tok.sha256
