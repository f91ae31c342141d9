"""Implementation knobs on CPU: bf16 autocast and torch.compile run and compute the same loss."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_pretrain_fixtures import build_inputs, cpu_impl, tiny_model, tiny_run, tiny_training
from twilbert.train.checkpoint import MODEL_FILE
from twilbert.train.pretrain import pretrain
from twilbert.train.runtime import autocast_dtype


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("impl"))


def run(inputs, out, max_steps=3, **impl):
    logged = []
    summary = pretrain(
        model_cfg=tiny_model(inputs["vocab_size"]),
        training=tiny_training(max_steps=max_steps),
        impl=cpu_impl(**impl),
        run=tiny_run(),
        shards_dir=inputs["shards"],
        tokenizer_path=inputs["tokenizer"],
        out_dir=out,
        log_fn=lambda m, s: logged.append(m),
        progress=False,
    )
    return summary, logged


@pytest.fixture(scope="module")
def fp32(inputs, tmp_path_factory):
    return run(inputs, tmp_path_factory.mktemp("fp32"))


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None  # CPU stays fp32 unless asked
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16


def test_bf16_autocast_on_cpu(inputs, fp32, tmp_path):
    summary, logged = run(inputs, tmp_path, precision="bf16")
    assert summary["precision"] == "bfloat16" and summary["steps"] == 3
    assert all(math.isfinite(m["loss"]) for m in logged)
    # the first step's loss (before any update) is the fp32 loss up to bf16 rounding
    assert logged[0]["loss"] == pytest.approx(fp32[1][0]["loss"], rel=2e-2)
    assert all(t.dtype == torch.float32 for t in load_file(tmp_path / "final" / MODEL_FILE).values())  # fp32 master weights


@pytest.mark.slow  # ~20-40 s of inductor compilation on 2 CPU cores (more when they are busy)
def test_compile_on_cpu(inputs, fp32, tmp_path):
    summary, logged = run(inputs, tmp_path, max_steps=1, compile=True)  # one step: one compilation
    assert summary["steps"] == 1
    assert logged[0]["loss"] == pytest.approx(fp32[1][0]["loss"], rel=1e-4)  # the same function, up to rounding
    assert logged[0]["grad_norm"] == pytest.approx(fp32[1][0]["grad_norm"], rel=1e-3)  # and the same gradients


def test_data_workers_change_nothing(inputs, fp32, tmp_path):
    summary, logged = run(inputs, tmp_path, num_workers=2)
    assert [m["loss"] for m in logged] == [m["loss"] for m in fp32[1]]
    a, b = load_file(tmp_path / "final" / MODEL_FILE), load_file(fp32[0]["final_dir"] + "/" + MODEL_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)
