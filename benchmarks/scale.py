"""Scale: the data stages (normalize -> vocab -> pairs) end to end on 1M and 10M tweet/reply pairs.

The corpus replicates the real tweets of ``../shared/data`` (all texts of all tasks, ~137k) with
perturbations, so that replicas are distinct pairs that survive de-duplication and look like tweets:
each replica of a text gets one to three edits drawn from: insert a real word from the corpus,
swap two neighbouring words, drop a word, repeat a letter, append a number, append a real mention or
hashtag-like word, upper-case a word. Pairs are (text, another random text).

Each stage runs as the real command (``python -m pipeline.cli <stage>``) with a generated params file,
under a fresh wrapper process, so wall time and peak RSS (``ru_maxrss`` of that stage's process tree)
are per stage and per size. Tracking is off (``TWILBERT_TRACKING=off``): this measures the data work.

Prints a table and a final JSON line: per size ``{stage: {wall_s, peak_rss_mb, rate}}``, the RSS
growth from the smallest to the largest size, and a projection to ``--project-pairs`` (94M, the
original's corpus) from the measured throughput at the largest size (the stages are streaming and
linear; vocab trains on a fixed ``input_sentence_size`` sample, so its time does not grow).

Usage: ``python benchmarks/scale.py [--sizes 1000000 10000000] [--workdir /tmp/twilbert-scale]``.
Not a test. Needs ~4 GB of disk at 10M pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
STAGES = ("normalize", "vocab", "pairs")


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


def perturb(words: list[str], rng: np.random.Generator, lexicon: list[str], tags: list[str]) -> list[str]:
    """One to three random edits of a tokenised tweet (see module docstring)."""
    w = list(words)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(7))
        i = int(rng.integers(len(w))) if w else 0
        if op == 0 or not w:
            w.insert(i, lexicon[int(rng.integers(len(lexicon)))])
        elif op == 1 and len(w) > 1:
            j = min(i + 1, len(w) - 1)
            w[i], w[j] = w[j], w[i]
        elif op == 2 and len(w) > 3:
            del w[i]
        elif op == 3 and w[i]:
            k = int(rng.integers(len(w[i])))
            w[i] = w[i][: k + 1] + w[i][k] * int(rng.integers(1, 4)) + w[i][k + 1 :]
        elif op == 4:
            w.append(str(int(rng.integers(1, 10_000))))
        elif op == 5:
            w.append(tags[int(rng.integers(len(tags)))])
        else:
            w[i] = w[i].upper()
    return w


def make_corpus(path: Path, n_pairs: int, seed: int = 0) -> float:
    """Write ``n_pairs`` perturbed real pairs to ``path``; returns seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    texts = real_texts()
    split = [t.split() for t in texts]
    lexicon = sorted({w for ws in split[:20000] for w in ws if w.isalpha() and len(w) > 2})
    tags = sorted({w for ws in split for w in ws if w[:1] in "@#" and len(w) > 2})[:5000] or ["#tag"]
    n = len(texts)
    with open(path, "w", encoding="utf-8") as f:
        f.write("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n")
        done, replica = 0, 0
        while done < n_pairs:
            a, b = rng.permutation(n), rng.permutation(n)
            take = min(n, n_pairs - done)
            lines = []
            for k in range(take):
                x, y = split[a[k]], split[b[k]]
                if replica:  # the first pass is the real tweets as they are
                    x, y = perturb(x, rng, lexicon, tags), perturb(y, rng, lexicon, tags)
                lines.append(f"{done + k}\t{' '.join(x)}\t{10**12 + done + k}\t{' '.join(y)}\n")
            f.writelines(lines)
            done += take
            replica += 1
    return time.perf_counter() - t0


def write_params(workdir: Path, corpus: Path) -> Path:
    """The repo's params.yaml with the data pointed at ``corpus`` and a vocabulary of real size."""
    from ruamel.yaml import YAML

    yaml = YAML()
    p = yaml.load((REPO / "params.yaml").read_text(encoding="utf-8"))
    p["data"]["pairs"] = [str(corpus)]
    p["data"]["tweets"] = []
    p["vocab"]["vocab_size"] = 30000  # the original's size
    p["vocab"]["input_sentence_size"] = 2_000_000
    p["representation"]["max_len"] = 64
    p["pairs"]["rows_per_shard"] = 1_000_000
    p["impl"]["progress"] = False
    for task in p["tasks"].values():  # paths in params are relative to the params file
        for key in ("train_file", "dev_file", "test_file"):
            task[key] = str(REPO / task[key])
    out = workdir / "params.yaml"
    with open(out, "w", encoding="utf-8") as f:
        yaml.dump(p, f)
    return out


