"""Pair shards: split invariants, negatives, truncation, rejects, reconciliation, determinism.

Shards are read back here with plain pyarrow (not ``twilbert.data.shards``), so these tests check the
files themselves; the reader has its own tests.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twilbert.config import ConfigError, from_dict
from twilbert.data.pairs import PairsConfig, PairsError, build_pair_shards
from twilbert.data.shard_format import shard_schema
from twilbert.data.shards import ShardError, verify_manifest
from twilbert.text.tokenizer import Tokenizer
from twilbert.text.vocab import VocabConfig, train_vocab

MAX_LEN = 16
SPLITS = ("train", "valid", "test")
SYLLABLES = "ca sa pe lo mi tu ra no que bien ja je ma ña ción des pa ri to lu go ve fi cho lla gue rá té so ta ba en al es".split()
N_NULL, N_EMPTY_ORIG, N_EMPTY_REPLY, N_IDENTICAL = 3, 2, 2, 2
N_TWEETS, N_TWEETS_EMPTY, N_TWEETS_NULL = 60, 2, 1


def _lines(rng, n):
    lexicon = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(300)]
    return [" ".join(rng.choice(lexicon + ["user", "url"], rng.integers(2, 14))) for _ in range(n)]


def make_pairs(seed: int = 0) -> tuple[pa.Table, int]:
    """~250 good pairs (origs with 1-3 replies, a few replies shared between origs) + known bad rows."""
    rng = np.random.default_rng(seed)
    texts = iter(_lines(rng, 2000))
    rows = []
    for k in range(120):
        orig = next(texts)
        for r in range(int(rng.integers(1, 4))):
            rows.append((f"o{k}", orig, f"r{k}-{r}", next(texts)))
    for k in range(5):  # the same reply text answers five different tweets
        rows.append((f"s{k}", next(texts), f"sr{k}", "ja je"))
    n_good = len(rows)
    bad = (
        [(None, "hola", "x1", "que tal"), ("n2", None, "x2", "bien"), ("n3", "hola", None, "bien")]
        + [(f"e{k}", "", f"ex{k}", "algo ja") for k in range(N_EMPTY_ORIG)]
        + [(f"f{k}", "otro ja", f"fx{k}", " ") for k in range(N_EMPTY_REPLY)]
        + [(f"i{k}", "lo mismo ja", f"ix{k}", "lo mismo ja") for k in range(N_IDENTICAL)]
    )
    rows += bad
    order = rng.permutation(len(rows))  # bad rows spread over chunks
    rows = [rows[i] for i in order]
    cols = list(zip(*rows))
    names = ("orig_id", "orig_text", "reply_id", "reply_text")
    return pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, cols)}), n_good


def make_tweets(seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    texts = _lines(rng, N_TWEETS) + [""] * N_TWEETS_EMPTY + [None] * N_TWEETS_NULL
    return pa.table({"id": [f"t{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    pairs, n_good = make_pairs()
    pq.write_table(pairs, root / "pairs.parquet", row_group_size=37)
    pq.write_table(make_tweets(), root / "tweets.parquet")
    texts = [t for c in ("orig_text", "reply_text") for t in pairs[c].to_pylist() if t] + make_tweets()["text"].to_pylist()[:N_TWEETS]
    model = train_vocab(texts, VocabConfig(vocab_size=300, input_sentence_size=0), root / "vocab" / "spm", ["user", "url"])
    return {"root": root, "tok": Tokenizer.from_file(model), "pairs": pairs, "n_good": n_good}


def build(env, out: Path, *, tweets=True, max_len=MAX_LEN, **cfg) -> dict:
    cfg = PairsConfig(**{"valid_fraction": 0.2, "test_fraction": 0.2, "rows_per_shard": 64, "chunk_rows": 100, **cfg})
    tw = env["root"] / "tweets.parquet" if tweets else None
    return build_pair_shards(env["root"] / "pairs.parquet", tw, env["tok"], cfg, max_len, out, progress=False)


def read_split(out: Path, split: str) -> list[dict]:
    rows = []
    for path in sorted((out / split).glob("shard-*.arrow")):
        rows += pa.ipc.open_file(str(path)).read_all().to_pylist()
    return rows


def good_pairs(env) -> list[tuple[str, str, str, str]]:
    """The input pairs that must survive, as (orig_id, orig_text, reply_id, reply_text)."""
    out = []
    for o, ot, r, rt in zip(*(env["pairs"][c].to_pylist() for c in ("orig_id", "orig_text", "reply_id", "reply_text"))):
        if None in (o, ot, r, rt) or not ot.strip() or not rt.strip() or ot == rt:
            continue
        out.append((o, ot, r, rt))
    return out


def test_counts_reconcile_and_rejects_are_counted_by_reason(env, tmp_path):
    m = build(env, tmp_path)
    p, t = m["input"]["pairs"], m["input"]["tweets"]
    assert p["rows_in"] == env["pairs"].num_rows and p["kept"] == env["n_good"] == len(good_pairs(env))
    assert p["rejected"] == {
        "null_field": N_NULL, "empty_orig": N_EMPTY_ORIG, "empty_reply": N_EMPTY_REPLY, "identical_segments": N_IDENTICAL
    }
    assert t == {
        "rows_in": N_TWEETS + N_TWEETS_EMPTY + N_TWEETS_NULL,
        "kept": N_TWEETS,
        "rejected": {"null_field": N_TWEETS_NULL, "empty_text": N_TWEETS_EMPTY},
    }
    assert m["negatives"] == {"swap": env["n_good"], "random": 0, "random_unavailable": 0}
    total = 0
    for split in SPLITS:
        rows = read_split(tmp_path, split)
        labels = Counter(r["label"] for r in rows)
        assert m["rows"][split] == {"total": len(rows), "positive": labels[1], "negative": labels[0], "mlm_only": labels[-1]}
        assert sum(m["length_histogram"][split]) == len(rows)
        assert Counter(r["length"] for r in rows) == {i: c for i, c in enumerate(m["length_histogram"][split]) if c}
        total += len(rows)
    assert m["rows"]["total"] == total == 2 * env["n_good"] + N_TWEETS
    assert m["tokenizer_sha256"] == env["tok"].sha256 and m["max_len"] == MAX_LEN and m["token_dtype"] == "uint16"
    assert json.loads((tmp_path / "manifest.json").read_text()) == m
    verify_manifest(tmp_path, tokenizer_sha256=env["tok"].sha256)


def test_swap_rows_round_trip_and_are_exactly_balanced(env, tmp_path):
    build(env, tmp_path, tweets=False)
    tok = env["tok"]
    expected = {(tuple(tok.encode(ot)[:MAX_LEN]), tuple(tok.encode(rt)[:MAX_LEN])) for _, ot, _, rt in good_pairs(env)}
    seen = set()
    for split in SPLITS:
        rows = read_split(tmp_path, split)
        pos = {(tuple(r["a"]), tuple(r["b"]), r["pair_id"]) for r in rows if r["label"] == 1}
        neg = {(tuple(r["b"]), tuple(r["a"]), r["pair_id"]) for r in rows if r["label"] == 0}
        assert pos == neg and len(pos) * 2 == len(rows)  # every negative is its positive, swapped
        seen |= {(a, b) for a, b, _ in pos}
        for r in rows:
            assert r["length"] == len(r["a"]) + len(r["b"]) + 3
    assert seen == expected
    # Texts that fit come back exactly.
    short = [(ot, rt) for _, ot, _, rt in good_pairs(env) if len(tok.encode(ot)) <= MAX_LEN and len(tok.encode(rt)) <= MAX_LEN]
    assert len(short) > 20
    decoded = {(tok.decode(a), tok.decode(b)) for a, b in seen}
    assert set(short) <= decoded


def test_truncation_keeps_the_first_max_len_tokens(env, tmp_path):
    m = build(env, tmp_path, tweets=False, max_len=5)
    tok = env["tok"]
    long = [(ot, rt) for _, ot, _, rt in good_pairs(env) if len(tok.encode(ot)) > 5]
    assert long
    rows = [r for s in SPLITS for r in read_split(tmp_path, s) if r["label"] == 1]
    assert max(len(r["a"]) for r in rows) == 5 and max(len(r["b"]) for r in rows) == 5
    got = {tuple(r["a"]) for r in rows}
    assert all(tuple(tok.encode(ot)[:5]) in got for ot, _ in long)
    n_cut = sum(len(tok.encode(t)) > 5 for row in env["pairs"].to_pylist() for t in (row["orig_text"], row["reply_text"]) if t)
    assert m["truncated_segments"] == n_cut


def _pair_split_and_index(env, out: Path):
    """{pair_id: (split, input row index)} and the rows of each split, from the positives."""
    tok = env["tok"]
    index = {}
    for i, row in enumerate(env["pairs"].to_pylist()):
        if None not in row.values():
            index[(tuple(tok.encode(row["orig_text"])[:MAX_LEN]), tuple(tok.encode(row["reply_text"])[:MAX_LEN]))] = i
    where, rows_by_split = {}, {}
    for split in SPLITS:
        rows_by_split[split] = read_split(out, split)
        for r in rows_by_split[split]:
            if r["label"] == 1:
                where[r["pair_id"]] = (split, index[(tuple(r["a"]), tuple(r["b"]))])
    return where, rows_by_split


def test_all_rows_of_a_pair_and_all_replies_of_a_tweet_share_a_split(env, tmp_path):
    build(env, tmp_path, tweets=False, negatives="both")
    where, rows_by_split = _pair_split_and_index(env, tmp_path)
    for split, rows in rows_by_split.items():
        for r in rows:
            assert where[r["pair_id"]][0] == split  # negatives sit with their positive
    orig_ids = env["pairs"]["orig_id"].to_pylist()
    split_of_orig = defaultdict(set)
    for split, i in where.values():
        split_of_orig[orig_ids[i]].add(split)
    assert all(len(s) == 1 for s in split_of_orig.values())
    assert sum(len(v) > 0 for v in rows_by_split.values()) == 3


def test_split_sizes_follow_the_fractions(env, tmp_path):
    m = build(env, tmp_path, tweets=True, valid_fraction=0.1, test_fraction=0.3)
    where, _ = _pair_split_and_index(env, tmp_path)
    orig_ids = env["pairs"]["orig_id"].to_pylist()
    origs_in = Counter(split for split in dict((orig_ids[i], s) for s, i in where.values()).values())
    mlm_in = {s: m["rows"][s]["mlm_only"] for s in SPLITS}
    assert sum(origs_in.values()) == 125 and sum(mlm_in.values()) == N_TWEETS
    # Split units (original tweets, single tweets) are i.i.d. under the hash: binomial within 4 sd.
    for s, p in (("valid", 0.1), ("test", 0.3), ("train", 0.6)):
        for got, n in ((origs_in[s], 125), (mlm_in[s], N_TWEETS)):
            assert abs(got - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1, (s, got, n)


def test_random_negatives_are_other_replies_from_the_same_split_and_chunk(env, tmp_path):
    chunk = 100
    m = build(env, tmp_path, tweets=False, negatives="random", chunk_rows=chunk)
    tok = env["tok"]
    inputs = env["pairs"].to_pylist()
    reply_rows = defaultdict(set)  # reply tokens -> input rows carrying that reply
    for i, row in enumerate(inputs):
        if None not in row.values():
            reply_rows[tuple(tok.encode(row["reply_text"])[:MAX_LEN])].add(i)
    where, rows_by_split = _pair_split_and_index(env, tmp_path)
    split_of_row = {i: s for s, i in where.values()}
    n_neg = 0
    for split, rows in rows_by_split.items():
        for r in rows:
            if r["label"] != 0:
                continue
            n_neg += 1
            _, i = where[r["pair_id"]]
            me = inputs[i]
            assert tuple(r["a"]) == tuple(tok.encode(me["orig_text"])[:MAX_LEN])  # the tweet stays first
            b = tuple(r["b"])
            assert b != tuple(tok.encode(me["reply_text"])[:MAX_LEN])  # never the true reply's tokens
            assert b != tuple(r["a"])
            donors = [j for j in reply_rows[b] if split_of_row.get(j) == split and j // chunk == i // chunk]
            assert donors, "the negative reply comes from a kept pair of the same split and chunk"
            assert any(inputs[j]["orig_id"] != me["orig_id"] for j in donors)  # not another reply to this tweet
        labels = Counter(r["label"] for r in rows)
        assert labels[0] == labels[1]  # no negative was unavailable here, so exactly balanced
    assert n_neg == m["negatives"]["random"] and m["negatives"]["random_unavailable"] == 0


def test_both_gives_one_third_positives(env, tmp_path):
    m = build(env, tmp_path, tweets=False, negatives="both")
    assert m["negatives"]["swap"] == m["negatives"]["random"] == env["n_good"]
    for s in SPLITS:
        assert m["rows"][s]["negative"] == 2 * m["rows"][s]["positive"]


def test_random_negative_unavailable_is_counted_not_invented(env, tmp_path):
    # chunk_rows=1: every chunk holds one pair, so no other reply exists to draw from.
    m = build(env, tmp_path, tweets=False, negatives="random", chunk_rows=1)
    assert m["negatives"] == {"swap": 0, "random": 0, "random_unavailable": env["n_good"]}
    assert m["rows"]["total"] == env["n_good"]


def test_mlm_only_rows(env, tmp_path):
    build(env, tmp_path)
    tok = env["tok"]
    tweets = {t for t in make_tweets()["text"].to_pylist() if t}
    mlm = [r for s in SPLITS for r in read_split(tmp_path, s) if r["label"] == -1]
    assert len(mlm) == N_TWEETS
    for r in mlm:
        assert r["b"] == [] and r["length"] == len(r["a"]) + 2 and 0 < len(r["a"]) <= MAX_LEN
    full = {tok.decode(r["a"]) for r in mlm if len(r["a"]) < MAX_LEN}
    assert full and full <= tweets


def test_rows_per_shard_and_stale_shards(env, tmp_path):
    m = build(env, tmp_path, rows_per_shard=10)
    for split in SPLITS:
        shards = m["shards"][split]
        n = m["rows"][split]["total"]
        assert len(shards) == math.ceil(n / 10)
        assert [s["rows"] for s in shards] == [10] * (n // 10) + ([n % 10] if n % 10 else [])
        assert [s["file"] for s in shards] == [f"{split}/shard-{i:05d}.arrow" for i in range(len(shards))]
    build(env, tmp_path, rows_per_shard=1000)  # fewer, larger shards: the old ones must be gone
    for split in SPLITS:
        assert len(list((tmp_path / split).glob("shard-*.arrow"))) == 1
    verify_manifest(tmp_path)


def test_checksums_catch_tampering(env, tmp_path):
    m = build(env, tmp_path)
    shard = tmp_path / m["shards"]["train"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="sha256 mismatch"):
        verify_manifest(tmp_path)


@pytest.mark.parametrize("negatives", ["swap", "both"])
def test_deterministic_byte_identical_outputs(env, tmp_path, negatives):
    m1 = build(env, tmp_path / "a", negatives=negatives)
    m2 = build(env, tmp_path / "b", negatives=negatives)
    assert m1 == m2
    for split in SPLITS:
        for sh in m1["shards"][split]:
            assert (tmp_path / "a" / sh["file"]).read_bytes() == (tmp_path / "b" / sh["file"]).read_bytes()
    assert build(env, tmp_path / "c", negatives=negatives, seed=99)["shards"] != m1["shards"]


def test_swap_output_does_not_depend_on_chunking_or_row_groups(env, tmp_path):
    m1 = build(env, tmp_path / "a", chunk_rows=7)
    m2 = build(env, tmp_path / "b", chunk_rows=1000)
    assert m1["shards"] == m2["shards"]  # same sha256 for every shard
    # Same rows written with a different parquet row-group layout.
    pq.write_table(env["pairs"], tmp_path / "pairs.parquet", row_group_size=5)
    cfg = PairsConfig(valid_fraction=0.2, test_fraction=0.2, rows_per_shard=64, chunk_rows=100)
    tweets = env["root"] / "tweets.parquet"
    m3 = build_pair_shards(tmp_path / "pairs.parquet", tweets, env["tok"], cfg, MAX_LEN, tmp_path / "c", progress=False)
    assert m3["shards"] == m1["shards"]


def test_bad_inputs_and_config(env, tmp_path):
    cfg = PairsConfig()
    with pytest.raises(PairsError, match="no input"):
        build_pair_shards(None, None, env["tok"], cfg, MAX_LEN, tmp_path, progress=False)
    with pytest.raises(PairsError, match="does not exist"):
        build_pair_shards(tmp_path / "nope.parquet", None, env["tok"], cfg, MAX_LEN, tmp_path, progress=False)
    pq.write_table(pa.table({"orig_id": ["1"], "text": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(PairsError, match="lacks columns"):
        build_pair_shards(tmp_path / "bad.parquet", None, env["tok"], cfg, MAX_LEN, tmp_path, progress=False)
    empty = env["pairs"].slice(0, 0)
    pq.write_table(empty, tmp_path / "empty.parquet")
    with pytest.raises(PairsError, match="no row survived"):
        build_pair_shards(tmp_path / "empty.parquet", None, env["tok"], cfg, MAX_LEN, tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"pairs\.valid_fraction"):
        from_dict(PairsConfig, {"valid_fraction": 0.6, "test_fraction": 0.5}, "pairs")
    with pytest.raises(ConfigError, match=r"pairs\.negatives"):
        from_dict(PairsConfig, {"negatives": "hard"}, "pairs")
    assert shard_schema(70_000).field("a").type == pa.list_(pa.uint32())
    assert shard_schema(65_536).field("b").type == pa.list_(pa.uint16())


def test_split_by_pair_id_keeps_each_pair_together(env, tmp_path):
    build(env, tmp_path, tweets=False, negatives="both", split_by="pair_id")
    where, rows_by_split = _pair_split_and_index(env, tmp_path)
    assert len(where) == env["n_good"]
    for split, rows in rows_by_split.items():
        assert all(where[r["pair_id"]][0] == split for r in rows)


def test_a_single_tweet_lands_in_the_split_of_the_pairs_it_starts(env, tmp_path):
    """Same keyed hash for tweet ids and original-tweet ids: a tweet's text never straddles splits."""
    build(env, tmp_path / "p", tweets=False)
    where, _ = _pair_split_and_index(env, tmp_path / "p")
    inputs = env["pairs"].to_pylist()
    split_of_orig = {inputs[i]["orig_id"]: s for s, i in where.values()}
    ids = sorted(split_of_orig)
    text_of = {row["orig_id"]: row["orig_text"] for row in inputs if row["orig_id"] in split_of_orig}
    pq.write_table(pa.table({"id": ids, "text": [text_of[i] for i in ids]}), tmp_path / "tw.parquet")
    cfg = PairsConfig(valid_fraction=0.2, test_fraction=0.2)
    build_pair_shards(None, tmp_path / "tw.parquet", env["tok"], cfg, MAX_LEN, tmp_path / "t", progress=False)
    id_of = {tuple(env["tok"].encode(text_of[i])[:MAX_LEN]): i for i in ids}
    assert len(id_of) == len(ids)
    for split in SPLITS:
        for r in read_split(tmp_path / "t", split):
            assert split_of_orig[id_of[tuple(r["a"])]] == split


