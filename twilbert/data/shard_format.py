"""The pair-shard format: what the pairs stage writes and pre-training and evaluation read.

A shards directory holds ``{train,valid,test}/shard-00000.arrow ...`` and ``manifest.json``. Each shard
is an uncompressed Arrow IPC *file* of one record batch (random access, memory-mappable) with columns
``a, b: list<uint16>`` (``uint32`` when vocab_size > 65536), ``label: int8`` (1 in order, 0 negative,
-1 MLM only), ``pair_id: uint64`` and ``length: uint16`` (tokens of ``[CLS] a [SEP] b [SEP]``, or
``[CLS] a [SEP]`` when b is empty).

The manifest (:func:`build_manifest` fixes its keys and their order) records the counts per split, the
shards with their row counts and sha256, a length histogram per split and the tokenizer's sha256, so
:func:`verify_manifest` can tell a shard altered or replaced after the pairs stage wrote it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from twilbert.metadata import read_json

from twilbert.utils import atomic_write_text, sha256_file

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SHARD_GLOB = "shard-*.arrow"
LABELS = {"positive": 1, "negative": 0, "mlm_only": -1}  # manifest count name -> label value


class ShardError(ValueError):
    """Shards that do not match their manifest (missing, extra, altered or miscounted)."""


def shard_schema(vocab_size: int) -> pa.Schema:
    tok = pa.uint16() if vocab_size <= 2**16 else pa.uint32()
    return pa.schema(
        [
            ("a", pa.list_(tok)),
            ("b", pa.list_(tok)),
            ("label", pa.int8()),
            ("pair_id", pa.uint64()),
            ("length", pa.uint16()),
        ]
    )


def token_dtype(schema: pa.Schema) -> type[np.unsignedinteger]:
    """The numpy dtype of the token ids of ``schema`` (a :func:`shard_schema`)."""
    return np.uint16 if schema.field("a").type.value_type == pa.uint16() else np.uint32


def shard_file(split: str, index: int) -> str:
    """A shard's path relative to the shards directory, as the manifest lists it."""
    return f"{split}/shard-{index:05d}.arrow"


def split_counts(total: int, labels: dict[int, int]) -> dict[str, int]:
    """The manifest's ``rows[split]`` entry from a row total and the rows per label value."""
    return {"total": total, **{name: labels[value] for name, value in LABELS.items()}}


def build_manifest(
    *,
    max_len: int,
    vocab_size: int,
    schema: pa.Schema,
    tokenizer_sha256: str,
    rows: dict,
    inputs: dict,
    negatives: dict,
    truncated_segments: int,
    config: dict,
    shards: dict[str, list[dict]],
    length_histogram: dict[str, list[int]],
) -> dict:
    """The manifest dict. ``rows``: :func:`split_counts` per split plus the grand ``total``;
    ``inputs``: per input kind, rows_in = kept + rejected by reason; ``shards``: per split, a list of
    ``{file, rows, sha256}``; ``length_histogram``: per split, rows by length (index = length)."""
    return {
        "format_version": FORMAT_VERSION,
        "max_len": max_len,
        "vocab_size": vocab_size,
        "token_dtype": str(schema.field("a").type.value_type),
        "tokenizer_sha256": tokenizer_sha256,
        "rows": rows,
        "input": inputs,
        "negatives": negatives,
        "truncated_segments": truncated_segments,
        "config": config,
        "shards": shards,
        "length_histogram": length_histogram,
    }


