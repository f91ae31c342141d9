"""Helpers the pre-training benchmarks share: the product's data stages on real tweets, cached.

``prepare_data`` runs the normalize, vocab and pairs stage cores (the code ``dvc repro`` runs) on a
set of task TSVs plus a reply-pairs TSV and caches each stage's output under ``workdir``, keyed by its
inputs and config, so a second run starts training at once. Task texts are paired with the next text of
their file (the pairs stage wants pairs); the reply pairs go in as they are.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

CACHE_KEY = "bench-key.json"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cached(directory: Path, key: dict, build) -> bool:
    """Run ``build()`` unless ``directory`` holds a finished build with this ``key``; True if it ran."""
    key_file = directory / CACHE_KEY
    want = json.dumps(key, sort_keys=True, default=str)
    if key_file.is_file() and key_file.read_text() == want:
        return False
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    build()
    key_file.write_text(want)
    return True


def write_task_pairs(files: list[Path], path: Path) -> int:
    """Every text of ``files`` (TSVs with a TEXT column) paired with the next text of its file, as a
    pairs TSV; returns the pair count."""
    import polars as pl

    n = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n")
        for f in files:
            df = pl.read_csv(f, separator="\t", quote_char=None, infer_schema=False, has_header=True)
            texts = [t for t in df["TEXT"].to_list() if t]
            tag = f"{f.parent.name}/{f.stem}"
            for i in range(0, len(texts) - 1, 2):
                out.write(f"{tag}:{i}\t{texts[i]}\t{tag}:{i + 1}\t{texts[i + 1]}\n")
                n += 1
    return n


def prepare_data(
    workdir: Path,
    *,
    task_files: list[Path],
    reply_pairs: Path,
    vocab_size: int,
    max_len: int,
    spm: Path | None = None,
    name: str = "normalized",
) -> tuple[Path, Path]:
    """normalize -> vocab -> pairs, as the pipeline's stages run them; returns (spm model, shards dir).

    ``name``: the normalized stage's folder under ``workdir`` (one per source set, so two benchmarks
    with different sources keep both caches)."""
    from twilbert.data.pairs import PairsConfig, build_pair_shards
    from twilbert.text.corpus import normalize_corpora
    from twilbert.text.normalize import NormalizeConfig, placeholder_tokens
    from twilbert.text.tokenizer import Tokenizer
    from twilbert.text.vocab import VocabConfig, train_vocab
    from twilbert.utils import sha256_file

    sources = [*task_files, reply_pairs]
    norm_cfg = NormalizeConfig()
    norm_dir = workdir / name

    def normalize() -> None:
        t0 = time.perf_counter()
        n = write_task_pairs(task_files, norm_dir / "task_pairs.tsv")
        stats = normalize_corpora(pairs=[reply_pairs, norm_dir / "task_pairs.tsv"], tweets=[], cfg=norm_cfg, out_dir=norm_dir)
        t = stats["total"]
        say(f"normalize: {n} task pairs + {reply_pairs.name}: {t['rows_in']} in, {t['rows_out']} out, "
            f"{t['rows_dropped']} dropped, {t['rows_rejected']} rejected ({time.perf_counter() - t0:.1f}s)")

    sources_key = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sources]
    cached(norm_dir, {"sources": sources_key, "normalize": asdict(norm_cfg), "pairing": "next text, v1"}, normalize)
    parquet = norm_dir / "pairs.parquet"
    corpus_sha = sha256_file(parquet)

    if spm is None:
        vocab_cfg = VocabConfig(vocab_size=vocab_size, input_sentence_size=0)
        vocab_dir = workdir / f"vocab-{vocab_size}" if name == "normalized" else workdir / f"vocab-{name}-{vocab_size}"

        def vocab() -> None:
            t0 = time.perf_counter()
            train_vocab([parquet], vocab_cfg, vocab_dir / "spm", placeholder_tokens(norm_cfg.rules.effective()))
            say(f"vocab: trained a {vocab_size}-piece SentencePiece model in {time.perf_counter() - t0:.1f}s")

        cached(vocab_dir, {"corpus": corpus_sha, "vocab": asdict(vocab_cfg)}, vocab)
        spm = vocab_dir / "spm.model"
    tok = Tokenizer.from_file(spm)

    pairs_cfg = PairsConfig(negatives="swap")
    shards = workdir / f"shards-{tok.sha256[:12]}-L{max_len}"

    def pairs() -> None:
        t0 = time.perf_counter()
        m = build_pair_shards(parquet, None, tok, pairs_cfg, max_len, shards, progress=False)
        say(f"pairs: {json.dumps(m['rows'])} ({time.perf_counter() - t0:.1f}s)")

    cached(shards, {"corpus": corpus_sha, "tokenizer": tok.sha256, "max_len": max_len, "pairs": asdict(pairs_cfg)}, pairs)
    return Path(spm), shards


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    """The GPU's name, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"
