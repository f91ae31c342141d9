"""The TWilBERT-Base/-Large presets are one command away and produce valid params."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.params import load_params
from pipeline.presets import dvc_set_args, preset_overrides, write_preset

REPO = Path(__file__).resolve().parents[2]


def test_write_preset_keeps_params_valid_and_sets_the_original_recipe(tmp_path):
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    write_preset("twilbert-large", params)
    p = load_params(params)
    assert (p.model.n_encoders, p.model.n_heads, p.model.hidden_size, p.model.attention_size) == (12, 12, 768, 64)
    assert (p.training.batch_size, p.training.accum_iters, p.training.warmup_steps) == (64, 32, 10000)
    assert p.training.schedule == "noam" and p.vocab.vocab_size == 30000
    # Fine-tuning segments fit the preset's 2 * 40 + 3 positions, the text-pair task's included.
    assert p.representation.max_len == p.finetuning.max_len == 40 and any(t.aux_header for t in p.tasks.values())
    assert "# TWilBERT pipeline parameters" in params.read_text()  # comments survive
    assert p.data == load_params(REPO / "params.yaml").data  # untouched sections stay


def test_dvc_args_are_shell_safe_and_cover_every_override():
    args = dvc_set_args("twilbert-base")
    pairs = args[1::2]
    assert args[::2] == ["-S"] * len(pairs) and len(pairs) == len(preset_overrides("twilbert-base"))
    assert all(" " not in a for a in pairs)
    assert "model.n_encoders=6" in pairs and "training.betas=[0.9,0.98]" in pairs


def test_cli_prints_args_and_rejects_unknown_names():
    bin_ = Path(sys.executable).parent / "twilbert"
    ok = subprocess.run([str(bin_), "preset", "twilbert-base"], capture_output=True, text=True)
    assert ok.returncode == 0 and "-S model.n_heads=6" in ok.stdout
    bad = subprocess.run([str(bin_), "preset", "bert-huge"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown preset 'bert-huge'" in bad.stderr
