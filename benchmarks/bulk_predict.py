"""Bulk prediction: ``twilbert predict -i big.tsv -o out.jsonl`` against ``load(...).predict`` on the same texts.

The file is ``--tweets`` real tweets of ``../shared/data`` (every TEXT column, cycled to the size
asked for) written as a TSV with an id column. The CLI runs in a child process (model loading,
reading, chunked tokenisation overlapped with compute, JSON lines written as chunks finish:
twilbert/bulk.py) and is timed end to end; the Python API gets the texts already in memory and is
timed around ``predict`` alone. Both see the same ``--threads``; the child's peak RSS shows the memory
the streaming keeps bounded (the API's list of result dicts grows with the input).

Usage: ``python benchmarks/bulk_predict.py -m MODEL_DIR [--tweets 100000] [--threads 2]``; a final
JSON line with ``cli_tweets_per_s``, ``api_tweets_per_s``, ``ratio_cli_vs_api`` and ``cli_peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def real_tweets(n: int) -> list[str]:
    import polars as pl

    texts: list[str] = []
    for f in sorted(SHARED.glob("*/*.tsv")):
        df = pl.read_csv(f, separator="\t", quote_char=None, infer_schema=False)
        if "TEXT" in df.columns:
            texts += [t.replace("\t", " ") for t in df["TEXT"].to_list() if t]
    return [texts[i % len(texts)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", type=Path, required=True, help="a fine-tuned model directory")
    ap.add_argument("--tweets", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    texts = real_tweets(args.tweets)
    with tempfile.TemporaryDirectory() as tmp:
        big, out = Path(tmp) / "big.tsv", Path(tmp) / "out.jsonl"
        big.write_text("id\ttext\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "pipeline.cli", "predict", "-m", str(args.model), "-i", str(big), "-o", str(out),
               "--id-column", "id", "--batch-size", str(args.batch_size), "--precision", args.precision, "--no-progress"]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        cli_s = time.perf_counter() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        with open(out, encoding="utf-8") as f:
            cli_rows = sum(1 for _ in f)
    from twilbert.inference import load

    predictor = load(args.model, precision=args.precision)
    t0 = time.perf_counter()
    rows = predictor.predict(texts, batch_size=args.batch_size)
    api_s = time.perf_counter() - t0
    assert cli_rows == len(rows) == args.tweets
    result = {
        "tweets": args.tweets,
        "threads": args.threads,
        "precision": args.precision,
        "cli_s": round(cli_s, 1),
        "api_s": round(api_s, 1),
        "cli_tweets_per_s": round(args.tweets / cli_s, 1),
        "api_tweets_per_s": round(args.tweets / api_s, 1),
        "ratio_cli_vs_api": round(api_s / cli_s, 2),
        "cli_peak_rss_mb": round(rss_mb, 1),
        "load_avg_1min": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
