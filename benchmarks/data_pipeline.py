"""Data-pipeline benchmark: normalize + pairs on real Spanish tweets, side by side with a per-row peer.

Builds a pairs corpus from the real tweets in ``../shared/data`` (all texts of all tasks, ~137k),
replicated to ``--tweets`` texts by pairing each tweet with a different random partner per replica
(so replicas are distinct pairs and survive de-duplication), then measures, each phase in a fresh
subprocess so peak RSS is per phase:

* ``normalize``: the real stage core (read TSV, validate, normalise, drop rules, de-duplicate, write
  Parquet); tweets/s counts both texts of each pair;
* the **peer**: a straightforward per-row Python implementation of the same rules (the original
  TWilBERT's approach: ``re`` + ``html.unescape`` + ``emoji`` per row), timed on the same texts
  (as many as ``--tweets`` by default; ``--reference-tweets N`` times fewer), and the vectorised
  expression alone on the same texts, for a like-for-like ratio;
* the ``pysentimiento`` preset (vectorised, streaming) beside pysentimiento's own per-row
  ``preprocess_tweet`` (the peer RoBERTuito users run) on the same real texts;
* ``vocab`` (SentencePiece on a sample) and ``pairs`` (tokenise + ROP negatives + Arrow shards).

Prints a table, then a final JSON line with at least ``normalize_tweets_per_s``,
``normalize_ratio_vs_reference``, ``pysentimiento_tweets_per_s``, ``ratio_vs_pysentimiento``,
``pairs_per_s`` and ``peak_rss_mb``.

Usage: ``python benchmarks/data_pipeline.py [--tweets 1000000] [--workdir /tmp/twb-bench]``.
Not a test: targets (>= 300k tweets/s, >= 10x the per-row peer, <= 2 GB RSS at 10M) are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def real_texts() -> list[str]:
    import polars as pl

    texts: list[str] = []
    for f in sorted(SHARED.glob("*/*.tsv")):
        if f.parent.name == "twilbert_examples":
            continue
        df = pl.read_csv(f, separator="\t", quote_char=None, infer_schema=False, has_header=True)
        for col in ("TEXT", "TEXT_B", "REPLY_TEXT"):
            if col in df.columns:
                texts.extend(t for t in df[col].to_list() if t)
    return texts


def make_corpus(path: Path, n_tweets: int, seed: int = 0) -> int:
    """Write ``n_tweets // 2`` pairs built from the real texts; returns the number of pairs."""
    import numpy as np

    texts = real_texts()
    rng = np.random.default_rng(seed)
    n_pairs = n_tweets // 2
    base = np.array(texts, dtype=object)
    with open(path, "w", encoding="utf-8") as f:
        f.write("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n")
        written = 0
        while written < n_pairs:
            a = rng.permutation(len(base))
            b = rng.permutation(len(base))
            take = min(len(base), n_pairs - written)
            lines = [
                f"{written + i}\t{base[a[i]]}\t{10**12 + written + i}\t{base[b[i]]}\n" for i in range(take)
            ]
            f.writelines(lines)
            written += take
    return n_pairs


