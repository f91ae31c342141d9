"""Tiny pre-training inputs shared by the ``test_pretrain_*`` files, and a check that they are sound.

``build_inputs(root)`` trains a ~120-piece SentencePiece model on invented Spanish-like text and builds
pair shards with the real pairs stage (several shards per split, so batches cross shard boundaries).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from twilbert.data.pairs import PairsConfig, build_pair_shards
from twilbert.data.shards import ShardDataset, verify_manifest
from twilbert.model.config import ModelConfig, ROPConfig
from twilbert.text.tokenizer import Tokenizer
from twilbert.text.vocab import VocabConfig, train_vocab
from twilbert.train.config import ImplConfig, RunConfig, TrainingConfig

SYLLABLES = "ca sa pe lo mi tu ra no que bien ja je ma ción des pa ri to lu go ve fi cho lla gue so ta ba en al es".split()
MAX_LEN = 12


def _lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lexicon = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(200)]
    return [" ".join(rng.choice(lexicon + ["user"], rng.integers(1, 10))) for _ in range(n)]


def build_inputs(root: Path, n_pairs: int = 70, n_tweets: int = 20) -> dict:
    """``{"shards": dir, "tokenizer": spm.model path, "vocab_size": int}`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    texts = _lines(2 * n_pairs + n_tweets, 0)
    pairs = pa.table(
        {
            "orig_id": [f"o{i}" for i in range(n_pairs)],
            "orig_text": texts[:n_pairs],
            "reply_id": [f"r{i}" for i in range(n_pairs)],
            "reply_text": texts[n_pairs : 2 * n_pairs],
        }
    )
    tweets = pa.table({"id": [f"t{i}" for i in range(n_tweets)], "text": texts[2 * n_pairs :]})
    pq.write_table(pairs, root / "pairs.parquet")
    pq.write_table(tweets, root / "tweets.parquet")
    spm = train_vocab(texts, VocabConfig(vocab_size=120, input_sentence_size=0, num_threads=1), root / "vocab" / "spm", ["user"])
    tok = Tokenizer.from_file(spm)
    cfg = PairsConfig(valid_fraction=0.1, test_fraction=0.1, rows_per_shard=37, chunk_rows=64)
    build_pair_shards(root / "pairs.parquet", root / "tweets.parquet", tok, cfg, MAX_LEN, root / "pairs", progress=False)
    return {"shards": root / "pairs", "tokenizer": spm, "vocab_size": tok.vocab_size}


def tiny_model(vocab_size: int, **overrides) -> ModelConfig:
    """H=32, L=2, no dropout: a model that trains in milliseconds per step."""
    cfg = ModelConfig(hidden_size=32, embedding_size=32, n_encoders=2, n_heads=2, rop=ROPConfig(hidden_size=16))
    return replace(cfg, **overrides).resolved(vocab_size=vocab_size, max_len=MAX_LEN)


def tiny_training(**overrides) -> TrainingConfig:
    base = dict(batch_size=8, epochs=1, optimizer="adamw", lr=3e-3, schedule="linear", warmup_steps=2, bucket_width=4)
    return TrainingConfig(**{**base, **overrides})


def tiny_run(**overrides) -> RunConfig:
    """Bookkeeping for the tiny runs: log every step."""
    return RunConfig(**{"log_every": 1, **overrides})


def cpu_impl(**overrides) -> ImplConfig:
    return ImplConfig(**{**dict(device="cpu", precision="fp32", num_threads=1, progress=False), **overrides})


REPO = Path(__file__).resolve().parents[2]


def write_params(path: Path, vocab_size: int, *, training: dict | None = None, model: dict | None = None, run: dict | None = None,
                 impl: dict | None = None) -> Path:
    """A params.yaml for the stage commands with the tiny model and training above (tracking off, CPU,
    one thread). ``vocab_size`` must be the tokenizer's (the stage resolves it; vocab.vocab_size is the
    data stages' setting)."""
    import yaml

    model_section = dict(hidden_size=32, embedding_size=32, n_encoders=2, n_heads=2, output_dropout=0.0, rop={"hidden_size": 16})
    train_section = dict(batch_size=8, epochs=1, optimizer="adamw", lr=3e-3, schedule="linear", warmup_steps=2, bucket_width=4)
    data = {
        "data": {"pairs": [str(REPO / "data/sample/pairs.tsv")], "tweets": [str(REPO / "data/sample/tweets.tsv")]},
        "vocab": {"vocab_size": vocab_size},
        "representation": {"max_len": MAX_LEN},
        "model": {**model_section, **(model or {})},
        "training": {**train_section, **(training or {})},
        "impl": {"device": "cpu", "precision": "fp32", "num_threads": 1, "progress": False, **(impl or {})},
        "run": {"log_every": 1, **(run or {})},
        "tracking": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_fixture_shards_are_consistent(tmp_path):
    inputs = build_inputs(tmp_path)
    tok = Tokenizer.from_file(inputs["tokenizer"])
    manifest = verify_manifest(inputs["shards"], tok.sha256)
    train = ShardDataset(inputs["shards"], "train")
    assert len(manifest["shards"]["train"]) >= 3  # several shards: batches cross shard boundaries
    assert len(train) == manifest["rows"]["train"]["total"] > 100
    assert set(np.unique(train.labels).tolist()) == {-1, 0, 1}
    assert int(train.lengths.max()) <= 2 * MAX_LEN + 3
