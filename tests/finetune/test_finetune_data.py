"""Task data: strict reading (errors name file, line, value), labels, input layout, batching, and the
per-task ``finetuning`` overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from twilbert.config import ConfigError, from_dict
from twilbert.finetune.config import FinetuningConfig, TaskConfig, effective_finetuning
from twilbert.finetune.data import TaskDataError, load_task, read_split
from twilbert.finetune.inputs import bucketed_batches, collate, encode_texts, eval_batches
from twilbert.text.normalize import NormalizeRules, normalize_texts, placeholder_tokens
from twilbert.text.tokenizer import Tokenizer, build_input
from twilbert.text.vocab import VocabConfig, train_vocab
from twilbert.tokens import PAD_ID

SYLLABLES = "ca sa pe lo mi tu ra no que bien ja je ma ña ción des pa ri to lu go ve fi cho lla gue rá té so ta ba en al es".split()


def make_lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lexicon = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(300)]
    return [" ".join(rng.choice(lexicon, rng.integers(3, 15))) for _ in range(n)]


def make_tokenizer(tmp: Path) -> Path:
    """A small SentencePiece model with the project's specials and placeholders."""
    rules = NormalizeRules()
    return train_vocab(make_lines(300, 0), VocabConfig(vocab_size=150, input_sentence_size=0), tmp / "spm", placeholder_tokens(rules))


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("vocab"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def task(**kw) -> TaskConfig:
    base = dict(train_file="train.tsv", dev_file="dev.tsv", test_file="test.tsv", categories={"N": 0, "NEU": 1, "P": 2})
    return TaskConfig(**{**base, **kw})


GOOD = "ID\tTEXT\tCLASS\n1\thola que tal\tP\n2\t\"empieza con comillas\tN\n3\tnada\tNEU\n"


def test_reads_ids_texts_labels_without_quoting(tmp_path):
    s = read_split(write(tmp_path / "a.tsv", GOOD), task())
    assert s.ids == ["1", "2", "3"]
    assert s.texts == ["hola que tal", '"empieza con comillas', "nada"]
    assert s.aux_texts is None
    assert s.labels.tolist() == [2, 0, 1]


def test_unknown_label_names_file_line_value(tmp_path):
    p = write(tmp_path / "train.tsv", "ID\tTEXT\tCLASS\n1\thola\tP\n2\tadios\tNEG\n")
    with pytest.raises(TaskDataError) as e:
        read_split(p, task())
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "'NEG'" in msg
    assert isinstance(e.value, ConfigError)


def test_missing_column_lists_available(tmp_path):
    p = write(tmp_path / "train.tsv", "ID\tTWEET\tCLASS\n1\thola\tP\n")
    with pytest.raises(TaskDataError, match=r"no column 'TEXT' \(text_header\); available columns: \['ID', 'TWEET', 'CLASS'\]"):
        read_split(p, task())
    with pytest.raises(TaskDataError, match=r"no column 'TARGET' \(aux_header\)"):
        read_split(write(tmp_path / "b.tsv", GOOD), task(aux_header="TARGET"))


def test_empty_split_and_empty_file(tmp_path):
    p = write(tmp_path / "dev.tsv", "ID\tTEXT\tCLASS\n")
    with pytest.raises(TaskDataError, match=rf"{p}: empty split"):
        read_split(p, task())
    p = write(tmp_path / "test.tsv", "")
    with pytest.raises(TaskDataError, match=rf"{p}: empty file"):
        read_split(p, task())
    with pytest.raises(TaskDataError, match="no such file"):
        read_split(tmp_path / "absent.tsv", task())


def test_empty_text_names_line(tmp_path):
    p = write(tmp_path / "a.tsv", "ID\tTEXT\tCLASS\n1\thola\tP\n2\t  \tN\n")
    with pytest.raises(TaskDataError, match=r"empty text in column 'TEXT': line 3"):
        read_split(p, task())
    p = write(tmp_path / "b.tsv", "ID\tTEXT\tCLASS\n1\thola\tP\n\n2\tx\tN\n")  # a blank line
    with pytest.raises(TaskDataError, match=r"b\.tsv: line 3 is blank, the header has 3"):
        read_split(p, task())


def test_extra_field_names_line(tmp_path):
    p = write(tmp_path / "a.tsv", "ID\tTEXT\tCLASS\n1\thola\tP\n2\ta\tb\tN\n")
    with pytest.raises(TaskDataError, match=r"line 3 has 4 fields, the header has 3"):
        read_split(p, task())


def test_multi_label_names_and_multi_hot(tmp_path):
    t = task(categories={"anger": 0, "joy": 1, "fear": 2}, type="multi_label")
    s = read_split(write(tmp_path / "a.tsv", "ID\tTEXT\tCLASS\n1\tx\tjoy|fear\n2\ty\t\n3\tz\tanger\n"), t)
    np.testing.assert_array_equal(s.labels, [[0, 1, 1], [0, 0, 0], [1, 0, 0]])
    with pytest.raises(TaskDataError, match=r"line 3: label 'love' not in categories"):
        read_split(write(tmp_path / "b.tsv", "ID\tTEXT\tCLASS\n1\tx\tjoy\n2\ty\tjoy|love\n"), t)
    with pytest.raises(TaskDataError, match=r"line 2: label '' not in categories"):
        read_split(write(tmp_path / "c.tsv", "ID\tTEXT\tCLASS\n1\tx\tjoy||fear\n"), t)
    hot = task(categories={"anger": 0, "joy": 1, "fear": 2}, type="multi_label", multi_label_format="multi_hot")
    s = read_split(write(tmp_path / "d.tsv", "ID\tTEXT\tCLASS\n1\tx\t0|1|1\n2\ty\t1|0|0\n"), hot)
    np.testing.assert_array_equal(s.labels, [[0, 1, 1], [1, 0, 0]])
    with pytest.raises(TaskDataError, match=r"expected 3 '\|'-separated 0/1 values .*line 3: '0\|1'"):
        read_split(write(tmp_path / "e.tsv", "ID\tTEXT\tCLASS\n1\tx\t0|1|1\n2\ty\t0|1\n"), hot)
    with pytest.raises(TaskDataError, match=r"must be 0 or 1: line 2: '0\|2\|1'"):
        read_split(write(tmp_path / "f.tsv", "ID\tTEXT\tCLASS\n1\tx\t0|2|1\n"), hot)


def test_regression_labels_and_parse_errors(tmp_path):
    t = TaskConfig(train_file="a", dev_file="b", test_file="c", type="regression", eval_metric="pearson")
    s = read_split(write(tmp_path / "a.tsv", "ID\tTEXT\tCLASS\n1\tx\t0.25\n2\ty\t-3\n"), t)
    np.testing.assert_allclose(s.labels, [0.25, -3.0])
    p = write(tmp_path / "b.tsv", "ID\tTEXT\tCLASS\n1\tx\t0.25\n2\ty\t0,5\n3\tz\tinf\n")
    with pytest.raises(TaskDataError, match=r"not a finite number: line 3: '0,5'; line 4: 'inf'"):
        read_split(p, t)


def test_load_task_resolves_against_root_and_reads_pairs(tmp_path):
    for split in ("train", "dev", "test"):  # distinct ids: a repeated one would be quarantined
        write(tmp_path / f"{split}.tsv", f"ID\tTEXT\tTARGET\tCLASS\n{split}1\tsi claro\tla propuesta\tP\n")
    splits = load_task(task(aux_header="TARGET"), root=tmp_path)
    assert splits["dev"].aux_texts == ["la propuesta"] and splits["test"].texts == ["si claro"]


def test_encode_layout_matches_build_input(tok_path):
    tok = Tokenizer.from_file(tok_path)
    rules = NormalizeRules()
    a = ["Hola @ana que TAL jajaja https://t.co/x", "capa sa " * 20, "x"]
    b = ["mira #BuenosDias", "lo", "pe " * 30]
    enc = encode_texts(tok, a, b, max_len=8, rules=rules)
    na, nb = normalize_texts(a, rules), normalize_texts(b, rules)
    for i in range(3):
        ids, types = build_input(tok.encode(na[i])[:8], tok.encode(nb[i])[:8])
        got = enc.values[enc.offsets[i] : enc.offsets[i + 1]]
        np.testing.assert_array_equal(got, ids)
        batch = collate(enc, np.array([i]))
        np.testing.assert_array_equal(batch.token_type_ids[0].numpy(), types)
    single = encode_texts(tok, a, None, max_len=8, rules=rules)
    np.testing.assert_array_equal(single.values[single.offsets[1] : single.offsets[2]], build_input(tok.encode(na[1])[:8])[0])
    assert single.lengths.max() == 10


def test_collate_pads_right_with_mask(tok_path):
    tok = Tokenizer.from_file(tok_path)
    enc = encode_texts(tok, ["capa sa lo mi tu", "ja"], ["lo", "pe mi"], max_len=16, rules=None, labels=np.array([2, 0]))
    b = collate(enc, np.array([1, 0]))
    lengths = enc.lengths[[1, 0]]
    assert b.input_ids.shape == (2, lengths.max())
    for r, n in enumerate(lengths):
        assert b.attention_mask[r].sum() == n
        assert torch.all(b.input_ids[r, n:] == PAD_ID) and torch.all(b.token_type_ids[r, n:] == 0)
    assert b.labels.tolist() == [0, 2]


def test_bucketed_batches_cover_all_and_change_per_epoch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=203)
    gen = np.random.default_rng(1234)
    e1 = bucketed_batches(lengths, 16, gen, pool=4)
    e2 = bucketed_batches(lengths, 16, gen, pool=4)
    for batches in (e1, e2):
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(203))
        assert all(len(b) <= 16 for b in batches)
    assert [b.tolist() for b in e1] != [b.tolist() for b in e2]  # a new order each epoch
    # less padding than random batches of the same size
    pad = lambda bs: sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in bs)  # noqa: E731
    perm = np.random.default_rng(0).permutation(203)
    assert pad(e1) < pad([perm[i : i + 16] for i in range(0, 203, 16)])
    # same seed, same batches
    again = bucketed_batches(lengths, 16, np.random.default_rng(1234), pool=4)
    assert [b.tolist() for b in again] == [b.tolist() for b in e1]
    ev = list(eval_batches(lengths, 50))
    assert sorted(np.concatenate(ev).tolist()) == list(range(203))