def run_stage(stage: str, params: Path, workdir: Path) -> dict:
    """One stage as its real command, in a fresh wrapper: wall seconds and the tree's peak RSS."""
    args = {
        "normalize": ["--out-dir", str(workdir / "normalized")],
        # every output under workdir: the stage's default --stats-path is the repo's reports/vocab/stats.json
        "vocab": ["--normalized-dir", str(workdir / "normalized"), "--out-dir", str(workdir / "vocab"),
                  "--stats-path", str(workdir / "vocab_stats.json")],
        "pairs": ["--normalized-dir", str(workdir / "normalized"), "--vocab-model", str(workdir / "vocab" / "spm.model"),
                  "--out-dir", str(workdir / "pairs"), "--stats-path", str(workdir / "pairs_stats.json")],
    }[stage]
    cmd = [sys.executable, "-m", "pipeline.cli", stage, "--params", str(params), *args]
    wrapper = (
        "import resource, subprocess, sys, json, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(json.dumps({'rc': r.returncode, 'wall_s': time.perf_counter() - t, "
        "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 'err': r.stderr[-3000:]}))"
    )
    env = {**os.environ, "TWILBERT_TRACKING": "off", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, cwd=REPO, env=env)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"{stage} failed:\n{res['err']}")
    res.pop("err")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="pairs")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/twilbert-scale"))
    ap.add_argument("--project-pairs", type=int, default=94_000_000)
    ap.add_argument("--keep", action="store_true", help="keep each size's outputs (disk!)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs the real tweets in {SHARED}")
    results = {}
    for n in args.sizes:
        wd = args.workdir / f"{n}"
        wd.mkdir(parents=True, exist_ok=True)
        corpus = wd / "pairs.tsv"
        gen_s = make_corpus(corpus, n)
        params = write_params(wd, corpus)
        size = {"corpus_mb": round(corpus.stat().st_size / 2**20), "generate_s": round(gen_s, 1)}
        for stage in STAGES:
            r = run_stage(stage, params, wd)
            size[stage] = {"wall_s": round(r["wall_s"], 1), "peak_rss_mb": round(r["peak_rss_mb"])}
            print(f"{n:>11} pairs  {stage:<10}{r['wall_s']:>9.1f} s {r['peak_rss_mb']:>9.0f} MB", file=sys.stderr)
        stats = json.loads((wd / "normalized" / "stats.json").read_text())["total"]
        manifest = json.loads((wd / "pairs" / "manifest.json").read_text())
        size["rows_in"], size["rows_out"] = stats["rows_in"], stats["rows_out"]
        size["rows_dropped"], size["rows_rejected"] = stats["rows_dropped"], stats["rows_rejected"]
        size["examples"] = manifest["rows"]["total"]
        size["normalize"]["pairs_per_s"] = round(n / size["normalize"]["wall_s"])
        size["pairs"]["pairs_per_s"] = round(stats["rows_out"] / size["pairs"]["wall_s"])
        size["end_to_end_s"] = round(sum(size[s]["wall_s"] for s in STAGES), 1)
        size["peak_rss_mb"] = max(size[s]["peak_rss_mb"] for s in STAGES)
        results[str(n)] = size
        if not args.keep:
            for sub in ("normalized", "pairs"):
                subprocess.run(["rm", "-rf", str(wd / sub)], check=True)
            corpus.unlink()
    lo, hi = str(min(args.sizes)), str(max(args.sizes))
    big = results[hi]
    N = args.project_pairs
    projection = {
        "pairs": N,
        "normalize_s": round(N / big["normalize"]["pairs_per_s"]),
        "vocab_s": big["vocab"]["wall_s"],  # fixed-size sample
        "pairs_s": round(N * big["rows_out"] / int(hi) / big["pairs"]["pairs_per_s"]),
    }
    projection["data_stages_h"] = round((projection["normalize_s"] + projection["vocab_s"] + projection["pairs_s"]) / 3600, 2)
    out = {
        "machine": f"{os.cpu_count()} cpu",
        "sizes": results,
        "rss_growth": round(results[hi]["peak_rss_mb"] / results[lo]["peak_rss_mb"], 2),
        "pairs_ratio": int(hi) / int(lo),
        "projection": projection,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