def test_tokenizer_threads_change_nothing_but_speed(env, tmp_path):
    """impl.tokenizer_threads is an implementation knob: shards are byte-identical for any value."""
    m1 = build_pair_shards(env["root"] / "pairs.parquet", None, env["tok"], PairsConfig(negatives="both"), MAX_LEN, tmp_path / "a", progress=False, num_threads=1)
    m3 = build_pair_shards(env["root"] / "pairs.parquet", None, env["tok"], PairsConfig(negatives="both"), MAX_LEN, tmp_path / "b", progress=False, num_threads=3)
    assert m1 == m3


def test_pairs_stage_passes_impl_tokenizer_threads(env, tmp_path, monkeypatch):
    """The stage used to ignore impl.tokenizer_threads (always all cores)."""
    import yaml
    from typer.testing import CliRunner

    import twilbert.data.pairs as pairs_mod
    from pipeline.cli import app

    seen = {}

    def fake_build(*args, **kwargs):
        seen.update(kwargs)
        return {"rows": {"total": 1}}

    monkeypatch.setattr(pairs_mod, "build_pair_shards", fake_build)
    monkeypatch.setenv("TWILBERT_TRACKING", "off")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.tsv").write_text("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"pairs": ["p.tsv"]}, "impl": {"tokenizer_threads": 3}}))
    args = ["pairs", "--params", str(params), "--normalized-dir", str(env["root"]),
            "--vocab-model", str(env["root"] / "vocab" / "spm.model"), "--out-dir", str(tmp_path / "out"),
            "--stats-path", str(tmp_path / "stats.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["num_threads"] == 3


def _corpus_parquet(path: Path, n_pairs: int, seed: int = 7) -> None:
    """``n_pairs`` distinct pairs from the test lexicon, in many small row groups (as the normalize
    stage writes one row group per read chunk)."""
    rng = np.random.default_rng(seed)
    texts = _lines(rng, 4000)
    a, b = rng.integers(0, len(texts), n_pairs), rng.integers(0, len(texts), n_pairs)
    table = pa.table({
        "orig_id": [f"o{i}" for i in range(n_pairs)],
        "orig_text": [f"{texts[i]} {k}" for k, i in enumerate(a)],
        "reply_id": [f"r{i}" for i in range(n_pairs)],
        "reply_text": [texts[i] for i in b],
    })
    pq.write_table(table, path, row_group_size=500)


def test_memory_does_not_grow_with_the_corpus(env, tmp_path, monkeypatch):
    """Arrow memory and buffered rows stay flat from N to 4N input rows.

    Regression: pyarrow's ParquetFile defaults to ``pre_buffer=True``, whose read cache keeps every row
    group read so far until the file is closed: the pairs stage's Arrow memory grew by the size of the
    whole input file (2.5 GB peak RSS at 10M pairs vs 0.9 GB at 1M). And each split's buffer was
    concatenated at every flush, its remainder kept as a view of the concatenation. Measured on Arrow's
    allocator (deterministic, unlike RSS) and on the writers' own high-water mark of buffered rows.
    """
    import twilbert.data.shard_writer as writer_mod

    peaks: dict[str, int] = {}
    writers: list = []
    real_add, real_init = writer_mod.SplitWriter.add, writer_mod.SplitWriter.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        writers.append(self)

    def add(self, rows):
        real_add(self, rows)
        peaks[current] = max(peaks.get(current, 0), pa.total_allocated_bytes())

    monkeypatch.setattr(writer_mod.SplitWriter, "__init__", init)
    monkeypatch.setattr(writer_mod.SplitWriter, "add", add)
    cfg = PairsConfig(valid_fraction=0.2, test_fraction=0.2, rows_per_shard=3000, chunk_rows=2000)
    sizes = {}
    for current, n in (("small", 10_000), ("large", 40_000)):
        src = tmp_path / f"{current}.parquet"
        _corpus_parquet(src, n)
        sizes[current] = src.stat().st_size
        m = build_pair_shards(src, None, env["tok"], cfg, MAX_LEN, tmp_path / current, progress=False)
        assert m["input"]["pairs"]["rows_in"] == n
    growth = peaks["large"] - peaks["small"]
    # The old reader held ~the whole file: growth ~ 3/4 of the large file. Allow 1/10 of it.
    assert growth < sizes["large"] / 10, (peaks, sizes)
    assert len(writers) == 6
    for w in writers:
        assert 0 < w.max_pending <= cfg.rows_per_shard  # never more than one shard's rows per split
