"""SentencePiece training: fixed special ids, single-piece placeholders, reproducibility, clear errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece as spm

from twilbert.config import ConfigError, from_dict
from twilbert.text.vocab import VocabConfig, reservoir_sample, train_vocab
from twilbert.tokens import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDERS = ["user", "url", "hashtag"]
SYLLABLES = "ca sa pe lo mi tu ra no que bien ja je ma ña ción des pa ri to lu go ve fi cho lla gue rá té so ta ba en al es".split()


def make_lines(n: int = 400, seed: int = 0) -> list[str]:
    """Normalised-looking Spanish-ish lines (lower case, accents kept) with placeholders."""
    rng = np.random.default_rng(seed)
    lexicon = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(400)]
    return [" ".join(rng.choice(lexicon + PLACEHOLDERS, rng.integers(3, 15))) for _ in range(n)]


def _train(tmp: Path, glued=(), lines=None, **kw) -> Path:
    cfg = VocabConfig(**{"vocab_size": 300, "input_sentence_size": 0, **kw})
    return train_vocab(make_lines() if lines is None else lines, cfg, tmp / "spm", PLACEHOLDERS, glued)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_special_tokens_have_the_fixed_ids(tmp_path, model_type):
    sp = spm.SentencePieceProcessor(model_file=str(_train(tmp_path, model_type=model_type)))
    assert [sp.id_to_piece(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, -1, -1)
    assert [sp.piece_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]")] == [CLS_ID, SEP_ID, MASK_ID]
    assert all(sp.is_control(i) for i in (CLS_ID, SEP_ID, MASK_ID))
    assert sp.get_piece_size() == 300
    # Control symbols are never produced from text: a tweet saying "[MASK]" stays text.
    ids = sp.encode("hola [MASK] [CLS] [SEP] [PAD]")
    assert not set(ids) & {PAD_ID, CLS_ID, SEP_ID, MASK_ID}


def test_placeholders_are_single_pieces_in_every_context(tmp_path):
    sp = spm.SentencePieceProcessor(model_file=str(_train(tmp_path, glued=["user"])))
    assert sp.encode("user url hola", out_type=str)[:2] == ["\u2581user", "\u2581url"]
    assert sp.encode("ja hashtag", out_type=str)[-1] == "\u2581hashtag"
    # After punctuation the bare form of a glued placeholder is used, still one piece.
    assert "user" in sp.encode("(user)", out_type=str)
    # Whitespace-separated placeholders never fall apart into characters.
    for p in PLACEHOLDERS:
        assert len(sp.encode(p)) == 1


def test_placeholders_do_not_split_words_that_contain_them(tmp_path):
    """Without a bare ``url`` piece (placeholders our normaliser always spaces), ``burla`` keeps its
    letters together; with one (the original's glued URL style) SentencePiece cuts it around ``url``."""
    lines = make_lines() + ["se burla de user", "burlas y burlan url", "no te burles"] * 20
    spaced = spm.SentencePieceProcessor(model_file=str(_train(tmp_path / "a", lines=lines)))
    glued = spm.SentencePieceProcessor(model_file=str(_train(tmp_path / "b", lines=lines, glued=["url"])))
    assert "url" not in spaced.encode("burla", out_type=str)
    assert spaced.piece_to_id("url") == UNK_ID  # no such piece
    assert "url" in glued.encode("burla", out_type=str)
    assert spaced.encode("visita url", out_type=str)[-1] == glued.encode("visita url", out_type=str)[-1] == "\u2581url"
    summary = json.loads((tmp_path / "a" / "vocab.json").read_text())
    assert summary["placeholders"]["url"] == [spaced.piece_to_id("\u2581url")]
    assert summary["stats"]["placeholders_single_piece"] == 1.0


def test_glued_placeholders_must_be_placeholders(tmp_path):
    with pytest.raises(ConfigError, match="glued placeholders \\['emoji'\\]"):
        _train(tmp_path, glued=["emoji"])


def test_text_round_trips_exactly_with_identity_normalisation(tmp_path):
    sp = spm.SentencePieceProcessor(model_file=str(_train(tmp_path)))
    for line in make_lines(50, seed=1):
        assert sp.decode(sp.encode(line)) == line
    # No NFKC: a full-width letter is not rewritten to ASCII (the normaliser decides such things).
    assert sp.normalize("\uff41") != sp.normalize("a")


def test_outputs_and_summary(tmp_path):
    model = _train(tmp_path)
    summary = json.loads((tmp_path / "vocab.json").read_text())
    assert summary["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert summary["specials"] == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert summary["vocab_size"] == 300 and summary["texts_used"] == summary["texts_seen"] == 400
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert summary["placeholders"]["url"] == [sp.piece_to_id("\u2581url")]
    vocab_lines = (tmp_path / "spm.vocab").read_text(encoding="utf-8").splitlines()
    assert [ln.split("\t")[0] for ln in vocab_lines] == [sp.id_to_piece(i) for i in range(300)]


def test_same_seed_same_model_bytes_even_across_processes_and_paths(tmp_path):
    kw = dict(input_sentence_size=250, vocab_size=200)  # sampling on: the part SentencePiece itself gets wrong
    a = _train(tmp_path / "a", **kw).read_bytes()
    b = _train(tmp_path / "b", **kw).read_bytes()
    assert a == b
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from tests.text.test_vocab import _train; _train(Path(sys.argv[2]), input_sentence_size=250, vocab_size=200)"
    )
    subprocess.run([sys.executable, "-c", code, str(REPO), str(tmp_path / "c")], check=True, cwd=REPO)
    assert (tmp_path / "c" / "spm.model").read_bytes() == a
    other = _train(tmp_path / "d", **kw, seed=7).read_bytes()
    assert other != a  # a different sample of 250 of the 400 lines


def test_reservoir_sample_is_uniform_and_deterministic():
    items = [str(i) for i in range(100)]
    s1, seen = reservoir_sample(items, 10, seed=3, batch=7)
    assert seen == 100 and len(s1) == 10 and len(set(s1)) == 10
    assert reservoir_sample(items, 10, seed=3, batch=7)[0] == s1
    assert reservoir_sample(items, 200, seed=3)[0] == items  # k >= n keeps everything, in order
    counts = np.zeros(100)
    trials = 2000
    for seed in range(trials):
        counts[[int(x) for x in reservoir_sample(items, 10, seed=seed, batch=16)[0]]] += 1
    # Each item is kept with probability k/n = 0.1: binomial(2000, 0.1) has sd ~13.4; allow 5 sd.
    assert np.abs(counts - 200).max() < 67
    # The first k items (fill phase) and the last ones (replacement phase) are not favoured.
    assert abs(counts[:10].mean() - 200) < 25 and abs(counts[-10:].mean() - 200) < 25


def test_parquet_inputs_stream_all_text_columns_and_skip_missing_files(tmp_path):
    lines = make_lines(200)
    pairs = pa.table(
        {
            "orig_id": [str(i) for i in range(100)],
            "orig_text": lines[:100],
            "reply_id": [str(i + 1000) for i in range(100)],
            "reply_text": lines[100:],
        }
    )
    pq.write_table(pairs, tmp_path / "pairs.parquet", row_group_size=30)
    cfg = VocabConfig(vocab_size=200, input_sentence_size=0)
    train_vocab([tmp_path / "pairs.parquet", tmp_path / "absent.parquet"], cfg, tmp_path / "v" / "spm", PLACEHOLDERS)
    summary = json.loads((tmp_path / "v" / "vocab.json").read_text())
    assert summary["texts_seen"] == 200


def test_parquet_texts_memory_does_not_grow_with_the_file(tmp_path):
    """Arrow memory while streaming texts stays at about one row group, whatever the file size.

    Regression: pyarrow's ParquetFile defaults to pre_buffer=True, whose read cache keeps every row
    group read so far: the vocab stage's RSS grew with the normalised corpus (+1 GB from 1M to 10M
    pairs) although it trains on a fixed-size sample."""
    from twilbert.text.vocab import parquet_texts

    lines = make_lines(2000)
    peaks, sizes = {}, {}
    for name, reps in (("small", 5), ("large", 20)):
        texts = [f"{t} {i}" for i in range(reps) for t in lines]  # distinct, so nothing compresses away
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"text": texts}), path, row_group_size=500)
        sizes[name] = path.stat().st_size
        peak = n = 0
        for _ in parquet_texts([path], batch_rows=500):
            n += 1
            peak = max(peak, pa.total_allocated_bytes())
        assert n == len(texts)
        peaks[name] = peak
    assert peaks["large"] - peaks["small"] < sizes["large"] / 10, (peaks, sizes)


