"""Shard readers: zero-copy opening, row access across shard boundaries, packed batches, verification."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twilbert.data.pairs import PairsConfig, build_pair_shards
from twilbert.data.shards import ShardDataset, ShardError, iter_rows, open_split, verify_manifest
from twilbert.text.tokenizer import Tokenizer, build_input
from twilbert.text.vocab import VocabConfig, train_vocab
from twilbert.tokens import PAD_ID

SYLLABLES = "ca sa pe lo mi tu ra no que bien ja je ma ña ción des pa ri to lu go ve fi cho lla gue rá té so ta ba en al es".split()
SPLITS = ("train", "valid", "test")


def _lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lexicon = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(300)]
    return [" ".join(rng.choice(lexicon + ["user"], rng.integers(1, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """80 pairs (both orders) + 30 single tweets, max_len 10, 7 rows per shard: many shard boundaries."""
    root = tmp_path_factory.mktemp("shards")
    texts = _lines(190, 0)
    pairs = pa.table(
        {
            "orig_id": [f"o{i}" for i in range(80)],
            "orig_text": texts[:80],
            "reply_id": [f"r{i}" for i in range(80)],
            "reply_text": texts[80:160],
        }
    )
    tweets = pa.table({"id": [f"t{i}" for i in range(30)], "text": texts[160:]})
    pq.write_table(pairs, root / "pairs.parquet")
    pq.write_table(tweets, root / "tweets.parquet")
    tok = Tokenizer.from_file(train_vocab(texts, VocabConfig(vocab_size=200, input_sentence_size=0), root / "v" / "spm", ["user"]))
    cfg = PairsConfig(valid_fraction=0.25, test_fraction=0.25, rows_per_shard=7, chunk_rows=32)
    out = root / "out"
    build_pair_shards(root / "pairs.parquet", root / "tweets.parquet", tok, cfg, 10, out, progress=False)
    return {"out": out, "tok": tok, "root": root}


def _plain(out, split) -> list[dict]:
    """Rows read with plain pyarrow, no memory map: the reference the readers must agree with."""
    m = json.loads((out / "manifest.json").read_text())
    rows = []
    for sh in m["shards"][split]:
        rows += pa.ipc.open_file(str(out / sh["file"])).read_all().to_pylist()
    return rows


def test_open_split_is_memory_mapped_and_zero_copy(shards):
    before = pa.total_allocated_bytes()
    tables = open_split(shards["out"], "train")
    assert pa.total_allocated_bytes() == before  # nothing copied onto the heap
    assert len(tables) > 2
    assert sum(t.num_rows for t in tables) == len(_plain(shards["out"], "train"))
    assert pa.concat_tables(tables).to_pylist() == _plain(shards["out"], "train")
    with pytest.raises(ValueError):
        open_split(shards["out"], "dev")


@pytest.mark.parametrize("split", SPLITS)
def test_dataset_rows_match_the_files(shards, split):
    ds = ShardDataset(shards["out"], split)
    plain = _plain(shards["out"], split)
    assert len(ds) == len(plain) > 0
    assert ds.lengths.tolist() == [r["length"] for r in plain]
    assert ds.labels.tolist() == [r["label"] for r in plain]
    for i, ref in enumerate(plain):
        row = ds[i]
        assert (row.a.tolist(), row.b.tolist(), row.label, row.pair_id, row.length) == (
            ref["a"], ref["b"], ref["label"], ref["pair_id"], ref["length"]
        )
    assert [r.a.tolist() for r in iter_rows(shards["out"], split)] == [r["a"] for r in plain]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_packed_batches_equal_build_input_padded(shards):
    ds = ShardDataset(shards["out"], "train")
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.integers(0, len(ds), 40), [0, len(ds) - 1, 3, 3]])  # repeats, both ends
    ids, types, labels = ds.packed(idx)
    T = max(int(ds.lengths[i]) for i in idx)
    assert ids.shape == types.shape == (idx.size, T) and ids.dtype == np.int64
    assert (labels == ds.labels[idx]).all()
    assert {-1, 0, 1} >= set(labels.tolist()) and -1 in ds.labels and 1 in ds.labels
    for r, i in enumerate(idx):
        ref_ids, ref_types = build_input(ds[i].a, ds[i].b)
        n = ref_ids.size
        assert ids[r, :n].tolist() == ref_ids.tolist() and types[r, :n].tolist() == ref_types.tolist()
        assert (ids[r, n:] == PAD_ID).all() and (types[r, n:] == 0).all()
    empty = ds.packed([])
    assert empty[0].shape == (0, 0) and empty[2].shape == (0,)


def test_decoded_rows_are_the_input_texts(shards):
    tok = shards["tok"]
    pairs = pq.read_table(shards["root"] / "pairs.parquet").to_pylist()
    fits = lambda t: len(tok.encode(t)) <= 10  # noqa: E731 - not truncated, so it must decode exactly
    want = {(p["orig_text"], p["reply_text"]) for p in pairs if fits(p["orig_text"]) and fits(p["reply_text"])}
    got = {(tok.decode(r.a), tok.decode(r.b)) for s in SPLITS for r in iter_rows(shards["out"], s) if r.label == 1}
    assert want and want <= got


def test_verify_manifest_detects_every_kind_of_damage(shards, tmp_path):
    verify_manifest(shards["out"], tokenizer_sha256=shards["tok"].sha256)
    with pytest.raises(ShardError, match="tokenizer sha256"):
        verify_manifest(shards["out"], tokenizer_sha256="0" * 64)

    def damaged(fn):
        out = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(shards["out"], out)
        fn(out)
        return out

    extra = damaged(lambda o: shutil.copy(o / "train" / "shard-00000.arrow", o / "train" / "shard-09999.arrow"))
    with pytest.raises(ShardError, match="not in the manifest"):
        verify_manifest(extra)
    missing = damaged(lambda o: (o / "test" / "shard-00000.arrow").unlink())
    with pytest.raises(ShardError, match="missing"):
        verify_manifest(missing)

    def recount(o):
        m = json.loads((o / "manifest.json").read_text())
        m["rows"]["valid"]["positive"] += 1
        (o / "manifest.json").write_text(json.dumps(m))

    with pytest.raises(ShardError, match="valid: counts from data"):
        verify_manifest(damaged(recount))
    with pytest.raises(ShardError, match="does not exist"):
        verify_manifest(tmp_path / "nowhere")


def test_an_empty_split_reads_as_empty(shards, tmp_path):
    cfg = PairsConfig(valid_fraction=0.0, test_fraction=0.5, rows_per_shard=50)
    root = shards["root"]
    m = build_pair_shards(root / "pairs.parquet", None, shards["tok"], cfg, 10, tmp_path, progress=False)
    assert m["shards"]["valid"] == [] and m["rows"]["valid"]["total"] == 0
    assert open_split(tmp_path, "valid") == []
    ds = ShardDataset(tmp_path, "valid")
    assert len(ds) == 0 and ds.lengths.size == 0
    verify_manifest(tmp_path)
