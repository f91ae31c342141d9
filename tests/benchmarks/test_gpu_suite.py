"""benchmarks/gpu_suite.sh cannot rot: its dry run (the same steps at toy sizes on CPU) prints one valid
JSON line per part, and every part that can run on CPU reports ok."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "gpu_suite.sh"
PARTS = ["cuda_tests", "pretrain_throughput", "predict_throughput", "time_to_quality"]


def suite(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)  # the suite's default --out; these runs name theirs
    return subprocess.run(["bash", str(SUITE), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def json_lines(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]  # every stdout line is one JSON object


@pytest.mark.slow  # ~1.5 min on 2 busy cores: three toy benchmarks and a pytest run
def test_dry_run_prints_one_json_line_per_part(tmp_path):
    out = tmp_path / "out"
    done = suite("--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    parts = json_lines(done.stdout)
    assert [p["part"] for p in parts] == PARTS
    assert all(set(p) == {"part", "status", "seconds", "figures"} for p in parts)
    assert (out / "parts.jsonl").read_text().splitlines() == done.stdout.splitlines()
    by_name = {p["part"]: p for p in parts}
    for name in PARTS[:3]:  # they run on CPU
        assert by_name[name]["status"] == "ok", (name, by_name[name]["status"], (out / f"{name}.log").read_text()[-3000:])

    tests = by_name["cuda_tests"]["figures"]
    assert tests["failed"] == 0 and tests["passed"] + tests["skipped"] >= 7
    if not torch.cuda.is_available():
        assert tests["passed"] == 0 and any("CUDA" in r for r in tests["skip_reasons"])  # the JSON says they skipped

    pretrain = by_name["pretrain_throughput"]["figures"]
    assert pretrain["eager"]["tokens_per_s"] > 0 and pretrain["eager"]["hf_tokens_per_s"] > 0
    assert pretrain["eager"]["ratio_vs_hf"] > 0 and pretrain["eager"]["precision"] == "bfloat16"
    assert "skipped" in pretrain["compiled"]

    predict = by_name["predict_throughput"]["figures"]
    assert predict["tweets_per_s"] > 0 and predict["hf_tweets_per_s"] > 0 and predict["tweets_per_s_bf16"] > 0

    race = by_name["time_to_quality"]
    assert race["status"] == "ok", (out / "time_to_quality.log").read_text()[-3000:]


def test_spent_budget_fails_each_part_alone(tmp_path):
    """The total time guard: a part with no time left reports so and the suite goes on to the next."""
    done = suite("--dry-run", "--budget", "0", "--parts", "cuda_tests,predict_throughput", "--out", str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = json_lines(done.stdout)
    assert [p["part"] for p in parts] == ["cuda_tests", "predict_throughput"]
    assert all(p["status"].startswith("failed: the suite's time budget") for p in parts)


def test_help_and_unknown_arguments():
    assert "--dry-run" in suite("--help", timeout=30).stdout
    bad = suite("--gpu", timeout=30)
    assert bad.returncode == 2 and "unknown argument --gpu" in bad.stderr