def test_the_sample_is_released_to_sentencepiece_in_order(tmp_path, monkeypatch):
    """train_vocab hands the sample over item by item, dropping each from the list as it goes (so
    Python's copy does not live on during training); the model equals training on the list itself."""
    import twilbert.text.vocab as vocab_mod

    cfg = VocabConfig(vocab_size=200, input_sentence_size=250)
    sample, _ = reservoir_sample(make_lines(), 250, cfg.seed)
    direct = vocab_mod._train_spm(list(sample), cfg, vocab_mod.placeholder_pieces(PLACEHOLDERS))
    seen = []
    real = vocab_mod._train_spm

    def spy(sentences, cfg, pieces):
        def watch():
            for t in sentences:
                seen.append(t)
                yield t

        return real(watch(), cfg, pieces)

    monkeypatch.setattr(vocab_mod, "_train_spm", spy)
    model = train_vocab(make_lines(), cfg, tmp_path / "spm", PLACEHOLDERS)
    assert seen == sample
    assert model.read_bytes() == direct
    drained = ["a", "b", "c"]
    assert list(vocab_mod._drain(drained)) == ["a", "b", "c"] and drained == []


def test_vocab_too_large_for_the_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"vocab\.vocab_size: 50000 is more than this corpus supports \(at most \d+"):
        train_vocab(make_lines(50), VocabConfig(vocab_size=50_000, input_sentence_size=0), tmp_path / "spm", PLACEHOLDERS)
    with pytest.raises(ConfigError, match="vocab.vocab_size: 12 is too small"):
        train_vocab(make_lines(50), VocabConfig(vocab_size=12, input_sentence_size=0), tmp_path / "spm", [])