def _phase(name: str, workdir: Path, extra: list[str]) -> dict:
    """Run one phase in a fresh interpreter; returns its JSON result plus peak RSS."""
    cmd = [sys.executable, __file__, "--phase", name, "--workdir", str(workdir), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phase_normalize(workdir: Path) -> dict:
    from twilbert.text.corpus import normalize_corpora
    from twilbert.text.normalize import NormalizeConfig

    t0 = time.perf_counter()
    stats = normalize_corpora(pairs=[workdir / "pairs.tsv"], tweets=[], cfg=NormalizeConfig(), out_dir=workdir / "norm")
    dt = time.perf_counter() - t0
    return {"seconds": dt, "rows_in": stats["total"]["rows_in"], "rows_out": stats["total"]["rows_out"],
            "stats": stats["total"], "peak_rss_mb": _rss_mb()}


def phase_compare(workdir: Path, n_ref: int) -> dict:
    """Vectorised expression vs the per-row peer on the same in-memory texts."""
    import polars as pl

    from twilbert.text.normalize import NormalizeRules, normalize_expr
    from twilbert.text.normalize.reference import normalize_row

    texts = real_texts()
    reps = max(1, n_ref // len(texts) + 1)
    same = (texts * reps)[:n_ref]
    rules = NormalizeRules().effective()
    df = pl.DataFrame({"t": same})
    t0 = time.perf_counter()
    vec = df.select(normalize_expr(pl.col("t"), rules)).to_series().to_list()
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [normalize_row(t, rules) for t in same]
    t_ref = time.perf_counter() - t0
    agree = sum(a == b for a, b in zip(vec, ref)) / len(same)
    return {"n": len(same), "vectorised_s": t_vec, "reference_s": t_ref, "agreement": agree, "peak_rss_mb": _rss_mb()}


def phase_pysentimiento(workdir: Path, n_tweets: int, n_ref: int) -> dict:
    """The ``pysentimiento`` preset, vectorised and streaming, beside pysentimiento's own per-row
    ``preprocess_tweet(text, lang="es")`` on the same real texts (the peer on ``n_ref`` of them)."""
    import polars as pl

    from twilbert.text.normalize import NormalizeRules, normalize_expr
    from twilbert.text.normalize.reference import load_pysentimiento_preprocessing

    peer = load_pysentimiento_preprocessing()
    if peer is None:
        raise SystemExit("pysentimiento is not installed: make install (it is installed --no-deps)")
    texts = real_texts()
    same = (texts * (n_tweets // len(texts) + 1))[:n_tweets]
    rules = NormalizeRules(preset="pysentimiento").effective()
    lf = pl.DataFrame({"t": same}).lazy()
    t0 = time.perf_counter()
    vec = lf.select(normalize_expr(pl.col("t"), rules)).collect(engine="streaming").to_series()
    t_vec = time.perf_counter() - t0
    sub = same[:n_ref]
    t0 = time.perf_counter()
    ref = [peer.preprocess_tweet(t, lang="es") for t in sub]
    t_ref = time.perf_counter() - t0
    agree = sum(a == b for a, b in zip(vec[: len(sub)].to_list(), ref)) / len(sub)
    return {"n": len(same), "n_ref": len(sub), "vectorised_s": t_vec, "reference_s": t_ref, "agreement": agree,
            "peer_version": peer.__version__, "peak_rss_mb": _rss_mb()}


def phase_vocab(workdir: Path) -> dict:
    from twilbert.text.vocab import VocabConfig, train_vocab

    t0 = time.perf_counter()
    cfg = VocabConfig(vocab_size=16000, input_sentence_size=300_000)
    train_vocab([workdir / "norm" / "pairs.parquet"], cfg, workdir / "vocab" / "spm", ["user", "url", "hashtag"])
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _rss_mb()}


def phase_pairs(workdir: Path) -> dict:
    from twilbert.data.pairs import PairsConfig, build_pair_shards
    from twilbert.text.tokenizer import Tokenizer

    tok = Tokenizer.from_file(workdir / "vocab" / "spm.model")
    t0 = time.perf_counter()
    manifest = build_pair_shards(workdir / "norm" / "pairs.parquet", None, tok, PairsConfig(), 64, workdir / "pairs", progress=False)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "manifest_rows": manifest.get("rows"), "peak_rss_mb": _rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tweets", type=int, default=1_000_000, help="texts to normalise (pairs = tweets / 2)")
    ap.add_argument("--reference-tweets", type=int, default=0, help="texts for the per-row peers (0 = all the tweets normalised)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/twilbert-bench-data"))
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.reference_tweets = args.reference_tweets or args.tweets
    if args.phase:
        fn = {"normalize": lambda: phase_normalize(args.workdir), "compare": lambda: phase_compare(args.workdir, args.reference_tweets),
              "pysentimiento": lambda: phase_pysentimiento(args.workdir, args.tweets, args.reference_tweets),
              "vocab": lambda: phase_vocab(args.workdir), "pairs": lambda: phase_pairs(args.workdir)}[args.phase]
        print(json.dumps(fn()))
        return
    if not SHARED.is_dir():
        raise SystemExit(f"needs the real tweets in {SHARED}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_pairs = make_corpus(args.workdir / "pairs.tsv", args.tweets)
    print(f"corpus: {n_pairs} pairs ({2 * n_pairs} tweets) written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    norm = _phase("normalize", args.workdir, [])
    cmp_ = _phase("compare", args.workdir, ["--reference-tweets", str(args.reference_tweets)])
    pys = _phase("pysentimiento", args.workdir, ["--tweets", str(args.tweets), "--reference-tweets", str(args.reference_tweets)])
    voc = _phase("vocab", args.workdir, [])
    prs = _phase("pairs", args.workdir, [])
    n_tweets = 2 * n_pairs
    vec_rate = cmp_["n"] / cmp_["vectorised_s"]
    ref_rate = cmp_["n"] / cmp_["reference_s"]
    result = {
        "machine": f"{os.cpu_count()} cpu",
        "tweets": n_tweets,
        "normalize_tweets_per_s": round(n_tweets / norm["seconds"]),
        "normalize_expr_tweets_per_s": round(vec_rate),
        "reference_tweets_per_s": round(ref_rate),
        "normalize_ratio_vs_reference": round((n_tweets / norm["seconds"]) / ref_rate, 2),
        "expr_ratio_vs_reference": round(vec_rate / ref_rate, 2),
        "reference_agreement": round(cmp_["agreement"], 5),
        "pysentimiento_preset_tweets_per_s": round(pys["n"] / pys["vectorised_s"]),
        "pysentimiento_tweets_per_s": round(pys["n_ref"] / pys["reference_s"]),
        "ratio_vs_pysentimiento": round((pys["n"] / pys["vectorised_s"]) / (pys["n_ref"] / pys["reference_s"]), 2),
        "pysentimiento_agreement": round(pys["agreement"], 5),
        "vocab_seconds": round(voc["seconds"], 2),
        "pairs_per_s": round(n_pairs / prs["seconds"]),
        "normalize_peak_rss_mb": round(norm["peak_rss_mb"]),
        "pairs_peak_rss_mb": round(prs["peak_rss_mb"]),
        "peak_rss_mb": round(max(norm["peak_rss_mb"], voc["peak_rss_mb"], prs["peak_rss_mb"])),
        "normalize_stats": norm["stats"],
    }
    print(f"{'phase':<12}{'rate':>18}{'peak RSS MB':>14}", file=sys.stderr)
    print(f"{'normalize':<12}{result['normalize_tweets_per_s']:>14} tw/s{result['normalize_peak_rss_mb']:>14}", file=sys.stderr)
    print(f"{'per-row peer':<12}{result['reference_tweets_per_s']:>14} tw/s", file=sys.stderr)
    print(f"{'pysent. preset':<12}{result['pysentimiento_preset_tweets_per_s']:>14} tw/s", file=sys.stderr)
    print(f"{'pysentimiento':<12}{result['pysentimiento_tweets_per_s']:>14} tw/s", file=sys.stderr)
    print(f"{'pairs':<12}{result['pairs_per_s']:>12} pairs/s{result['pairs_peak_rss_mb']:>14}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
