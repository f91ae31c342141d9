"""The shard format: schema, layout, manifest writing and verifying, and the stages that verify it.

A shard altered after the pairs stage wrote it must stop pre-training and evaluation with one line
naming the shard, through the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.test_cli_errors import cli, error_line
from tests.train.test_pretrain_fixtures import build_inputs, write_params
from twilbert.data.shard_format import (
    LABELS,
    MANIFEST,
    SPLITS,
    ShardError,
    build_manifest,
    clear_shards,
    load_manifest,
    open_shard,
    shard_file,
    shard_schema,
    split_counts,
    token_dtype,
    verify_manifest,
    write_manifest,
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return build_inputs(tmp_path_factory.mktemp("shard-format"))


def _copy(shards: Path, dest: Path) -> Path:
    shutil.copytree(shards, dest)
    return dest


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_schema_and_token_dtype_follow_the_vocabulary_size():
    small, large = shard_schema(2**16), shard_schema(2**16 + 1)
    assert small.names == ["a", "b", "label", "pair_id", "length"]
    assert small.field("a").type == pa.list_(pa.uint16()) and large.field("b").type == pa.list_(pa.uint32())
    assert token_dtype(small) is np.uint16 and token_dtype(large) is np.uint32
    assert [small.field(c).type for c in ("label", "pair_id", "length")] == [pa.int8(), pa.uint64(), pa.uint16()]


def test_layout_names_and_counts():
    assert SPLITS == ("train", "valid", "test")
    assert shard_file("valid", 12) == "valid/shard-00012.arrow"
    assert split_counts(7, {1: 3, 0: 3, -1: 1}) == {"total": 7, "positive": 3, "negative": 3, "mlm_only": 1}
    assert set(LABELS.values()) == {1, 0, -1}


def test_manifest_keys_come_in_one_order(tmp_path):
    m = build_manifest(max_len=8, vocab_size=100, schema=shard_schema(100), tokenizer_sha256="ab", rows={}, inputs={},
                       negatives={}, truncated_segments=0, config={}, shards={}, length_histogram={})
    assert list(m) == ["format_version", "max_len", "vocab_size", "token_dtype", "tokenizer_sha256", "rows", "input",
                       "negatives", "truncated_segments", "config", "shards", "length_histogram"]
    assert m["token_dtype"] == "uint16"
    write_manifest(tmp_path, m)
    assert (tmp_path / MANIFEST).read_text() == json.dumps(m, indent=2) + "\n"
    assert load_manifest(tmp_path) == m
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]  # no temp file left behind


def test_clear_shards_leaves_empty_split_directories(inputs, tmp_path):
    out = _copy(inputs["shards"], tmp_path / "s")
    clear_shards(out)
    assert not (out / MANIFEST).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)
    assert all(not any((out / s).iterdir()) for s in SPLITS)


def test_open_shard_is_memory_mapped(inputs):
    m = load_manifest(inputs["shards"])
    before = pa.total_allocated_bytes()
    table = open_shard(inputs["shards"] / m["shards"]["train"][0]["file"])
    assert table.num_rows == m["shards"]["train"][0]["rows"] and table.nbytes > 0
    assert pa.total_allocated_bytes() == before  # the buffers live in the mapping, not in Arrow's pool


def test_verify_checks_only_the_splits_asked_for(inputs, tmp_path):
    out = _copy(inputs["shards"], tmp_path / "s")
    test_shard = load_manifest(out)["shards"]["test"][0]["file"]
    _flip_byte(out / test_shard)
    assert verify_manifest(out, splits=("train",))["shards"]
    with pytest.raises(ShardError, match=rf"{test_shard}: sha256 mismatch"):
        verify_manifest(out, splits=("train", "test"))


def test_verify_names_every_bad_shard_in_one_line(inputs, tmp_path):
    out = _copy(inputs["shards"], tmp_path / "s")
    m = load_manifest(out)
    bad = [m["shards"]["train"][0]["file"], m["shards"]["train"][-1]["file"]]
    for f in bad:
        _flip_byte(out / f)
    with pytest.raises(ShardError) as err:
        verify_manifest(out)
    message = str(err.value)
    assert "\n" not in message and all(f"{f}: sha256 mismatch" in message for f in bad)
    assert message.startswith(f"{out}: ") and "rerun the pairs stage" in message


def test_pretrain_refuses_an_altered_shard(inputs, tmp_path):
    out = _copy(inputs["shards"], tmp_path / "s")
    shard = load_manifest(out)["shards"]["train"][1]["file"]
    _flip_byte(out / shard)
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"], training={"max_steps": 1})
    line = error_line(cli("pretrain", "--params", params, "--shards-dir", out, "--vocab-model", inputs["tokenizer"],
                          "--out-dir", tmp_path / "out", "--reports-dir", tmp_path / "reports"))
    assert f"{shard}: sha256 mismatch" in line and str(out) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("split", ["train", "test"])  # train: the unigram baseline reads it
def test_evaluate_refuses_an_altered_shard(inputs, tmp_path, split):
    out = _copy(inputs["shards"], tmp_path / "s")
    shard = load_manifest(out)["shards"][split][0]["file"]
    _flip_byte(out / shard)
    model_dir = tmp_path / "final"  # never read: the shards are checked before the model loads
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"])
    line = error_line(cli("evaluate", "--params", params, "--model-dir", model_dir, "--vocab-model", inputs["tokenizer"],
                          "--shards-dir", out, "--split", "test", "--out-dir", tmp_path / "eval"))
    assert f"{shard}: sha256 mismatch" in line
    assert not (tmp_path / "eval").exists()