def clear_shards(out_dir: Path) -> None:
    """Remove the manifest and every shard, and create the split directories: a stale shard of a
    previous, larger run must not survive, nor a manifest that no longer describes the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for split in SPLITS:
        (out_dir / split).mkdir(exist_ok=True)
        for old in (out_dir / split).glob(SHARD_GLOB):
            old.unlink()


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """Written last and atomically: a manifest present means every shard it lists is complete."""
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def load_manifest(out_dir: str | Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise ShardError(f"{path} does not exist: run the pairs stage first")
    return read_json(path, schema=_check_manifest, error=ShardError)


def _check_manifest(m: dict[str, Any]) -> None:
    """The keys the readers index, of the types they index them as, for every split listed (a
    ConfigError names the first that is not)."""
    from twilbert.config import ConfigError

    for key, kind in (("tokenizer_sha256", str), ("shards", dict), ("rows", dict), ("length_histogram", dict)):
        if not isinstance(m.get(key), kind):
            raise ConfigError(f"{key}: expected a JSON {'string' if kind is str else 'object'} (not a manifest the pairs stage wrote; rerun it)")
    for split, shards in m["shards"].items():
        if not isinstance(shards, list) or not isinstance(m["length_histogram"].get(split), list) or not isinstance(m["rows"].get(split), dict):
            raise ConfigError(f"{split}: expected a list of shards, rows and a length_histogram (rerun the pairs stage)")
        for sh in shards:
            if not (isinstance(sh, dict) and isinstance(sh.get("file"), str) and isinstance(sh.get("sha256"), str)
                    and isinstance(sh.get("rows"), int)):
                raise ConfigError(f"shards.{split}: an entry without file, sha256 and rows (rerun the pairs stage)")


def open_shard(path: Path) -> pa.Table:
    """Memory-map one shard; the returned table's buffers point into the mapping (zero copy)."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def verify_manifest(out_dir: str | Path, tokenizer_sha256: str | None = None, splits: Sequence[str] = SPLITS) -> dict:
    """Check the shards of ``splits`` against the manifest: files, checksums, and the counts and length
    histogram recomputed from the data. Raises one ShardError naming every bad shard; returns the manifest.

    Cost: one sha256 pass over the files (about 1.8 GB/s per core, shards hashed in parallel threads)
    plus the ``label`` and ``length`` columns (3 bytes a row, memory-mapped).
    """
    out_dir = Path(out_dir)
    m = load_manifest(out_dir)
    problems: list[str] = []
    if tokenizer_sha256 is not None and m["tokenizer_sha256"] != tokenizer_sha256:
        problems.append(f"tokenizer sha256 {m['tokenizer_sha256'][:12]} != expected {tokenizer_sha256[:12]}")
    listed = [sh for split in splits for sh in m["shards"][split]]
    present = [sh["file"] for sh in listed if (out_dir / sh["file"]).exists()]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
        digests = dict(zip(present, pool.map(sha256_file, (out_dir / f for f in present))))
    for split in splits:
        problems += _split_problems(out_dir, split, m, digests)
    if problems:
        raise ShardError(f"{out_dir}: " + "; ".join(problems) + " (rerun the pairs stage)")
    return m


def _split_problems(out_dir: Path, split: str, m: dict, digests: dict[str, str]) -> list[str]:
    listed = m["shards"][split]
    problems: list[str] = []
    extra = {f"{split}/{p.name}" for p in (out_dir / split).glob(SHARD_GLOB)} - {sh["file"] for sh in listed}
    if extra:
        problems.append(f"{split}: shards not in the manifest: {sorted(extra)}")
    labels = dict.fromkeys(LABELS.values(), 0)
    hist = np.zeros(len(m["length_histogram"][split]), dtype=np.int64)
    total = 0
    for sh in listed:
        if sh["file"] not in digests:
            problems.append(f"{sh['file']}: missing")
            continue
        if digests[sh["file"]] != sh["sha256"]:
            problems.append(f"{sh['file']}: sha256 mismatch (altered after the manifest was written)")
            continue
        t = open_shard(out_dir / sh["file"])
        if t.num_rows != sh["rows"]:
            problems.append(f"{sh['file']}: {t.num_rows} rows, manifest says {sh['rows']}")
        total += t.num_rows
        lab = t["label"].to_numpy()
        for k in labels:
            labels[k] += int((lab == k).sum())
        hist += np.bincount(t["length"].to_numpy(), minlength=hist.size)[: hist.size]
    got = split_counts(total, labels)
    if got != m["rows"][split]:
        problems.append(f"{split}: counts from data {got} != manifest {m['rows'][split]}")
    if hist.tolist() != m["length_histogram"][split]:
        problems.append(f"{split}: length histogram from data differs from the manifest")
    return problems


__all__ = [
    "FORMAT_VERSION",
    "LABELS",
    "MANIFEST",
    "SHARD_GLOB",
    "SPLITS",
    "ShardError",
    "build_manifest",
    "clear_shards",
    "load_manifest",
    "open_shard",
    "shard_file",
    "shard_schema",
    "split_counts",
    "token_dtype",
    "verify_manifest",
]
