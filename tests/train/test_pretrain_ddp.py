"""DDP: the same params (accum_iters 2, a global count) train the same model on 2 processes (torchrun,
gloo, CPU; one micro-batch each per update) as on 1 (two micro-batches per update): same global batches.

Run as a module (``python -m tests.train.test_pretrain_ddp ARGS_JSON``) it is the worker torchrun starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_pretrain_fixtures import build_inputs, cpu_impl, tiny_model, tiny_run, tiny_training
from twilbert.train import distributed as D
from twilbert.train.checkpoint import MODEL_FILE
from twilbert.train.pretrain import pretrain

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


def train(args: dict) -> dict:
    return pretrain(
        model_cfg=tiny_model(args["vocab_size"]),
        training=tiny_training(batch_size=4, accum_iters=args["accum"], max_steps=STEPS),
        impl=cpu_impl(),
        run=tiny_run(log_every=STEPS),
        shards_dir=Path(args["shards"]),
        tokenizer_path=Path(args["tokenizer"]),
        out_dir=Path(args["out"]),
        progress=False,
    )


def test_torchrun_command():
    assert D.torchrun_command(4, ["train.py", "--x"]) == [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone", "train.py", "--x",
    ]
    multi = D.torchrun_command(8, ["-m", "stages.pretrain"], nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29400)
    assert multi[3:8] == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29400"]
    with pytest.raises(ValueError):
        D.torchrun_command(2, ["x.py"], nnodes=2, node_rank=2)


def test_two_processes_equal_one_process_with_accumulation(tmp_path):
    inputs = build_inputs(tmp_path / "inputs")
    common = {"vocab_size": inputs["vocab_size"], "shards": str(inputs["shards"]), "tokenizer": str(inputs["tokenizer"])}
    single = train({**common, "accum": 2, "out": str(tmp_path / "single")})

    args = json.dumps({**common, "accum": 2, "out": str(tmp_path / "ddp")})
    cmd = D.torchrun_command(2, ["-m", "tests.train.test_pretrain_ddp", args])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["steps"] == single["steps"] == STEPS
    assert ddp["sequences"] == single["sequences"] and ddp["tokens_real"] == single["tokens_real"]  # the same rows
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert ddp["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-5)  # gradients summed, not halved
    a, b = load_file(tmp_path / "single" / "final" / MODEL_FILE), load_file(tmp_path / "ddp" / "final" / MODEL_FILE)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


if __name__ == "__main__":  # a torchrun worker
    train(json.loads(sys.argv[1]))
