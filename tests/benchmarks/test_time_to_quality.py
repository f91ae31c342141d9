"""benchmarks/time_to_quality.py: its pure parts (schedule, time ratio, held-out evaluator) and a dry run
of the whole race on the bundled sample, so the script cannot rot."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "time_to_quality.py"


def _load():
    spec = importlib.util.spec_from_file_location("time_to_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ttq = _load()


def test_time_ratio_interpolates_between_evaluation_points():
    curve = [(0.0, 6.0), (10.0, 5.0), (20.0, 4.0)]
    assert ttq.time_ratio(curve, 4.5, 20.0) == pytest.approx(0.75)  # halfway between 10 s and 20 s
    assert ttq.time_ratio(curve, 5.0, 20.0) == pytest.approx(0.5)
    assert ttq.time_ratio(curve, 7.0, 20.0) == 0.0  # already there at the start
    assert ttq.time_ratio(curve, 3.9, 20.0) is None  # never reached
    assert ttq.time_ratio(list(reversed(curve)), 4.5, 40.0) == pytest.approx(0.375)  # order of points does not matter


def test_time_ratio_takes_the_first_crossing():
    curve = [(0.0, 6.0), (10.0, 4.0), (20.0, 5.0), (30.0, 3.0)]
    assert ttq.time_ratio(curve, 4.0, 30.0) == pytest.approx(10.0 / 30.0)


def test_lr_is_a_function_of_the_budget_fraction():
    assert ttq.lr_at(0.0, 1e-3, 0.1) == 0.0
    assert ttq.lr_at(0.05, 1e-3, 0.1) == pytest.approx(5e-4)
    assert ttq.lr_at(0.1, 1e-3, 0.1) == pytest.approx(1e-3)
    assert ttq.lr_at(0.55, 1e-3, 0.1) == pytest.approx(5e-4)
    assert ttq.lr_at(1.0, 1e-3, 0.1) == 0.0
    assert ttq.lr_at(1.3, 1e-3, 0.1) == 0.0  # a step that starts past the budget never runs, but is clamped


def _encoded(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, vocab, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]


def test_heldout_masks_are_fixed_by_the_seed():
    enc = _encoded(70, 40)
    a = ttq.heldout_set(enc, max_len=12, vocab_size=40, seed=3, batch_size=16)
    b = ttq.heldout_set(enc, max_len=12, vocab_size=40, seed=3, batch_size=16)
    c = ttq.heldout_set(enc, max_len=12, vocab_size=40, seed=4, batch_size=16)
    assert a.n_texts == 70 and a.n_targets > 0
    assert all(torch.equal(x, y) for p, q in zip(a.batches, b.batches) for x, y in zip(p, q))
    assert any(not torch.equal(p[2], q[2]) for p, q in zip(a.batches, c.batches))
    ids, mask, labels = a.batches[-1]
    assert ids.shape[1] <= 12 + 2  # [CLS] text[:max_len] [SEP]
    assert not (labels[~mask] != -100).any()  # no target on padding
    assert (ids[:, 0] == 2).all()  # [CLS] never masked


def test_evaluator_on_uniform_logits_is_log_vocab():
    V = 40
    heldout = ttq.heldout_set(_encoded(30, V), max_len=10, vocab_size=V, seed=0, batch_size=8)
    m = ttq.evaluate(lambda ids, mask, targets: torch.zeros((int(targets.sum()), V)), heldout, torch.device("cpu"))
    assert m["mlm_loss"] == pytest.approx(math.log(V), rel=1e-6)
    assert m["mlm_accuracy"] == 0.0  # argmax is id 0 ([PAD]), never a target


def test_same_model_same_positions_same_loss_in_both_forms():
    """Our model and its transformers export, through the one evaluator: the same loss and accuracy."""
    pytest.importorskip("transformers")
    from twilbert.hf.export import to_hf_model
    from twilbert.model.config import ModelConfig
    from twilbert.model.twilbert import TWilBERT

    V = 60
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, max_positions=35, embedding_size=32, hidden_size=32, n_encoders=2, n_heads=2,
                      mlm_transform=True, tie_mlm_decoder=True)
    ours = TWilBERT(cfg).eval()
    theirs = to_hf_model(ours, with_mlm_head=True).eval()
    heldout = ttq.heldout_set(_encoded(40, V, seed=1), max_len=16, vocab_size=V, seed=0, batch_size=16)
    cpu = torch.device("cpu")
    a = ttq.evaluate(ttq.ours_logits(ours), heldout, cpu)
    b = ttq.evaluate(ttq.hf_logits(theirs), heldout, cpu)
    assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], abs=1e-4)
    assert a["mlm_accuracy"] == pytest.approx(b["mlm_accuracy"])
    assert ttq.evaluate(ttq.ours_logits(ours), heldout, cpu) == a  # deterministic


def test_dry_run_writes_curve_plot_and_result(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("matplotlib")
    downstream = (REPO / "benchmarks" / "race_downstream.py").is_file()
    tasks = "sentiment" if downstream else ""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--workdir", str(tmp_path), "--tasks", tasks],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("ours_heldout_mlm_loss", "hf_heldout_mlm_loss", "time_ratio_to_hf_final_loss", "ours_steps", "hf_steps",
                "ours_tokens_per_s", "hf_tokens_per_s", "hf_imported_heldout_mlm_loss"):
        assert key in result, key
    for key in ("ours_heldout_mlm_loss", "hf_heldout_mlm_loss", "ours_tokens_per_s", "hf_tokens_per_s"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["ours_steps"] > 0 and result["hf_steps"] > 0
    # HF's model reaches the downstream runs through the importer unchanged
    assert result["hf_imported_heldout_mlm_loss"] == pytest.approx(result["hf_heldout_mlm_loss"], abs=1e-4)
    out = tmp_path / "race"
    curve = json.loads((out / "curve.json").read_text())
    assert {r["system"] for r in curve} == {"ours", "hf"}
    assert all(math.isfinite(r["heldout_mlm_loss"]) for r in curve)
    assert (out / "heldout_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "ours_run" / "final" / "model.safetensors").is_file()
    assert (out / "hf_model" / "model.safetensors").is_file()
    if downstream:
        assert {f"f1_sentiment_{s}" for s in ("ours", "hf", "random", "baseline")} <= result.keys()
        # a failed downstream loses no race: result.json holds the race part, and --downstream-only
        # fine-tunes the same checkpoints again (deterministic: the same F1s)
        resumed = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--downstream-only", "--workdir", str(tmp_path),
                                  "--tasks", tasks], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        again = json.loads(resumed.stdout.strip().splitlines()[-1])
        assert again["ours_heldout_mlm_loss"] == result["ours_heldout_mlm_loss"]
        for s in ("ours", "hf", "random", "baseline"):
            assert again[f"f1_sentiment_{s}"] == result[f"f1_sentiment_{s}"], s


def test_downstream_only_needs_a_race(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--downstream-only", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert proc.returncode != 0 and "run the race first" in proc.stderr
