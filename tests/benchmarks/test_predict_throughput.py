"""benchmarks/predict_throughput.py's paired bootstrap of a macro-F1 gap (the quality side of the
int8 comparison): it brackets sklearn's difference, is empty for identical labels and excludes zero
for a clearly worse system."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from benchmarks.predict_throughput import macro_f1_diff_ci

LABELS = ["N", "NEU", "P"]


def test_interval_brackets_the_difference_and_separates_a_worse_system():
    rng = np.random.default_rng(1)
    gold = rng.choice(LABELS, 600)
    good = np.where(rng.random(600) < 0.8, gold, rng.choice(LABELS, 600))
    bad = np.where(rng.random(600) < 0.4, gold, rng.choice(LABELS, 600))
    diff = f1_score(gold, good, labels=LABELS, average="macro") - f1_score(gold, bad, labels=LABELS, average="macro")
    lo, hi = macro_f1_diff_ci(gold, good, bad, LABELS, resamples=500)
    assert 0 < lo < diff < hi
    assert macro_f1_diff_ci(gold, good, good, LABELS, resamples=50) == (0.0, 0.0)


def test_resample_macro_f1_matches_sklearn_including_an_absent_class():
    gold = np.array(["N", "N", "P", "P", "P"])
    a = np.array(["N", "P", "P", "P", "N"])
    b = np.array(["N", "N", "P", "N", "NEU"])
    lo, hi = macro_f1_diff_ci(gold, a, b, LABELS, resamples=20000, seed=3)
    # one resample can be the sample itself: the sklearn difference lies within the interval
    want = f1_score(gold, a, labels=LABELS, average="macro", zero_division=0) - f1_score(gold, b, labels=LABELS, average="macro", zero_division=0)
    assert lo <= want <= hi
    assert lo < 0 < hi  # five tweets decide nothing
    with pytest.raises(ValueError):
        macro_f1_diff_ci(gold, a[:4], b, LABELS)


def test_toy_run_prints_every_cpu_system_and_the_int8_comparison(tmp_path):
    """The whole benchmark at toy size on the bundled sample, int8 and ONNX Runtime included (the GPU
    suite's dry run leaves those CPU paths out)."""
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    data = tmp_path / "data"
    (data / "tass2020_sentiment_es").mkdir(parents=True)
    for f in (root / "data/sample/tasks/sentiment").glob("*.tsv"):
        shutil.copy(f, data / "tass2020_sentiment_es" / f.name)
    (data / "twilbert_reply_pairs_es").mkdir()
    shutil.copy(root / "data/sample/pairs.tsv", data / "twilbert_reply_pairs_es/pairs.tsv")
    out = subprocess.run(
        [sys.executable, "benchmarks/predict_throughput.py", "--data-dir", str(data), "--workdir", str(tmp_path / "work"),
         "--preset", "small", "--vocab-size", "400", "--train-tweets", "64", "--max-len", "32", "--tweets", "16",
         "--quality-tweets", "32", "--repeats", "1", "--hf-batch-sizes", "8", "--threads", "1", "--no-bf16"],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["macro_f1"]) >= {"ours", "ours_int8", "ort_fp32", "ort_int8", "ort_int8_parallel", "hf_bs8"}
    assert result["best_ours_precision"] in ("fp32", "int8")
    assert result["ratio_vs_ort_int8"] > 0 and result["ort_int8_tweets_per_s"] > 0
    lo, hi = result["macro_f1_best_ours_minus_ort_int8_ci95"]
    assert lo <= hi and 0 <= result["tweets_labelled_differently_best_ours_vs_ort_int8"] <= 32
    assert result["label_agreement_vs_fp32"]["ort_fp32"] >= 0.9  # the exported fp32 model labels as ours (ties aside)
    assert "best of ours" in out.stderr and "95 % CI" in out.stderr
