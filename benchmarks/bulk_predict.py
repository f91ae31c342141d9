"""Bulk prediction: ``twilbert predict -i big.tsv -o out.jsonl`` against ``load(...).predict`` on the same texts.

The file is ``--tweets`` real tweets of ``../shared/data`` (every TEXT column, cycled to the size
asked for) written as a TSV with an id column. The CLI runs in a child process (model loading,
reading, chunked tokenisation overlapped with compute, JSON lines written as chunks finish:
twilbert/bulk.py); the Python API gets the texts already in memory and is timed around ``predict``
alone. Both see the same ``--threads``. Two CLI rates: end to end (process start, imports and model
loading included) and the headline, apart from start-up: the rows over the seconds the child itself
reports between its model being loaded and its output being complete (its summary line), the like of
what the API is timed on. The child's VmRSS is sampled every 0.2 s: peak, and at each tenth of the
run, so a memory that grows with the input shows as a rising line, a bounded one as a plateau (compare
``--tweets 10000`` with ``100000``; the API's list of result dicts grows with the input).

Usage: ``python benchmarks/bulk_predict.py -m MODEL_DIR [--tweets 100000] [--threads 2]``; a final
JSON line with ``cli_predict_tweets_per_s``, ``api_tweets_per_s``, ``ratio_cli_predict_vs_api`` (the
headline), ``cli_tweets_per_s`` / ``ratio_cli_vs_api`` (end to end), ``cli_load_s``,
``cli_peak_rss_mb`` and ``cli_rss_mb_by_tenth``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def sample_rss(child: subprocess.Popen, every_s: float = 0.2) -> list[tuple[float, int]]:
    """(seconds since start, VmRSS in MB) of a running child until it exits (Linux /proc)."""
    t0, samples = time.perf_counter(), []
    while child.poll() is None:
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
        except OSError:
            break
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if kb is not None:
            samples.append((time.perf_counter() - t0, kb // 1024))
        time.sleep(every_s)
    return samples


def by_tenth(samples: list[tuple[float, int]]) -> list[int]:
    """The highest RSS in each tenth of the run: a plateau when memory is bounded."""
    if not samples:
        return []
    end = samples[-1][0] or 1.0
    tenths = [0] * 10
    for t, mb in samples:
        i = min(int(10 * t / end), 9)
        tenths[i] = max(tenths[i], mb)
    return tenths


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
        log = Path(tmp) / "stderr.txt"
        with open(log, "w", encoding="utf-8") as err:  # a file, not a pipe: a chatty child never blocks
            child = subprocess.Popen(cmd, env=env, stderr=err)
            samples = sample_rss(child)
        stderr = log.read_text(encoding="utf-8")
        if child.wait() != 0:
            sys.exit(f"the CLI failed:\n{stderr}")
        cli_s = time.perf_counter() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = re.search(r"over ([0-9.]+) s; the model loaded in ([0-9.]+) s", stderr)
        if summary is None:
            sys.exit(f"no timing in the CLI's summary line:\n{stderr}")
        predict_s, load_s = float(summary[1]), float(summary[2])
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
        "cli_load_s": round(load_s, 2),
        "cli_predict_s": round(predict_s, 1),
        "api_s": round(api_s, 1),
        "cli_predict_tweets_per_s": round(args.tweets / predict_s, 1),
        "api_tweets_per_s": round(args.tweets / api_s, 1),
        "ratio_cli_predict_vs_api": round(api_s / predict_s, 2),
        "cli_tweets_per_s": round(args.tweets / cli_s, 1),
        "ratio_cli_vs_api": round(api_s / cli_s, 2),
        "cli_peak_rss_mb": round(rss_mb, 1),
        "cli_rss_mb_by_tenth": by_tenth(samples),
        "load_avg_1min": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