def test_per_task_finetuning_overrides():
    defaults = FinetuningConfig(lr=1e-4, epochs=3)
    t = task(finetuning={"lr": 3e-5, "collapse_mode": "cls"})
    ft = effective_finetuning(defaults, t, "senti")
    assert (ft.lr, ft.epochs, ft.collapse_mode) == (3e-5, 3, "cls")
    assert effective_finetuning(ft, t, "senti") == ft  # idempotent
    assert effective_finetuning(defaults, task(), "senti") == defaults
    with pytest.raises(ConfigError, match=r"^finetuning\.lrr: unknown key \(did you mean 'lr'\?\)"):
        task(finetuning={"lrr": 1.0})  # from params.yaml the path gets its tasks.<name>. prefix (below)
    with pytest.raises(ConfigError, match=r"^tasks\.senti\.finetuning\.dropout: must be in \[0, 1\)"):
        effective_finetuning(defaults, task(finetuning={"dropout": 1.5}), "senti")
    with pytest.raises(ConfigError, match=r"^tasks\.senti\.finetuning\.warmup_steps: noam needs"):
        effective_finetuning(FinetuningConfig(warmup_steps=0), task(finetuning={"schedule": "noam"}), "senti")
    # unknown keys and wrong types fail already when the task config is loaded
    with pytest.raises(ConfigError, match=r"^tasks\.senti\.finetuning\.epochs: expected int"):
        raw = {"train_file": "a", "dev_file": "b", "test_file": "c", "categories": {"a": 0, "b": 1}, "finetuning": {"epochs": 1.5}}
        from_dict(TaskConfig, raw, "tasks.senti")


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"repeated_ids": "keep"}, r"^tasks\.x\.repeated_ids: expected one of \['drop', 'error'\], got 'keep'"),
        ({"max_chars": 0}, r"^tasks\.x\.max_chars: must be >= 1"),
        ({"delimiter": "¦"}, r"^tasks\.x\.delimiter: must be one single-byte"),  # polars reads single-byte separators only
        ({"delimiter": "\n"}, r"^tasks\.x\.delimiter: must not be a line break"),
    ],
)
def test_task_reading_keys_are_validated_naming_the_key(extra, message):
    base = {"train_file": "a", "dev_file": "b", "test_file": "c", "categories": {"N": 0, "P": 1}}
    with pytest.raises(ConfigError, match=message):
        from_dict(TaskConfig, {**base, **extra}, prefix="tasks.x")
    assert from_dict(TaskConfig, base).repeated_ids == "drop" and from_dict(TaskConfig, base).max_chars == 5000


def test_a_non_tab_delimiter_counts_its_own_fields(tmp_path):
    p = write(tmp_path / "a.csv", "ID;TEXT;CLASS\n1;hola\tcon tab;P\n2;corto\n")  # a tab is whitespace here, not a control char
    with pytest.raises(TaskDataError, match=r"a\.csv: line 3 has 2 fields, the header has 3"):
        read_split(p, task(delimiter=";"))
    write(p, "ID;TEXT;CLASS\n1;hola\tcon tab;P\n")
    assert read_split(p, task(delimiter=";")).texts == ["hola\tcon tab"]
