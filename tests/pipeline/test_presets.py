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


def test_write_keeps_explicit_nulls(tmp_path):
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    nulls = [ln.split("#")[0].rstrip() for ln in params.read_text().splitlines() if ln.split("#")[0].rstrip().endswith(": null")]
    preset_leaves = {k.rsplit(".", 1)[-1] for k in preset_overrides("twilbert-base")}
    nulls = [n for n in nulls if n.strip().split(":")[0] not in preset_leaves]  # (attention_size gets a value)
    assert nulls  # params.yaml has some (path_initial_weights, resume_from, ...)
    write_preset("twilbert-base", params)
    written = [ln.split("#")[0].rstrip() for ln in params.read_text().splitlines()]
    assert all(n in written for n in nulls)  # not turned into empty values


def test_write_refuses_a_result_that_does_not_validate_and_leaves_params_untouched(tmp_path):
    """A task override too long for the preset's 2 * 40 + 3 positions: nothing is written, and the CLI
    says why in one line naming params.yaml and the key."""
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    assert "    aux_header: TARGET\n" in text
    text = text.replace("    aux_header: TARGET\n", "    aux_header: TARGET\n    finetuning: {max_len: 48}\n", 1)
    params.write_text(text)
    assert load_params(params).tasks["stance"].finetuning == {"max_len": 48}  # valid as it is (64-token segments)
    bin_ = Path(sys.executable).parent / "twilbert"
    res = subprocess.run([str(bin_), "preset", "twilbert-base", "--write", "--params", str(params)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert f"{params}: preset twilbert-base not written: tasks.stance.finetuning.max_len: 48 tokens" in res.stderr
    assert params.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "params.yaml"]  # no temporary file left


def test_write_on_an_old_layout_params_file_moves_the_preset_keys(tmp_path):
    """A params.yaml from before the `run` section (training.checkpoint_every) takes the preset: the
    preset's run.checkpoint_every replaces the old place instead of clashing with it."""
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    params.write_text(text.replace("training:\n", "training:\n  checkpoint_every: 7\n", 1))
    write_preset("twilbert-base", params)
    p = load_params(params)
    assert p.run.checkpoint_every == preset_overrides("twilbert-base")["run.checkpoint_every"]
    assert "checkpoint_every: 7" not in params.read_text()