def test_bad_inputs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="the corpus is empty"):
        train_vocab(["", ""], VocabConfig(vocab_size=100), tmp_path / "spm", [])
    with pytest.raises(ConfigError, match="placeholder"):
        train_vocab(make_lines(10), VocabConfig(vocab_size=100), tmp_path / "spm", ["two words"])
    with pytest.raises(ConfigError, match="must exceed"):
        train_vocab(make_lines(10), VocabConfig(vocab_size=8), tmp_path / "spm", ["a", "b"], ["b"])  # 5 specials + 3 pieces


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"vocab\.vocab_size"):
        from_dict(VocabConfig, {"vocab_size": 3}, "vocab")
    with pytest.raises(ConfigError, match=r"vocab\.character_coverage"):
        from_dict(VocabConfig, {"character_coverage": 1.5}, "vocab")
    with pytest.raises(ConfigError, match=r"vocab\.model_type"):
        from_dict(VocabConfig, {"model_type": "wordpiece"}, "vocab")
    with pytest.raises(ConfigError, match="did you mean 'vocab_size'"):
        from_dict(VocabConfig, {"vocab_sise": 100}, "vocab")


def test_summary_reports_coverage_figures(tmp_path):
    _train(tmp_path, glued=["url"])
    summary = json.loads((tmp_path / "vocab.json").read_text())
    s = summary["stats"]
    # One "▁p" per placeholder, plus the bare "url" of the one glued placeholder.
    assert summary["learned_pieces"] == 300 - 5 - len(PLACEHOLDERS) - 1 and summary["user_defined_pieces"] == 4
    assert s["probe_texts"] == 400
    assert s["placeholders_single_piece"] == 1.0 and s["placeholder_single_piece"] == dict.fromkeys(PLACEHOLDERS, True)
    lines = make_lines()
    assert s["placeholder_occurrences"] == sum(w in PLACEHOLDERS for t in lines for w in t.split()) > 0
    assert s["placeholder_coverage"] == 1.0
    assert 0.0 <= s["unk_rate"] < 0.01 and s["pieces_per_text"] >= s["pieces_per_word"] >= 1.0
    # Deterministic, so vocab.json (a DVC output) does not change from run to run.
    _train(tmp_path / "again", glued=["url"])
    assert json.loads((tmp_path / "again" / "vocab.json").read_text()) == summary


def test_unknown_characters_show_in_the_unk_rate(tmp_path):
    lines = make_lines() + ["que ☃ bien"]  # one rare character: dropped by character_coverage
    train_vocab(lines, VocabConfig(vocab_size=300, input_sentence_size=0, character_coverage=0.99), tmp_path / "spm", PLACEHOLDERS)
    s = json.loads((tmp_path / "vocab.json").read_text())["stats"]
    assert s["unk_rate"] > 0


def test_vocab_stage_writes_and_logs_metrics(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from pipeline.cli import app

    norm = tmp_path / "normalized"
    norm.mkdir()
    lines = make_lines()
    pq.write_table(pa.table({"id": [str(i) for i in range(len(lines))], "text": lines}), norm / "tweets.parquet")
    (tmp_path / "t.tsv").write_text("ID\tTEXT\n")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"tweets": ["t.tsv"]}, "vocab": {"vocab_size": 300}}))
    monkeypatch.setenv("TWILBERT_TRACKING", "off")
    monkeypatch.chdir(tmp_path)
    logged = {}
    import pipeline.tracking as tracking

    monkeypatch.setattr(tracking.Tracker, "log_metrics", lambda self, m, step=None: logged.update(m))
    stats_path = tmp_path / "reports" / "vocab" / "stats.json"
    args = ["vocab", "--params", str(params), "--normalized-dir", str(norm), "--out-dir", str(tmp_path / "v"), "--stats-path", str(stats_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads(stats_path.read_text())
    assert stats == {k: v for k, v in logged.items() if k != "train_seconds"}  # the wall time: MLflow and logs/timing.json only
    assert stats["vocab_size"] == 300 and stats["texts_used"] == 400 and stats["placeholders_single_piece"] == 1.0
    assert logged["train_seconds"] > 0 and all(isinstance(v, (int, float)) for v in logged.values())
    assert "train_seconds" not in stats and json.loads((tmp_path / "logs" / "timing.json").read_text())["vocab"]["train_seconds"] > 0
    assert "train_seconds" not in (tmp_path / "v" / "vocab.json").read_text()
